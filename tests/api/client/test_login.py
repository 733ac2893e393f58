"""GET/POST /login, logout, logout/all, whoami, access-token handling, the failed-login
limiter."""

from __future__ import annotations

import asyncio

import nio
import pytest

from bastion.guard.login_policy import LoginConfig
from tests.support.accounts import PASSWORD, assert_error, db_rows, login, on_server
from tests.support.harness import Client

LOGIN = "/_matrix/client/v3/login"
WHOAMI = "/_matrix/client/v3/account/whoami"


def post_login(client: Client, body: dict):
    return client.request("POST", LOGIN, body, token=None)


def test_login_flows(client):
    r = client.request("GET", LOGIN, token=None)
    assert r.status == 200 and r.body == {"flows": [{"type": "m.login.password"}]}


def test_login_identifier_forms(client):
    client.register("alice")
    for user in ("alice", "@alice:localhost", "ALICE", "@Alice:localhost"):
        c = login(client, user)
        assert c.user_id == "@alice:localhost"
        assert c.access_token.startswith("bst_") and len(c.access_token) > 40
        assert c.request("GET", WHOAMI).body["user_id"] == "@alice:localhost"
    # The deprecated top-level `user`.
    r = post_login(client, {"type": "m.login.password", "user": "alice", "password": PASSWORD})
    assert r.status == 200 and r.body["user_id"] == "@alice:localhost"


def test_bad_credentials_are_uniform_403(client):
    client.register("bob")
    for user, pw in (("bob", "wrong password"), ("nobody", PASSWORD), ("@bob:elsewhere", PASSWORD),
                     ("b b", PASSWORD), ("bob", "x" * 600)):  # fmt: skip
        r = post_login(client, {"type": "m.login.password",
                                "identifier": {"type": "m.id.user", "user": user}, "password": pw})  # fmt: skip
        assert_error(r, 403, "M_FORBIDDEN")


def test_failed_login_limiter(client):
    client.register("carol")
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "carol"}}
    for _ in range(LoginConfig().account.free):  # the account's free failures
        assert_error(post_login(client, {**body, "password": "wrong pass"}), 403, "M_FORBIDDEN")
    r = post_login(client, {**body, "password": PASSWORD})
    assert_error(r, 429, "M_LIMIT_EXCEEDED")
    assert r.body["retry_after_ms"] > 0 and "Retry-After" in r.headers
    # Other accounts are not affected.
    client.register("dave")
    login(client, "dave")


def test_device_id_reuse_revokes_old_token(client, server):
    client.register("erin")
    a = login(client, "erin", device_id="LAPTOP", initial_device_display_name="Laptop")
    assert a.device_id == "LAPTOP"
    b = login(client, "erin", device_id="LAPTOP", initial_device_display_name="Ignored")
    assert b.device_id == "LAPTOP"
    assert_error(a.request("GET", WHOAMI), 401, "M_UNKNOWN_TOKEN")
    assert b.request("GET", WHOAMI).body["device_id"] == "LAPTOP"
    dev = b.request("GET", "/_matrix/client/v3/devices/LAPTOP").body
    assert dev["display_name"] == "Laptop"


@pytest.mark.parametrize(
    "body,status,errcode",
    [
        ({}, 400, "M_MISSING_PARAM"),
        ({"type": 5}, 400, "M_BAD_JSON"),
        ({"type": "m.login.token", "token": "x"}, 400, "M_UNKNOWN"),
        ({"type": "m.login.password", "password": PASSWORD}, 400, "M_MISSING_PARAM"),
        ({"type": "m.login.password", "identifier": "frank", "password": PASSWORD}, 400,
         "M_BAD_JSON"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": 5},
          "password": PASSWORD}, 400, "M_BAD_JSON"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "frank"}},
         400, "M_MISSING_PARAM"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "frank"},
          "password": 5}, 400, "M_BAD_JSON"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "frank"},
          "password": PASSWORD, "device_id": ["x"]}, 400, "M_BAD_JSON"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "frank"},
          "password": PASSWORD, "initial_device_display_name": 3}, 400, "M_BAD_JSON"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.odd"}, "password": PASSWORD},
         400, "M_UNKNOWN"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email",
          "address": "a@b.c"}, "password": PASSWORD}, 403, "M_FORBIDDEN"),
        ({"type": "m.login.password", "medium": "email", "address": "a@b.c",
          "password": PASSWORD}, 403, "M_FORBIDDEN"),
    ],
)  # fmt: skip
def test_login_bad_input(client, body, status, errcode):
    client.register("frank")
    assert_error(post_login(client, body), status, errcode)


