"""POST /register with User-Interactive Authentication, /register/available, registration-token
validity; nio's register() and register_with_token() against the server."""

from __future__ import annotations

import asyncio

import nio
import pytest

from tests.support.accounts import add_registration_token, assert_error, db_rows
from tests.support.harness import Client, ServerThread

REG = "/_matrix/client/v3/register"
VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity"
PW = "a fine password"


@pytest.fixture
def token_server(tmp_path):
    srv = ServerThread(tmp_path / "tok", registration="token").start()
    yield srv
    srv.stop()


def reg(client: Client, body: dict, **kw):
    return client.request("POST", REG, body, token=None, **kw)


# -- open registration --------------------------------------------------------------------------
def test_no_auth_gives_uia_401_without_errcode(client):
    r = reg(client, {"username": "alice", "password": PW})
    assert r.status == 401
    assert r.body["flows"] == [{"stages": ["m.login.dummy"]}]
    assert r.body["params"] == {}
    assert isinstance(r.body["session"], str) and r.body["session"]
    assert "errcode" not in r.body and "completed" not in r.body


def test_probe_then_dummy_with_session(client):
    r = reg(client, {"username": "alice", "password": PW})
    session = r.body["session"]
    r = reg(client, {"username": "alice", "password": PW,
                     "auth": {"type": "m.login.dummy", "session": session}})  # fmt: skip
    assert r.status == 200, r.body
    assert r.body["user_id"] == "@alice:localhost"
    assert r.body["access_token"].startswith("bst_") and r.body["device_id"]
    who = client.request("GET", "/_matrix/client/v3/account/whoami", token=r.body["access_token"])
    assert who.body == {"user_id": "@alice:localhost", "device_id": r.body["device_id"],
                        "is_guest": False}  # fmt: skip
    # The session is consumed: replaying it fails.
    r = reg(client, {"username": "alice2", "password": PW,
                     "auth": {"type": "m.login.dummy", "session": session}})  # fmt: skip
    assert_error(r, 400, "M_UNKNOWN")


def test_dummy_without_session_completes_at_once(client):
    r = reg(client, {"username": "bob", "password": PW, "auth": {"type": "m.login.dummy"}})
    assert r.status == 200 and r.body["user_id"] == "@bob:localhost"


def test_device_id_display_name_and_inhibit_login(client, server):
    r = reg(client, {"username": "carol", "password": PW, "device_id": "MYPHONE",
                     "initial_device_display_name": "Phone", "auth": {"type": "m.login.dummy"}})  # fmt: skip
    assert r.status == 200 and r.body["device_id"] == "MYPHONE"
    dev = client.request("GET", "/_matrix/client/v3/devices/MYPHONE", token=r.body["access_token"])
    assert dev.body["display_name"] == "Phone"
    r = reg(client, {"username": "dave", "password": PW, "inhibit_login": True,
                     "auth": {"type": "m.login.dummy"}})  # fmt: skip
    assert r.status == 200 and r.body == {"user_id": "@dave:localhost"}
    assert not db_rows(server, "SELECT * FROM access_tokens WHERE user_id = '@dave:localhost'")


def test_username_generated_and_lower_cased(client):
    r = reg(client, {"password": PW, "auth": {"type": "m.login.dummy"}})
    assert (
        r.status == 200
        and r.body["user_id"].startswith("@")
        and r.body["user_id"].endswith(":localhost")
    )
    r = reg(client, {"username": "Erin", "password": PW, "auth": {"type": "m.login.dummy"}})
    assert r.status == 200 and r.body["user_id"] == "@erin:localhost"


def test_username_checks_come_before_uia(client):
    client.register("frank")
    # Even without auth, a taken or invalid username is reported first (registration.yaml).
    assert_error(reg(client, {"username": "frank", "password": PW}), 400, "M_USER_IN_USE")
    assert_error(reg(client, {"username": "FRANK", "password": PW}), 400, "M_USER_IN_USE")
    for bad in ("has space", "ünïcode", "a:b", "@x:localhost", "", "x" * 300):
        assert_error(reg(client, {"username": bad, "password": PW}), 400, "M_INVALID_USERNAME")


def test_password_rules(client):
    dummy = {"type": "m.login.dummy"}
    assert_error(reg(client, {"username": "g1", "auth": dummy}), 400, "M_MISSING_PARAM")
    assert_error(reg(client, {"username": "g1", "password": "", "auth": dummy}), 400,
                 "M_WEAK_PASSWORD")  # fmt: skip
    assert_error(reg(client, {"username": "g1", "password": "short", "auth": dummy}), 400,
                 "M_WEAK_PASSWORD")  # fmt: skip
    assert_error(reg(client, {"username": "g1", "password": "x" * 600, "auth": dummy}), 400,
                 "M_INVALID_PARAM")  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        {"username": 5, "password": PW},
        {"username": "h", "password": 12345678},
        {"username": "h", "password": PW, "device_id": 7},
        {"username": "h", "password": PW, "inhibit_login": "yes"},
        {"username": "h", "password": PW, "initial_device_display_name": ["x"]},
        {"username": "h", "password": PW, "refresh_token": 1},
        {"username": "h", "password": PW, "auth": "dummy"},
        {"username": "h", "password": PW, "auth": {"type": 5}},
        {"username": "h", "password": PW, "auth": {"type": "m.login.dummy", "session": 5}},
    ],
)
def test_wrong_types_are_bad_json(client, body):
    assert_error(reg(client, body), 400, "M_BAD_JSON")


