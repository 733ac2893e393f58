"""Refresh tokens (C-S API "Client Authentication" > "Refreshing access tokens"): issued by
/login and /register when asked for, expiring access tokens answered with ``soft_logout``,
rotation by POST /refresh (the old access token revoked at once, the old refresh token once the
new pair is used), revocation with the device, and hostile bodies."""

from __future__ import annotations

import pytest

from tests.support.accounts import PASSWORD, db_rows, make_user, run_on_server
from tests.support.harness import Client, ServerThread

V3 = "/_matrix/client/v3"
LIFETIME_MS = 60_000


@pytest.fixture
def srv(tmp_path):
    s = ServerThread(tmp_path / "data", access_token_lifetime_ms=LIFETIME_MS).start()
    yield s
    s.stop()


def set_clock(srv: ServerThread, now_ms: int) -> None:
    """The server's clock, for the shell's two readers (authentication and the accounts)."""
    assert srv.hs is not None
    srv.hs.now_ms = lambda: now_ms  # type: ignore[method-assign]
    srv.hs.accounts.now_ms = lambda: now_ms


def login_body(user_id: str, **extra) -> dict:
    return {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id},
            "password": PASSWORD, **extra}  # fmt: skip


def new_user(srv: ServerThread) -> str:
    """A user with a password (registered through the API), its ID."""
    return Client(srv.base_url).register(password=PASSWORD).user_id


def login(srv: ServerThread, user_id: str, **extra):
    r = Client(srv.base_url).request("POST", f"{V3}/login", login_body(user_id, **extra))
    assert r.status == 200, r.body
    return r.body


def refresh(srv: ServerThread, token: object):
    return Client(srv.base_url).request("POST", f"{V3}/refresh", {"refresh_token": token})


def whoami(srv: ServerThread, token: str):
    return Client(srv.base_url, token).request("GET", f"{V3}/account/whoami")


def assert_soft_logout(r, soft: bool = True) -> None:
    assert (r.status, r.body["errcode"], r.body.get("soft_logout")) == (
        401, "M_UNKNOWN_TOKEN", soft
    ), r.body  # fmt: skip


def test_login_and_register_issue_refresh_tokens_only_when_asked(srv):
    user = new_user(srv)
    plain = login(srv, user)
    assert "refresh_token" not in plain and "expires_in_ms" not in plain
    body = login(srv, user, refresh_token=True)
    assert body["expires_in_ms"] == LIFETIME_MS
    assert body["refresh_token"].startswith("bsr_") and len(body["refresh_token"]) >= 40
    assert body["refresh_token"] != body["access_token"]
    assert login(srv, user, refresh_token=False).keys() == plain.keys()
    assert whoami(srv, body["access_token"]).body["user_id"] == user
    # Stored hashed: neither token is in the table; the plain login's token never expires.
    rows = db_rows(srv, "SELECT token_hash, access_hash, device_id FROM refresh_tokens")
    assert [r["device_id"] for r in rows] == [body["device_id"]]
    assert body["refresh_token"].encode() not in bytes(rows[0]["token_hash"])
    expiries = {
        r["device_id"]: r["expires_ts"]
        for r in db_rows(srv, "SELECT device_id, expires_ts FROM access_tokens")
    }
    assert expiries[plain["device_id"]] is None and expiries[body["device_id"]] is not None

    c = Client(srv.base_url)
    r = c.request("POST", f"{V3}/register", {"username": "reggie", "password": PASSWORD,
                  "auth": {"type": "m.login.dummy"}, "refresh_token": True})  # fmt: skip
    assert r.status == 200, r.body
    assert r.body["expires_in_ms"] == LIFETIME_MS and r.body["refresh_token"].startswith("bsr_")
    assert refresh(srv, r.body["refresh_token"]).status == 200
    r = c.request("POST", f"{V3}/register", {"username": "quiet", "password": PASSWORD,
                  "auth": {"type": "m.login.dummy"}, "refresh_token": True,
                  "inhibit_login": True})  # fmt: skip
    assert r.status == 200 and set(r.body) == {"user_id"}, r.body


