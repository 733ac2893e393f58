"""Device management: list, get, rename, delete with UIA (m.login.password), the E2EE hooks."""

from __future__ import annotations

import pytest

from tests.support.accounts import PASSWORD, assert_error, login, password_auth
from tests.support.harness import Client

DEVICES = "/_matrix/client/v3/devices"
WHOAMI = "/_matrix/client/v3/account/whoami"


def test_list_get_rename(client):
    c = client.register("alice")
    r = c.request("GET", DEVICES)
    assert r.status == 200 and [d["device_id"] for d in r.body["devices"]] == [c.device_id]
    d = r.body["devices"][0]
    assert d["last_seen_ip"] == "127.0.0.1" and isinstance(d["last_seen_ts"], int)
    r = c.request("PUT", f"{DEVICES}/{c.device_id}", {"display_name": "My laptop"})
    assert r.status == 200 and r.body == {}
    assert c.request("GET", f"{DEVICES}/{c.device_id}").body["display_name"] == "My laptop"
    r = c.request("PUT", f"{DEVICES}/{c.device_id}", {})
    assert r.status == 200  # no change
    assert c.request("GET", f"{DEVICES}/{c.device_id}").body["display_name"] == "My laptop"


def test_unknown_and_foreign_devices(client):
    a = client.register("bob")
    b = client.register("carol")
    assert_error(a.request("GET", f"{DEVICES}/NOPE"), 404, "M_NOT_FOUND")
    assert_error(a.request("GET", f"{DEVICES}/{b.device_id}"), 404, "M_NOT_FOUND")
    assert_error(a.request("PUT", f"{DEVICES}/{b.device_id}", {"display_name": "x"}), 404,
                 "M_NOT_FOUND")  # fmt: skip
    assert_error(a.request("PUT", f"{DEVICES}/{a.device_id}", {"display_name": 5}), 400,
                 "M_BAD_JSON")  # fmt: skip
    assert_error(a.request("PUT", f"{DEVICES}/{a.device_id}", raw=b"{"), 400, "M_NOT_JSON")
    assert_error(client.request("GET", DEVICES, token=None), 401, "M_MISSING_TOKEN")


def test_delete_device_uia(client):
    a = client.register("dave")
    other = login(client, "dave")
    path = f"{DEVICES}/{other.device_id}"
    r = a.request("DELETE", path)
    assert r.status == 401 and r.body["flows"] == [{"stages": ["m.login.password"]}]
    assert "errcode" not in r.body
    session = r.body["session"]
    r = a.request("DELETE", path, {"auth": password_auth(a.user_id, session, "wrong password")})
    assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN" and r.body["session"] == session
    # The identifier must be the requester.
    r = a.request("DELETE", path, {"auth": password_auth("@someone:localhost", session)})
    assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN"
    r = a.request("DELETE", path, {"auth": password_auth("dave", session)})
    assert r.status == 200 and r.body == {}
    assert_error(other.request("GET", WHOAMI), 401, "M_UNKNOWN_TOKEN")
    assert_error(a.request("GET", path), 404, "M_NOT_FOUND")
    # The session is used up.
    r = a.request("DELETE", path, {"auth": password_auth("dave", session)})
    assert_error(r, 400, "M_UNKNOWN")


def test_delete_devices_bulk(client):
    a = client.register("erin")
    b = login(client, "erin")
    c = login(client, "erin")
    body = {"devices": [b.device_id, c.device_id, "UNKNOWN"]}
    r = a.request("POST", "/_matrix/client/v3/delete_devices", body)
    assert r.status == 401
    r = a.request("POST", "/_matrix/client/v3/delete_devices",
                  {**body, "auth": password_auth(a.user_id, r.body["session"])})  # fmt: skip
    assert r.status == 200
    devices = a.request("GET", DEVICES).body["devices"]
    assert [d["device_id"] for d in devices] == [a.device_id]
    for x in (b, c):
        assert_error(x.request("GET", WHOAMI), 401, "M_UNKNOWN_TOKEN")


@pytest.mark.parametrize(
    "body,errcode",
    [({}, "M_MISSING_PARAM"), ({"devices": "X"}, "M_BAD_JSON"), ({"devices": [1]}, "M_BAD_JSON"),
     ({"devices": ["X"], "auth": []}, "M_BAD_JSON")],
)  # fmt: skip
def test_delete_devices_bad_input(client, body, errcode):
    a = client.register("frank")
    assert_error(a.request("POST", "/_matrix/client/v3/delete_devices", body), 400, errcode)


def test_uia_session_is_bound_to_user_and_operation(client):
    a = client.register("gina")
    b = client.register("hank")
    r = a.request("DELETE", f"{DEVICES}/{a.device_id}")
    session = r.body["session"]
    # Another user cannot ride on gina's session, even with their own password.
    r = b.request("DELETE", f"{DEVICES}/{b.device_id}", {"auth": password_auth("hank", session)})
    assert_error(r, 400, "M_UNKNOWN")
    # Nor can the session be used for another operation.
    r = a.request("POST", "/_matrix/client/v3/account/password",
                  {"new_password": "another password", "auth": password_auth("gina", session)})  # fmt: skip
    assert_error(r, 400, "M_UNKNOWN")
    # A registration dummy stage is no answer to a password UIA.
    r = a.request("DELETE", f"{DEVICES}/{a.device_id}",
                  {"auth": {"type": "m.login.dummy", "session": session}})  # fmt: skip
    assert r.status == 401 and r.body["errcode"] == "M_UNRECOGNIZED"


class HookRecorder:
    def __init__(self):
        self.added = []
        self.deleted = []

    def on_device_added(self, conn, user_id, device_id):
        assert conn is not None
        self.added.append((user_id, device_id))

    def on_device_deleted(self, conn, user_id, device_id):
        # Runs inside the write transaction: the device row is already gone.
        row = conn.execute(
            "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        ).fetchone()
        assert row is None
        self.deleted.append((user_id, device_id))


def test_e2ee_hooks_are_called(client, server):
    rec = HookRecorder()
    accounts = server.hs.accounts
    saved = accounts.e2ee  # the device hooks of the accounts service
    accounts.e2ee = rec
    try:
        a = client.register("ivy")
        b = login(client, "ivy", device_id="SECOND")
        login(client, "ivy", device_id="SECOND")  # reuse: not a new device
        assert rec.added == [(a.user_id, a.device_id), (a.user_id, "SECOND")]
        r = a.request("DELETE", f"{DEVICES}/SECOND")
        r = a.request("DELETE", f"{DEVICES}/SECOND",
                      {"auth": password_auth(a.user_id, r.body["session"])})  # fmt: skip
        assert r.status == 200
        assert rec.deleted == [(a.user_id, "SECOND")]
        assert b.request("GET", WHOAMI).status == 401
        a.request("POST", "/_matrix/client/v3/logout", {})
        assert rec.deleted[-1] == (a.user_id, a.device_id)
    finally:
        accounts.e2ee = saved


def test_password_uia_counts_toward_login_limiter(client):
    a = client.register("jack")
    r = a.request("DELETE", f"{DEVICES}/{a.device_id}")
    session = r.body["session"]
    statuses = []
    for _ in range(7):
        r = a.request("DELETE", f"{DEVICES}/{a.device_id}",
                      {"auth": password_auth("jack", session, "bad password")})  # fmt: skip
        statuses.append(r.status)
    assert 429 in statuses
    assert Client(client.base_url).request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "user": "jack", "password": PASSWORD}, token=None).status == 429  # fmt: skip