def test_not_json_and_bad_device_ids(client):
    r = client.request("POST", REG, raw=b"not json", token=None)
    assert_error(r, 400, "M_NOT_JSON")
    r = client.request("POST", REG, raw=b"[1]", token=None)
    assert_error(r, 400, "M_BAD_JSON")
    for bad in ("", "has space", "x" * 300):
        r = reg(client, {"username": "i1", "password": PW, "device_id": bad,
                         "auth": {"type": "m.login.dummy"}})  # fmt: skip
        assert_error(r, 400, "M_INVALID_PARAM")


def test_guests_and_unknown_kind(client):
    r = client.request("POST", REG, {"auth": {"type": "m.login.dummy"}}, token=None,
                       query={"kind": "guest"})  # fmt: skip
    assert_error(r, 403, "M_GUEST_ACCESS_FORBIDDEN")
    r = client.request("POST", REG, {"password": PW}, token=None, query={"kind": "robot"})
    assert_error(r, 400, "M_INVALID_PARAM")


def test_unknown_stage_and_unknown_session(client):
    r = reg(client, {"username": "j1", "password": PW, "auth": {"type": "m.login.password"}})
    assert r.status == 401 and r.body["errcode"] == "M_UNRECOGNIZED" and "flows" in r.body
    r = reg(client, {"username": "j1", "password": PW,
                     "auth": {"type": "m.login.dummy", "session": "nope"}})  # fmt: skip
    assert_error(r, 400, "M_UNKNOWN")


def test_register_available(client):
    client.register("kate")
    path = "/_matrix/client/v3/register/available"
    r = client.request("GET", path, query={"username": "kate2"}, token=None)
    assert r.status == 200 and r.body == {"available": True}
    assert_error(client.request("GET", path, query={"username": "kate"}, token=None), 400,
                 "M_USER_IN_USE")  # fmt: skip
    assert_error(client.request("GET", path, query={"username": "k k"}, token=None), 400,
                 "M_INVALID_USERNAME")  # fmt: skip
    assert_error(client.request("GET", path, token=None), 400, "M_MISSING_PARAM")


def test_secrets_stored_hashed(client, server):
    r = reg(client, {"username": "leo", "password": PW, "auth": {"type": "m.login.dummy"}})
    token = r.body["access_token"]
    (user,) = db_rows(server, "SELECT password_hash FROM users WHERE user_id = '@leo:localhost'")
    assert user["password_hash"].startswith("$argon2id$") and PW not in user["password_hash"]
    rows = db_rows(server, "SELECT token_hash FROM access_tokens WHERE user_id = '@leo:localhost'")
    assert len(rows) == 1
    stored = rows[0]["token_hash"]
    assert isinstance(stored, bytes) and len(stored) == 32 and token.encode() not in stored
    db = server.config.database_path.read_bytes()
    assert token.encode() not in db and PW.encode() not in db


def test_nio_register(server):
    async def go():
        c = nio.AsyncClient(server.base_url, "")
        try:
            resp = await c.register("niouser", PW)
            assert isinstance(resp, nio.RegisterResponse), resp
            assert resp.user_id == "@niouser:localhost"
            who = await c.whoami()
            assert isinstance(who, nio.WhoamiResponse) and who.user_id == "@niouser:localhost"
        finally:
            await c.close()

    asyncio.run(go())


def test_closed_registration(tmp_path):
    srv = ServerThread(tmp_path / "closed", registration="closed").start()
    try:
        c = Client(srv.base_url)
        assert_error(reg(c, {"username": "x", "password": PW}), 403, "M_FORBIDDEN")
        assert_error(c.request("GET", VALIDITY, query={"token": "abc"}, token=None), 403,
                     "M_FORBIDDEN")  # fmt: skip
    finally:
        srv.stop()


# -- token registration -------------------------------------------------------------------------
def test_token_flow_as_nio_does_it(token_server):
    add_registration_token(token_server, "tok-123")
    c = Client(token_server.base_url)
    body = {"username": "mia", "password": PW}
    # 1) auth without a type
    r = reg(c, {**body, "auth": {"initial_device_display_name": "matrix-nio"}})
    assert r.status == 401 and "errcode" not in r.body
    assert r.body["flows"] == [{"stages": ["m.login.registration_token", "m.login.dummy"]}]
    session = r.body["session"]
    # 2) the token stage: another 401 with `completed`
    r = reg(c, {**body, "auth": {"type": "m.login.registration_token", "token": "tok-123",
                                 "session": session}})  # fmt: skip
    assert r.status == 401 and r.body["completed"] == ["m.login.registration_token"]
    assert "errcode" not in r.body and r.body["session"] == session
    # 3) dummy completes
    r = reg(c, {**body, "auth": {"type": "m.login.dummy", "session": session}})
    assert r.status == 200 and r.body["user_id"] == "@mia:localhost"
    (row,) = db_rows(token_server, "SELECT completed FROM registration_tokens")
    assert row["completed"] == 1


