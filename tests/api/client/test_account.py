"""Password change, deactivation, 3PIDs and capabilities."""

from __future__ import annotations

from tests.support.accounts import PASSWORD, assert_error, db_rows, login, password_auth
from tests.support.harness import Client

PW_PATH = "/_matrix/client/v3/account/password"
DEACTIVATE = "/_matrix/client/v3/account/deactivate"
WHOAMI = "/_matrix/client/v3/account/whoami"
NEW = "a brand new password"


def uia(c: Client, path: str, body: dict, password: str = PASSWORD):
    r = c.request("POST", path, body)
    assert r.status == 401, r.body
    return c.request("POST", path, {**body, "auth": password_auth(c.user_id, r.body["session"],
                                                                  password)})  # fmt: skip


def test_change_password_logs_out_other_devices(client, server):
    a = client.register("alice")
    b = login(client, "alice")
    r = uia(a, PW_PATH, {"new_password": NEW})
    assert r.status == 200 and r.body == {}
    assert a.request("GET", WHOAMI).status == 200  # the requesting device stays
    assert_error(b.request("GET", WHOAMI), 401, "M_UNKNOWN_TOKEN")
    assert [d["device_id"] for d in a.request("GET", "/_matrix/client/v3/devices").body[
        "devices"]] == [a.device_id]  # fmt: skip
    r = client.request("POST", "/_matrix/client/v3/login",
                       {"type": "m.login.password", "user": "alice", "password": PASSWORD},
                       token=None)  # fmt: skip
    assert_error(r, 403, "M_FORBIDDEN")
    login(client, "alice", NEW)
    (row,) = db_rows(server, "SELECT password_hash FROM users WHERE user_id = '@alice:localhost'")
    assert row["password_hash"].startswith("$argon2id$")


def test_change_password_keeping_devices(client):
    a = client.register("bob")
    b = login(client, "bob")
    r = uia(a, PW_PATH, {"new_password": NEW, "logout_devices": False})
    assert r.status == 200
    assert b.request("GET", WHOAMI).status == 200


def test_change_password_bad_input(client):
    a = client.register("carol")
    assert_error(a.request("POST", PW_PATH, {}), 400, "M_MISSING_PARAM")
    assert_error(a.request("POST", PW_PATH, {"new_password": "short"}), 400, "M_WEAK_PASSWORD")
    assert_error(a.request("POST", PW_PATH, {"new_password": 12345678}), 400, "M_BAD_JSON")
    assert_error(a.request("POST", PW_PATH, {"new_password": NEW, "logout_devices": "no"}), 400,
                 "M_BAD_JSON")  # fmt: skip
    r = uia(a, PW_PATH, {"new_password": NEW}, password="not my password")
    assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN"
    assert_error(client.request("POST", PW_PATH, {"new_password": NEW}, token=None), 401,
                 "M_MISSING_TOKEN")  # fmt: skip


def test_deactivate(client, server):
    a = client.register("dave")
    b = login(client, "dave")
    r = a.request("POST", DEACTIVATE)
    assert r.status == 401 and r.body["flows"] == [{"stages": ["m.login.password"]}]
    r = uia(a, DEACTIVATE, {"erase": False})
    assert r.status == 200 and r.body == {"id_server_unbind_result": "no-support"}
    for c in (a, b):
        assert_error(c.request("GET", WHOAMI), 401, "M_UNKNOWN_TOKEN")
    r = client.request("POST", "/_matrix/client/v3/login",
                       {"type": "m.login.password", "user": "dave", "password": PASSWORD},
                       token=None)  # fmt: skip
    assert_error(r, 403, "M_FORBIDDEN")
    assert_error(client.request("GET", "/_matrix/client/v3/profile/@dave:localhost", token=None),
                 404, "M_NOT_FOUND")  # fmt: skip
    # The user ID is never handed out again.
    r = client.request("POST", "/_matrix/client/v3/register",
                       {"username": "dave", "password": PASSWORD}, token=None)  # fmt: skip
    assert_error(r, 400, "M_USER_IN_USE")
    assert not db_rows(server, "SELECT * FROM devices WHERE user_id = '@dave:localhost'")
    assert not db_rows(server, "SELECT * FROM profiles WHERE user_id = '@dave:localhost'")
    (row,) = db_rows(server, "SELECT * FROM users WHERE user_id = '@dave:localhost'")
    assert row["deactivated"] == 1 and row["password_hash"] is None


def test_deactivate_bad_input(client):
    a = client.register("erin")
    assert_error(a.request("POST", DEACTIVATE, {"erase": "yes"}), 400, "M_BAD_JSON")
    assert_error(a.request("POST", DEACTIVATE, {"id_server": 5}), 400, "M_BAD_JSON")
    assert_error(a.request("POST", DEACTIVATE, {"auth": 5}), 400, "M_BAD_JSON")
    r = uia(a, DEACTIVATE, {}, password="wrong password")
    assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN"
    assert a.request("GET", WHOAMI).status == 200


def test_threepids(client):
    a = client.register("frank")
    r = a.request("GET", "/_matrix/client/v3/account/3pid")
    assert r.status == 200 and r.body == {"threepids": []}
    r = a.request("POST", "/_matrix/client/v3/account/3pid/email/requestToken",
                  {"client_secret": "abc", "email": "a@example.org", "send_attempt": 1})  # fmt: skip
    assert_error(r, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")


def test_capabilities(client):
    a = client.register("gina")
    r = a.request("GET", "/_matrix/client/v3/capabilities")
    assert r.status == 200
    caps = r.body["capabilities"]
    assert caps["m.room_versions"]["default"] == "12"
    assert caps["m.room_versions"]["available"] == {str(v): "stable" for v in range(1, 13)}
    assert caps["m.change_password"] == {"enabled": True}
    assert caps["m.3pid_changes"] == {"enabled": False}
    assert caps["m.get_login_token"] == {"enabled": False}
    assert caps["m.profile_fields"]["enabled"] is True
    assert "m.account_moderation" not in caps
    assert_error(client.request("GET", "/_matrix/client/v3/capabilities", token=None), 401,
                 "M_MISSING_TOKEN")  # fmt: skip


def test_deactivate_leaves_rooms(client):
    a = client.register("henry")
    b = client.register("iris")
    room_id = b.request("POST", "/_matrix/client/v3/createRoom", {"invite": [a.user_id]}).body[
        "room_id"
    ]
    other = b.request("POST", "/_matrix/client/v3/createRoom", {"invite": [a.user_id]}).body[
        "room_id"
    ]
    assert a.request("POST", f"/_matrix/client/v3/join/{room_id}", {}).status == 200
    assert uia(a, DEACTIVATE, {}).status == 200
    joined = b.request("GET", f"/_matrix/client/v3/rooms/{room_id}/joined_members").body["joined"]
    assert list(joined) == [b.user_id]
    r = b.request("GET", f"/_matrix/client/v3/rooms/{other}/state/m.room.member/{a.user_id}")
    assert r.body["membership"] == "leave"  # the pending invite was rejected