def test_an_expired_access_token_is_a_soft_logout_and_refresh_brings_it_back(srv):
    user = new_user(srv)
    start = srv.hs.now_ms()
    set_clock(srv, start)
    plain = login(srv, user)
    body = login(srv, user, refresh_token=True)
    assert whoami(srv, body["access_token"]).status == 200  # its requester is now remembered
    set_clock(srv, start + LIFETIME_MS - 1)
    assert whoami(srv, body["access_token"]).status == 200
    set_clock(srv, start + LIFETIME_MS)
    assert_soft_logout(whoami(srv, body["access_token"]))
    assert whoami(srv, plain["access_token"]).status == 200  # never expires
    # A revoked or unknown token is a hard logout.
    assert_soft_logout(whoami(srv, "bst_unknown"), soft=False)
    r = refresh(srv, body["refresh_token"])
    assert r.status == 200, r.body
    assert set(r.body) == {"access_token", "refresh_token", "expires_in_ms"}
    assert r.body["expires_in_ms"] == LIFETIME_MS
    got = whoami(srv, r.body["access_token"]).body
    assert (got["user_id"], got["device_id"]) == (user, body["device_id"])  # same device
    set_clock(srv, start + 2 * LIFETIME_MS)
    assert_soft_logout(whoami(srv, r.body["access_token"]))


def test_rotation_and_reuse_of_an_old_refresh_token(srv):
    user = new_user(srv)
    first = login(srv, user, refresh_token=True)
    assert whoami(srv, first["access_token"]).status == 200
    second = refresh(srv, first["refresh_token"]).body
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    # The old access token is refused at once, though its requester was remembered.
    assert_soft_logout(whoami(srv, first["access_token"]), soft=False)
    # The answer was lost: the old refresh token still works, and revokes the lost pair.
    third = refresh(srv, first["refresh_token"]).body
    assert "access_token" in third, third
    assert_soft_logout(whoami(srv, second["access_token"]), soft=False)
    assert_soft_logout(refresh(srv, second["refresh_token"]))
    # The new access token's first use retires the old refresh token.
    assert whoami(srv, third["access_token"]).status == 200
    assert_soft_logout(refresh(srv, first["refresh_token"]))
    assert whoami(srv, third["access_token"]).status == 200
    # Using the new refresh token (without the access token) retires its predecessor too.
    fourth = refresh(srv, third["refresh_token"]).body
    fifth = refresh(srv, fourth["refresh_token"]).body
    assert_soft_logout(refresh(srv, third["refresh_token"]))
    assert whoami(srv, fifth["access_token"]).status == 200
    assert_soft_logout(refresh(srv, fourth["refresh_token"]))
    # One live refresh token per login chain.
    assert len(db_rows(srv, "SELECT 1 FROM refresh_tokens")) == 1


def test_logout_device_deletion_and_deactivation_revoke_refresh_tokens(srv):
    user = new_user(srv)
    a = login(srv, user, refresh_token=True)
    r = Client(srv.base_url, a["access_token"]).request("POST", f"{V3}/logout", {})
    assert r.status == 200
    assert_soft_logout(refresh(srv, a["refresh_token"]))

    b = login(srv, user, refresh_token=True)
    c = login(srv, user, refresh_token=True)
    r = Client(srv.base_url, b["access_token"]).request("POST", f"{V3}/logout/all", {})
    assert r.status == 200
    assert_soft_logout(refresh(srv, b["refresh_token"]))
    assert_soft_logout(refresh(srv, c["refresh_token"]))

    # Logging in again with the same device ID replaces the device's tokens.
    d = login(srv, user, refresh_token=True, device_id="SAMEDEVICE")
    login(srv, user, device_id="SAMEDEVICE")
    assert_soft_logout(refresh(srv, d["refresh_token"]))

    e = login(srv, user, refresh_token=True)
    keeper = login(srv, user)
    owner = Client(srv.base_url, keeper["access_token"])
    r = owner.request("DELETE", f"{V3}/devices/{e['device_id']}", {})
    assert r.status == 401 and "session" in r.body
    r = owner.request("DELETE", f"{V3}/devices/{e['device_id']}", {"auth": {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
        "password": PASSWORD, "session": r.body["session"]}})  # fmt: skip
    assert r.status == 200, r.body
    assert_soft_logout(refresh(srv, e["refresh_token"]))

    f = login(srv, user, refresh_token=True)
    r = owner.request("POST", f"{V3}/account/deactivate", {})
    r = owner.request("POST", f"{V3}/account/deactivate", {"auth": {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
        "password": PASSWORD, "session": r.body["session"]}})  # fmt: skip
    assert r.status == 200, r.body
    assert_soft_logout(refresh(srv, f["refresh_token"]))
    assert db_rows(srv, "SELECT 1 FROM refresh_tokens WHERE user_id = ?", (user,)) == []