def test_token_mode_refuses_dummy_only_and_bad_tokens(token_server):
    add_registration_token(token_server, "good")
    c = Client(token_server.base_url)
    r = reg(c, {"username": "ned", "password": PW, "auth": {"type": "m.login.dummy"}})
    assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN"
    session = reg(c, {"username": "ned", "password": PW}).body["session"]
    for bad in ("wrong", "", 5, "x" * 65):
        r = reg(c, {"username": "ned", "password": PW, "auth": {
            "type": "m.login.registration_token", "token": bad, "session": session}})  # fmt: skip
        assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN", r.body
        assert "completed" not in r.body


def test_token_uses_expiry_and_revocation(token_server):
    hs = token_server.hs
    add_registration_token(token_server, "once", uses=1)
    add_registration_token(token_server, "expired", expiry_ts=hs.now_ms() - 1000)
    c = Client(token_server.base_url)

    def try_register(username, token):
        session = reg(c, {"username": username, "password": PW}).body["session"]
        r = reg(c, {"username": username, "password": PW, "auth": {
            "type": "m.login.registration_token", "token": token, "session": session}})  # fmt: skip
        if r.status != 401 or "errcode" in r.body:
            return r
        return reg(c, {"username": username, "password": PW,
                       "auth": {"type": "m.login.dummy", "session": session}})  # fmt: skip

    assert try_register("o1", "once").status == 200
    r = try_register("o2", "once")
    assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN"
    r = try_register("o3", "expired")
    assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN"


def test_token_used_up_between_stage_and_completion(token_server):
    add_registration_token(token_server, "last", uses=1)
    c = Client(token_server.base_url)
    sessions = []
    for name in ("p1", "p2"):
        s = reg(c, {"username": name, "password": PW}).body["session"]
        r = reg(c, {"username": name, "password": PW, "auth": {
            "type": "m.login.registration_token", "token": "last", "session": s}})  # fmt: skip
        assert r.status == 401 and r.body["completed"] == ["m.login.registration_token"]
        sessions.append(s)
    r1 = reg(c, {"username": "p1", "password": PW,
                 "auth": {"type": "m.login.dummy", "session": sessions[0]}})  # fmt: skip
    r2 = reg(c, {"username": "p2", "password": PW,
                 "auth": {"type": "m.login.dummy", "session": sessions[1]}})  # fmt: skip
    assert r1.status == 200
    assert_error(r2, 403, "M_FORBIDDEN")
    (row,) = db_rows(token_server, "SELECT completed FROM registration_tokens")
    assert row["completed"] == 1
    assert not db_rows(token_server, "SELECT * FROM users WHERE user_id = '@p2:localhost'")


def test_validity_endpoint_and_rate_limit(token_server):
    add_registration_token(token_server, "valid-one")
    c = Client(token_server.base_url)
    r = c.request("GET", VALIDITY, query={"token": "valid-one"}, token=None)
    assert r.status == 200 and r.body == {"valid": True}
    r = c.request("GET", VALIDITY, query={"token": "nope"}, token=None)
    assert r.status == 200 and r.body == {"valid": False}
    assert_error(c.request("GET", VALIDITY, token=None), 400, "M_MISSING_PARAM")
    statuses = [c.request("GET", VALIDITY, query={"token": "x"}, token=None) for _ in range(12)]
    limited = [r for r in statuses if r.status == 429]
    assert limited, [r.status for r in statuses]
    assert limited[0].body["errcode"] == "M_LIMIT_EXCEEDED"
    assert limited[0].body["retry_after_ms"] > 0


def test_validity_in_open_mode_is_forbidden(client):
    r = client.request("GET", VALIDITY, query={"token": "x"}, token=None)
    assert_error(r, 403, "M_FORBIDDEN")


def test_registration_tokens_stored_hashed(token_server):
    add_registration_token(token_server, "secret-token-value")
    assert b"secret-token-value" not in token_server.config.database_path.read_bytes()
    (row,) = db_rows(token_server, "SELECT prefix FROM registration_tokens")
    assert row["prefix"] == "secr"


def test_nio_register_with_token(token_server):
    add_registration_token(token_server, "nio-token")

    async def go():
        c = nio.AsyncClient(token_server.base_url, "")
        try:
            resp = await c.register_with_token("niotok", PW, "nio-token")
            assert isinstance(resp, nio.RegisterResponse), resp
            assert resp.user_id == "@niotok:localhost" and resp.access_token
            bad = await c.register_with_token("niotok2", PW, "wrong-token")
            assert not isinstance(bad, nio.RegisterResponse)
        finally:
            await c.close()

    asyncio.run(go())
