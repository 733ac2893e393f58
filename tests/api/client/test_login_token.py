"""Login tokens (C-S API "POST /login/get_token", spec v1.7, and the ``m.login.token`` login
type): off by default (capability, login flows and endpoint agree); when on, each token needs the
password again, serves one login, expires, is rate-limited and goes with logout/all and
deactivation; hostile bodies."""

from __future__ import annotations

import pytest

from tests.support.accounts import PASSWORD, password_auth
from tests.support.harness import Client, ServerThread

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"
LIFETIME_MS = 120_000


@pytest.fixture
def srv(tmp_path):
    s = ServerThread(tmp_path / "data", login_token_enabled=True).start()
    yield s
    s.stop()


def set_clock(srv: ServerThread, now_ms: int) -> None:
    assert srv.hs is not None
    srv.hs.now_ms = lambda: now_ms  # type: ignore[method-assign]
    srv.hs.accounts.now_ms = lambda: now_ms


def get_token(c: Client, password: str = PASSWORD):
    r = c.request("POST", f"{V1}/login/get_token", {})
    assert r.status == 401 and r.body["flows"] == [{"stages": ["m.login.password"]}], r.body
    return c.request(
        "POST", f"{V1}/login/get_token",
        {"auth": password_auth(c.user_id, r.body["session"], password)},
    )  # fmt: skip


def token_login(srv: ServerThread, token: object, **extra):
    return Client(srv.base_url).request(
        "POST", f"{V3}/login", {"type": "m.login.token", "token": token, **extra}
    )


def test_off_by_default(client):
    alice = client.register(password=PASSWORD)
    caps = alice.request("GET", f"{V3}/capabilities").body["capabilities"]
    assert caps["m.get_login_token"] == {"enabled": False}
    assert client.request("GET", f"{V3}/login").body == {"flows": [{"type": "m.login.password"}]}
    r = alice.request("POST", f"{V1}/login/get_token", {})
    assert (r.status, r.body["errcode"]) == (400, "M_FORBIDDEN")
    r = client.request("POST", f"{V3}/login", {"type": "m.login.token", "token": "bsl_x"})
    assert (r.status, r.body["errcode"]) == (400, "M_UNKNOWN")


def test_a_token_signs_in_another_device_once(srv):
    c = Client(srv.base_url)
    alice = c.register(password=PASSWORD)
    caps = alice.request("GET", f"{V3}/capabilities").body["capabilities"]
    assert caps["m.get_login_token"] == {"enabled": True}
    flows = c.request("GET", f"{V3}/login").body["flows"]
    assert {"type": "m.login.token", "get_login_token": True} in flows
    r = get_token(alice)
    assert r.status == 200, r.body
    assert set(r.body) == {"login_token", "expires_in_ms"}
    assert r.body["expires_in_ms"] == LIFETIME_MS
    token = r.body["login_token"]
    assert token.startswith("bsl_") and len(token) >= 40
    new = token_login(srv, token, initial_device_display_name="tablet", refresh_token=True)
    assert new.status == 200, new.body
    assert new.body["user_id"] == alice.user_id and new.body["device_id"] != alice.device_id
    assert "refresh_token" in new.body
    who = Client(srv.base_url, new.body["access_token"]).request("GET", f"{V3}/account/whoami")
    assert who.body["user_id"] == alice.user_id
    # Single use.
    r = token_login(srv, token)
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")


def test_the_password_is_asked_every_time_and_tokens_are_rate_limited(srv):
    alice = Client(srv.base_url).register(password=PASSWORD)
    start = srv.hs.now_ms()
    set_clock(srv, start)
    r = get_token(alice, "wrong password")
    assert (r.status, r.body["errcode"]) == (401, "M_FORBIDDEN")
    first = alice.request("POST", f"{V1}/login/get_token", {})
    session = first.body["session"]
    auth = password_auth(alice.user_id, session)
    r = alice.request("POST", f"{V1}/login/get_token", {"auth": auth})
    assert r.status == 200, r.body
    # The session served its token: it cannot mint another.
    r = alice.request("POST", f"{V1}/login/get_token", {"auth": {"session": session}})
    assert r.status != 200 and "login_token" not in r.body
    # One a minute.
    r = get_token(alice)
    assert (r.status, r.body["errcode"]) == (429, "M_LIMIT_EXCEEDED"), r.body
    set_clock(srv, start + 61_000)
    r = get_token(alice)
    assert r.status == 200, r.body
    # Expired tokens are refused.
    set_clock(srv, start + 61_000 + LIFETIME_MS)
    r = token_login(srv, r.body["login_token"])
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")


def test_logout_all_and_deactivation_remove_login_tokens(srv):
    c = Client(srv.base_url)
    alice = c.register(password=PASSWORD)
    start = srv.hs.now_ms()
    set_clock(srv, start)
    token = get_token(alice).body["login_token"]
    assert alice.request("POST", f"{V3}/logout/all", {}).status == 200
    r = token_login(srv, token)
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")

    bob = c.register(password=PASSWORD)
    token = get_token(bob).body["login_token"]
    r = bob.request("POST", f"{V3}/account/deactivate", {})
    r = bob.request(
        "POST", f"{V3}/account/deactivate",
        {"auth": password_auth(bob.user_id, r.body["session"])},
    )  # fmt: skip
    assert r.status == 200, r.body
    r = token_login(srv, token)
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")


def test_hostile_bodies(srv):
    for token, status, errcode in [
        (None, 400, "M_MISSING_PARAM"),
        (5, 400, "M_BAD_JSON"),
        ({"t": 1}, 400, "M_BAD_JSON"),
        ("", 403, "M_FORBIDDEN"),
        ("bsl_" + "A" * 100_000, 403, "M_FORBIDDEN"),
        ("bsl_\u0000", 403, "M_FORBIDDEN"),
    ]:
        r = token_login(srv, token)
        assert (r.status, r.body.get("errcode")) == (status, errcode), (token, r.body)
    alice = Client(srv.base_url).register(password=PASSWORD)
    # An access token is not a login token.
    r = token_login(srv, alice.access_token)
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")
    r = token_login(srv, "bsl_x", device_id=["D"])
    assert (r.status, r.body["errcode"]) == (400, "M_BAD_JSON")
    for body in ([], {"auth": "x"}, {"auth": {"type": 5}}):
        r = alice.request("POST", f"{V1}/login/get_token", body)
        assert r.status == 400, (body, r.body)
    r = alice.request("POST", f"{V1}/login/get_token", raw=b"{")
    assert (r.status, r.body["errcode"]) == (400, "M_NOT_JSON")
    assert alice.request("GET", f"{V3}/account/whoami").status == 200
