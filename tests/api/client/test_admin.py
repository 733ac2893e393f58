"""Server administration: whois, suspension and locking (admin.yaml), with the audit trail."""

from __future__ import annotations

import json

import pytest

from tests.support.accounts import assert_error, db_rows, make_admin

WHOIS = "/_matrix/client/v3/admin/whois"
ADMIN = "/_matrix/client/v1/admin"
WHOAMI = "/_matrix/client/v3/account/whoami"


@pytest.fixture
def users(client, server):
    admin = client.register("admin")
    make_admin(server, admin.user_id)
    return admin, client.register("alice"), client.register("bob")


def test_whois(users):
    admin, alice, bob = users
    r = alice.request("GET", f"{WHOIS}/{alice.user_id}")
    assert r.status == 200 and r.body["user_id"] == alice.user_id
    conn = r.body["devices"][alice.device_id]["sessions"][0]["connections"][0]
    assert conn["ip"] == "127.0.0.1" and isinstance(conn["last_seen"], int)
    assert_error(alice.request("GET", f"{WHOIS}/{bob.user_id}"), 403, "M_FORBIDDEN")
    r = admin.request("GET", f"{WHOIS}/{bob.user_id}")
    assert r.status == 200 and list(r.body["devices"]) == [bob.device_id]
    assert_error(admin.request("GET", f"{WHOIS}/@ghost:localhost"), 404, "M_NOT_FOUND")


def test_capability_for_admins(users):
    admin, alice, _ = users
    caps = admin.request("GET", "/_matrix/client/v3/capabilities").body["capabilities"]
    assert caps["m.account_moderation"] == {"suspend": True, "lock": True}
    caps = alice.request("GET", "/_matrix/client/v3/capabilities").body["capabilities"]
    assert "m.account_moderation" not in caps


def test_suspend(users, server):
    admin, alice, bob = users
    path = f"{ADMIN}/suspend/{alice.user_id}"
    assert admin.request("GET", path).body == {"suspended": False}
    assert_error(bob.request("PUT", path, {"suspended": True}), 403, "M_FORBIDDEN")
    assert_error(bob.request("GET", path), 403, "M_FORBIDDEN")
    r = admin.request("PUT", path, {"suspended": True})
    assert r.status == 200 and r.body == {"suspended": True}
    assert admin.request("GET", path).body == {"suspended": True}
    # Reads still work; writes are refused; deleting own devices and logging out are allowed.
    assert alice.request("GET", WHOAMI).status == 200
    r = alice.request("PUT", f"/_matrix/client/v3/profile/{alice.user_id}/displayname",
                      {"displayname": "x"})  # fmt: skip
    assert_error(r, 403, "M_USER_SUSPENDED")
    assert alice.request("DELETE", f"/_matrix/client/v3/devices/{alice.device_id}").status == 401
    assert admin.request("PUT", path, {"suspended": False}).body == {"suspended": False}
    r = alice.request("PUT", f"/_matrix/client/v3/profile/{alice.user_id}/displayname",
                      {"displayname": "x"})  # fmt: skip
    assert r.status == 200
    # (admin_audit is a view over the ledger's action records since migration 4)
    audit = db_rows(server, "SELECT * FROM admin_audit WHERE action LIKE 'account.%suspend'"
                            " ORDER BY id")  # fmt: skip
    assert [(a["actor"], a["action"], a["target"]) for a in audit] == [
        (admin.user_id, "account.suspend", alice.user_id),
        (admin.user_id, "account.unsuspend", alice.user_id),
    ]
    assert json.loads(audit[0]["details"]) == {"suspended": True}


def test_lock(users, server):
    admin, alice, _ = users
    path = f"{ADMIN}/lock/{alice.user_id}"
    assert admin.request("GET", path).body == {"locked": False}
    assert admin.request("PUT", path, {"locked": True}).body == {"locked": True}
    r = alice.request("GET", WHOAMI)
    assert_error(r, 401, "M_USER_LOCKED")
    assert r.body["soft_logout"] is True
    assert admin.request("PUT", path, {"locked": False}).status == 200
    assert alice.request("GET", WHOAMI).status == 200
    assert admin.request("PUT", path, {"locked": True}).status == 200
    # Logging out stays possible while locked.
    assert alice.request("POST", "/_matrix/client/v3/logout", {}).status == 200
    assert_error(alice.request("GET", WHOAMI), 401, "M_UNKNOWN_TOKEN")
    sql = "SELECT action FROM admin_audit WHERE action LIKE 'account.%lock' ORDER BY id"
    actions = [a["action"] for a in db_rows(server, sql)]
    assert actions == ["account.lock", "account.unlock", "account.lock"]


def test_moderation_bad_targets_and_input(users):
    admin, alice, _ = users
    for kind in ("suspend", "lock"):
        assert_error(admin.request("GET", f"{ADMIN}/{kind}/@x:remote.example"), 400,
                     "M_INVALID_PARAM")  # fmt: skip
        assert_error(admin.request("GET", f"{ADMIN}/{kind}/nonsense"), 400, "M_INVALID_PARAM")
        assert_error(admin.request("GET", f"{ADMIN}/{kind}/@ghost:localhost"), 404, "M_NOT_FOUND")
        key = "suspended" if kind == "suspend" else "locked"
        p = f"{ADMIN}/{kind}/{alice.user_id}"
        assert_error(admin.request("PUT", p, {}), 400, "M_MISSING_PARAM")
        assert_error(admin.request("PUT", p, {key: "yes"}), 400, "M_BAD_JSON")
        assert_error(admin.request("PUT", p, raw=b"nope"), 400, "M_NOT_JSON")


def test_admins_cannot_moderate_other_admins(users, server, client):
    admin, _, _ = users
    other = client.register("admin3")
    make_admin(server, other.user_id)
    r = admin.request("PUT", f"{ADMIN}/lock/{other.user_id}", {"locked": True})
    assert_error(r, 403, "M_FORBIDDEN")
    assert other.request("GET", WHOAMI).status == 200


def test_deactivated_target_is_not_found(users, client):
    admin, alice, _ = users
    r = alice.request("POST", "/_matrix/client/v3/account/deactivate", {})
    r = alice.request("POST", "/_matrix/client/v3/account/deactivate", {"auth": {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "correct horse battery", "session": r.body["session"]}})  # fmt: skip
    assert r.status == 200
    assert_error(admin.request("PUT", f"{ADMIN}/lock/{alice.user_id}", {"locked": True}), 404,
                 "M_NOT_FOUND")  # fmt: skip
