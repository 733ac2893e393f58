"""GET /.well-known/matrix/support (C-S API "Server Discovery" → "Getting the support
information"): served from the config, 404 when nothing is configured, bad values refused when
the config is loaded."""

from __future__ import annotations

import pytest

from bastion.config import Config, ConfigError, load_config
from bastion.core.support import check_support, support_answer
from tests.support.harness import Client, ServerThread

PATH = "/.well-known/matrix/support"
CONTACTS = (
    {"role": "m.role.admin", "matrix_id": "@admin:example.org", "email_address": "a@example.org"},
    {"role": "m.role.security", "email_address": "security@example.org"},
    {"role": "org.example.billing", "matrix_id": "@billing:other.example"},
)


def _get(tmp_path, **settings):
    srv = ServerThread(tmp_path / "data", **settings).start()
    try:
        return Client(srv.base_url).request("GET", PATH, token=None)
    finally:
        srv.stop()


def test_configured(tmp_path):
    r = _get(tmp_path, support_contacts=CONTACTS, support_page="https://example.org/help")
    assert r.status == 200
    assert r.body == {"contacts": list(CONTACTS), "support_page": "https://example.org/help"}
    assert r.headers.get("Access-Control-Allow-Origin") == "*"  # browsers may read it


def test_only_a_page_or_only_contacts(tmp_path):
    r = _get(tmp_path / "a", support_page="https://example.org/help")
    assert (r.status, r.body) == (200, {"support_page": "https://example.org/help"})
    r = _get(tmp_path / "b", support_contacts=CONTACTS[1:2])
    assert (r.status, r.body) == (200, {"contacts": [dict(CONTACTS[1])]})


def test_not_configured_is_404(server):
    r = Client(server.base_url).request("GET", PATH, token=None)
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")
    r = Client(server.base_url).request("POST", PATH, {}, token=None)
    assert (r.status, r.body["errcode"]) == (405, "M_UNRECOGNIZED")


BAD = [
    {"support_contacts": ({"role": "m.role.admin"},)},  # neither matrix_id nor email
    {"support_contacts": ({"matrix_id": "@a:example.org"},)},  # no role
    {"support_contacts": ({"role": "m.role.boss", "matrix_id": "@a:example.org"},)},  # m. reserved
    {"support_contacts": ({"role": "Admin", "matrix_id": "@a:example.org"},)},  # not namespaced
    {"support_contacts": ({"role": 5, "matrix_id": "@a:example.org"},)},
    {"support_contacts": ({"role": "m.role.admin", "matrix_id": "admin"},)},
    {"support_contacts": ({"role": "m.role.admin", "matrix_id": 7},)},
    {"support_contacts": ({"role": "m.role.admin", "email_address": "not an email"},)},
    {"support_contacts": ({"role": "m.role.admin", "email_address": "a@b@c.org"},)},
    {"support_contacts": ({"role": "m.role.admin", "email_address": "a@" + "x" * 300 + ".org"},)},
    {"support_contacts": ({"role": "m.role.admin", "email_address": "a@b.org", "phone": "1"},)},
    {"support_contacts": ("@admin:example.org",)},
    {"support_contacts": "@admin:example.org"},
    {"support_page": "javascript:alert(1)"},
    {"support_page": "https://user:pw@example.org/"},
    {"support_page": "https://exa mple.org/"},
    {"support_page": "/relative"},
]


@pytest.mark.parametrize("overrides", BAD)
def test_bad_config_refused(overrides):
    with pytest.raises(ConfigError):
        Config(**overrides).validate()


def test_good_config_accepted_and_loaded_from_toml(tmp_path):
    path = tmp_path / "bastion.toml"
    path.write_text(
        'server_name = "example.org"\n'
        'support_page = "https://example.org/help?lang=en"\n'
        'support_contacts = [{role = "m.role.admin", matrix_id = "@admin:other.example"},\n'
        '                    {role = "m.role.security", email_address = "sec@example.org"}]\n',
        encoding="utf-8",
    )
    config = load_config(path).validate()
    assert support_answer(config.support_contacts, config.support_page) == {
        "contacts": [
            {"matrix_id": "@admin:other.example", "role": "m.role.admin"},
            {"email_address": "sec@example.org", "role": "m.role.security"},
        ],
        "support_page": "https://example.org/help?lang=en",
    }
    path.write_text('support_contacts = [{role = "m.role.admin"}]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="matrix_id or an email_address"):
        load_config(path).validate()


def test_nothing_configured_means_no_answer():
    assert support_answer((), "") is None
    assert check_support((), "") == []
    assert Config().validate().support_contacts == ()
