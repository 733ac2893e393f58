"""Federation settings: command-line flags, config keys and their validation."""

import pytest

from bastion.cli import build_parser, resolve_config
from bastion.config import Config, ConfigError, load_config


def test_flags_override_config(tmp_path):
    (tmp_path / "bastion.toml").write_text(
        'server_name = "example.org"\nfederation_allow_ips = ["10.0.0.0/8"]\n'
        'federation_trusted_key_servers = ["notary.example.net"]\n'
    )
    args = build_parser().parse_args([
        "serve", "--data-dir", str(tmp_path), "--federation-listen", "0.0.0.0:8448",
        "--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--federation-ca", "/ca.pem",
        "--federation-allow-ip", "127.0.0.0/8", "--federation-allow-ip", "::1/128",
        "--tls-self-signed",
    ])  # fmt: skip
    c = resolve_config(args)
    assert c.federation_address == ("0.0.0.0", 8448)
    assert (c.tls_certificate_path, c.tls_private_key_path, c.federation_ca_file) == (
        "/c.pem", "/k.pem", "/ca.pem",
    )  # fmt: skip
    assert c.federation_allow_ips == ("10.0.0.0/8", "127.0.0.0/8", "::1/128")
    assert c.federation_trusted_key_servers == ("notary.example.net",)
    assert c.tls_self_signed is True


def test_federation_off_by_default(tmp_path):
    c = resolve_config(build_parser().parse_args(["serve", "--data-dir", str(tmp_path)]))
    assert c.federation_address is None
    assert c.tls_certificate_file == tmp_path / "federation.crt"


@pytest.mark.parametrize(
    "overrides",
    [
        {"federation_listen": "nope"},
        {"federation_listen": "127.0.0.1:99999"},
        {"federation_allow_ips": ("300.1.0.0/8",)},
        {"federation_allow_ips": "127.0.0.0/8"},
        {"federation_trusted_key_servers": ("bad name",)},
        {"federation_well_known_server": "https://x"},
        {"federation_banned_signing_keys": ("short",)},
        {"tls_self_signed": "yes"},
    ],
)
def test_bad_values(overrides):
    with pytest.raises(ConfigError):
        Config(**overrides).validate()


def test_unknown_key_still_refused(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("federation_listn = '1:2'\n")
    with pytest.raises(ConfigError):
        load_config(p)