def test_a_locked_account_cannot_refresh(srv):
    user = new_user(srv)
    body = login(srv, user, refresh_token=True)

    async def lock():
        hs = srv.hs
        await hs.store.transaction(lambda conn: hs.store.set_user_flag_in(conn, user, "locked", 1))

    run_on_server(srv, lock())
    r = refresh(srv, body["refresh_token"])
    assert (r.status, r.body["errcode"], r.body["soft_logout"]) == (401, "M_USER_LOCKED", True)


def test_hostile_bodies(srv):
    c = Client(srv.base_url)
    for payload, status, errcode in [
        ({}, 400, "M_MISSING_PARAM"),
        ({"refresh_token": None}, 400, "M_MISSING_PARAM"),
        ({"refresh_token": 5}, 400, "M_BAD_JSON"),
        ({"refresh_token": ["bsr_x"]}, 400, "M_BAD_JSON"),
        ({"refresh_token": True}, 400, "M_BAD_JSON"),
        ([], 400, "M_BAD_JSON"),
        ({"refresh_token": ""}, 401, "M_UNKNOWN_TOKEN"),
        ({"refresh_token": "bsr_" + "A" * 100_000}, 401, "M_UNKNOWN_TOKEN"),
        ({"refresh_token": "bsr_\u0000\u00e9"}, 401, "M_UNKNOWN_TOKEN"),
        ({"refresh_token": "bsr_\ud800"}, 400, "M_NOT_JSON"),  # a lone surrogate
    ]:
        r = c.request("POST", f"{V3}/refresh", payload)
        assert (r.status, r.body.get("errcode")) == (status, errcode), (payload, r.body)
    r = c.request("POST", f"{V3}/refresh", raw=b"{not json")
    assert r.status == 400 and r.body["errcode"] == "M_NOT_JSON"
    # An access token is not a refresh token, nor the other way round.
    user = make_user(srv)
    assert_soft_logout(refresh(srv, user.access_token))
    body = login(srv, new_user(srv), refresh_token=True)
    assert_soft_logout(whoami(srv, body["refresh_token"]), soft=False)
    # refresh_token in /login and /register must be a boolean.
    r = c.request("POST", f"{V3}/login", login_body("@x:localhost", refresh_token="yes"))
    assert (r.status, r.body["errcode"]) == (400, "M_BAD_JSON")
    r = c.request("POST", f"{V3}/register", {"username": "z", "password": PASSWORD,
                  "auth": {"type": "m.login.dummy"}, "refresh_token": 1})  # fmt: skip
    assert (r.status, r.body["errcode"]) == (400, "M_BAD_JSON")
    assert whoami(srv, body["access_token"]).status == 200  # the server is still up


def test_lifetime_is_checked_in_the_config(tmp_path):
    from bastion.config import Config, ConfigError

    for bad in (0, 999, True, "300000", 10**15):
        with pytest.raises(ConfigError):
            Config(data_dir=tmp_path, access_token_lifetime_ms=bad).validate()
    assert Config(data_dir=tmp_path, access_token_lifetime_ms=1000).validate()