def test_missing_and_unknown_tokens(client):
    assert_error(client.request("GET", WHOAMI, token=None), 401, "M_MISSING_TOKEN")
    r = client.request("GET", WHOAMI, token="bst_nonsense")
    assert_error(r, 401, "M_UNKNOWN_TOKEN")
    assert r.body["soft_logout"] is False
    r = client.request("GET", WHOAMI, token=None, headers={"Authorization": "Basic abc"})
    assert_error(r, 401, "M_UNKNOWN_TOKEN")
    # The query-string token is not accepted.
    c = client.register("gina")
    r = client.request("GET", WHOAMI, token=None, query={"access_token": c.access_token})
    assert_error(r, 401, "M_MISSING_TOKEN")


def test_logout_deletes_device(client, server):
    c = client.register("hank")
    other = login(client, "hank")
    r = c.request("POST", "/_matrix/client/v3/logout", {})
    assert r.status == 200 and r.body == {}
    assert_error(c.request("GET", WHOAMI), 401, "M_UNKNOWN_TOKEN")
    devices = other.request("GET", "/_matrix/client/v3/devices").body["devices"]
    assert [d["device_id"] for d in devices] == [other.device_id]


def test_logout_all(client, server):
    a = client.register("ivy")
    b = login(client, "ivy")
    r = a.request("POST", "/_matrix/client/v3/logout/all", {})
    assert r.status == 200
    for c in (a, b):
        assert_error(c.request("GET", WHOAMI), 401, "M_UNKNOWN_TOKEN")
    assert not db_rows(server, "SELECT * FROM devices WHERE user_id = '@ivy:localhost'")
    assert not db_rows(server, "SELECT * FROM access_tokens WHERE user_id = '@ivy:localhost'")
    login(client, "ivy")  # the account itself is fine


def test_locked_user_cannot_log_in(client, server):
    c = client.register("jack")
    hs = server.hs
    on_server(server, hs.store.db.write(
        lambda conn: hs.store.set_user_flag_in(conn, c.user_id, "locked", True)))  # fmt: skip
    r = post_login(client, {"type": "m.login.password", "user": "jack", "password": PASSWORD})
    assert_error(r, 401, "M_USER_LOCKED")
    assert r.body["soft_logout"] is True
    # A wrong password does not reveal the lock.
    r = post_login(client, {"type": "m.login.password", "user": "jack", "password": "nope nope"})
    assert_error(r, 403, "M_FORBIDDEN")


def test_nio_login(client, server):
    client.register("nio_login")

    async def go():
        c = nio.AsyncClient(server.base_url, "@nio_login:localhost")
        try:
            resp = await c.login(PASSWORD, device_name="nio device")
            assert isinstance(resp, nio.LoginResponse), resp
            assert resp.user_id == "@nio_login:localhost"
            bad = nio.AsyncClient(server.base_url, "@nio_login:localhost")
            r2 = await bad.login("wrong password")
            await bad.close()
            assert isinstance(r2, nio.LoginError) and r2.status_code == "M_FORBIDDEN"
            out = await c.logout()
            assert isinstance(out, nio.LogoutResponse), out
        finally:
            await c.close()

    asyncio.run(go())
