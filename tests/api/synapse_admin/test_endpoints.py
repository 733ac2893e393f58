"""The Synapse-compatible admin API's endpoints (``/_synapse/admin/``): admins only, every call
an ``admin.request`` record, Synapse's shapes, Bastion's deliberate differences (no login as
user, hashed registration tokens), room delete with purge and block, and bad input answered
with Matrix errors."""

from __future__ import annotations

import json

import pytest

from tests.support.accounts import assert_error, db_rows, make_user

A = "/_synapse/admin"


@pytest.fixture
def admin(server):
    return make_user(server, "admin", admin=True)


def _records(server, route: str) -> list[dict]:
    rows = db_rows(server, "SELECT entry FROM ledger_entries WHERE action = 'admin.request'")
    out = []
    for (entry,) in rows:
        rec = json.loads(entry)
        if rec.get("details", {}).get("route") == route:
            out.append(rec)
    return out


ROUTES = [
    ("GET", f"{A}/v2/users", None),
    ("GET", f"{A}/v2/users/@alice:localhost", None),
    ("PUT", f"{A}/v2/users/@mallory2:localhost", {"password": "a long password"}),
    ("POST", f"{A}/v1/reset_password/@alice:localhost", {"new_password": "a long password"}),
    ("GET", f"{A}/v1/whois/@alice:localhost", None),
    ("GET", f"{A}/v1/rooms", None),
    ("DELETE", f"{A}/v1/rooms/!x:localhost", {"block": True}),
    ("GET", f"{A}/v1/registration_tokens", None),
    ("POST", f"{A}/v1/registration_tokens/new", {}),
    ("POST", f"{A}/v1/send_server_notice", {"user_id": "@alice:localhost",
                                            "content": {"body": "x"}}),
    ("GET", f"{A}/v1/server_version", None),
    ("POST", f"{A}/v1/media/delete?before_ts=99999999999999", None),
]  # fmt: skip


def test_admins_only(server, client, admin):
    alice = client.register("alice")
    for method, path, body in ROUTES:
        r = alice.request(method, path, body)
        assert_error(r, 403, "M_FORBIDDEN")
        assert client.request(method, path, body, token=None).status == 401
    # Nothing was changed by the refused calls.
    assert db_rows(server, "SELECT * FROM users WHERE user_id = '@mallory2:localhost'") == []
    assert db_rows(server, "SELECT * FROM blocked_rooms") == []
    assert db_rows(server, "SELECT * FROM registration_tokens") == []


def test_reads_and_writes_are_recorded(server, client, admin):
    alice = client.register("alice")
    assert admin.request("GET", f"{A}/v2/users/{alice.user_id}").status == 200
    recs = _records(server, "GET /_synapse/admin/v2/users/{userId}")
    assert len(recs) == 1 and recs[0]["target"] == alice.user_id
    assert recs[0]["subject"] == alice.user_id and recs[0]["actor"] == admin.user_id
    r = admin.request("PUT", f"{A}/v2/users/@carol:localhost",
                      {"password": "carol password", "admin": False})  # fmt: skip
    assert r.status == 201 and r.body["name"] == "@carol:localhost"
    recs = _records(server, "PUT /_synapse/admin/v2/users/{userId}")
    assert len(recs) == 1 and recs[0]["target"] == "@carol:localhost"
    # The second PUT modifies: 200.
    r = admin.request("PUT", f"{A}/v2/users/@carol:localhost", {"displayname": "Carol"})
    assert r.status == 200 and r.body["displayname"] == "Carol"


def test_no_login_as_user(client, admin):
    alice = client.register("alice")
    r = admin.request("POST", f"{A}/v1/users/{alice.user_id}/login", {})
    assert_error(r, 403, "M_FORBIDDEN")
    assert "login" in r.body["error"]


def test_user_modify_refuses_what_bastion_lacks(client, admin):
    alice = client.register("alice")
    path = f"{A}/v2/users/{alice.user_id}"
    for body in ({"deactivated": True}, {"user_type": "bot"},
                 {"threepids": [{"medium": "email", "address": "a@b.c"}]}):  # fmt: skip
        assert_error(admin.request("PUT", path, body), 400, "M_INVALID_PARAM")
    assert_error(admin.request("PUT", f"{A}/v2/users/@x:elsewhere", {}), 400, "M_INVALID_PARAM")
    assert_error(admin.request("PUT", path, {"admin": "yes"}), 400, "M_BAD_JSON")
    assert_error(admin.request("PUT", path, {"password": "short"}), 400, "M_WEAK_PASSWORD")
    assert_error(admin.request("GET", f"{A}/v2/users/@ghost:localhost"), 404, "M_NOT_FOUND")
    me = f"{A}/v2/users/{admin.user_id}"
    assert_error(admin.request("PUT", me, {"admin": False}), 403, "M_FORBIDDEN")
    assert_error(admin.request("PUT", f"{me}/admin".replace("v2", "v1"), {"admin": False}), 403,
                 "M_FORBIDDEN")  # fmt: skip
    r = admin.request("PUT", f"{A}/v1/users/{alice.user_id}/admin", {"admin": True})
    assert r.status == 200 and admin.request("GET", f"{A}/v1/users/{alice.user_id}/admin").body == {
        "admin": True
    }


def test_user_list_filters_and_paging(client, admin):
    for name in ("ann", "bert", "cyd"):
        client.register(name)
    r = admin.request("GET", f"{A}/v2/users", query={"limit": "2"})
    assert r.body["total"] == 4 and len(r.body["users"]) == 2 and r.body["next_token"] == "2"
    r = admin.request("GET", f"{A}/v2/users", query={"from": "2", "limit": "2"})
    assert len(r.body["users"]) == 2 and "next_token" not in r.body
    r = admin.request("GET", f"{A}/v2/users", query={"name": "ber"})
    assert [u["name"] for u in r.body["users"]] == ["@bert:localhost"]
    r = admin.request("GET", f"{A}/v2/users", query={"admins": "true"})
    assert [u["name"] for u in r.body["users"]] == [admin.user_id]
    r = admin.request("GET", f"{A}/v2/users", query={"order_by": "name", "dir": "b"})
    assert r.body["users"][0]["name"] == "@cyd:localhost"
    assert_error(admin.request("GET", f"{A}/v2/users", query={"order_by": "x"}), 400,
                 "M_INVALID_PARAM")  # fmt: skip
    assert_error(admin.request("GET", f"{A}/v2/users", query={"from": "-1"}), 400,
                 "M_INVALID_PARAM")  # fmt: skip


def _room_with(alice, bob) -> str:
    room_id = alice.request(
        "POST", "/_matrix/client/v3/createRoom",
        {"preset": "public_chat", "room_alias_name": "doomed"},
    ).body["room_id"]  # fmt: skip
    assert bob.request("POST", f"/_matrix/client/v3/rooms/{room_id}/join", {}).status == 200
    r = alice.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/1",
                      {"msgtype": "m.text", "body": "distinctive words"})  # fmt: skip
    assert r.status == 200
    return room_id


def test_delete_room_purge_and_block(server, client, admin):
    alice, bob = client.register("alice"), client.register("bob")
    room_id = _room_with(alice, bob)
    n_events = len(db_rows(server, "SELECT 1 FROM events WHERE room_id = ?", (room_id,)))
    since = alice.request("GET", "/_matrix/client/v3/sync").body["next_batch"]
    r = admin.request("DELETE", f"{A}/v1/rooms/{room_id}", {"block": True, "purge": True})
    assert r.status == 200, r.body
    assert sorted(r.body["kicked_users"]) == sorted([alice.user_id, bob.user_id])
    assert r.body["local_aliases"] == ["#doomed:localhost"]
    for table in ("events", "current_state", "current_membership", "membership_events",
                  "state_groups", "forward_extremities", "room_aliases", "rooms"):  # fmt: skip
        assert db_rows(server, f"SELECT 1 FROM {table} WHERE room_id = ?", (room_id,)) == []  # noqa: S608
    assert not any(
        b"distinctive words" in bytes(row[0]) for row in db_rows(server, "SELECT json FROM events")
    )
    # The purge lists the removed events in the ledger; the call is an admin.request record.
    purged = [json.loads(r[0]) for r in db_rows(
        server, "SELECT entry FROM ledger_entries WHERE action = 'room.purge'")]  # fmt: skip
    assert sum(len(p["details"]["events"]) for p in purged) == n_events + 2  # + the leaves
    assert len(_records(server, "DELETE /_synapse/admin/v1/rooms/{roomId}")) == 1
    # ... written in the purge's transaction, just before its room.purge records.
    idx = {a: [r[0] for r in db_rows(server, "SELECT idx FROM ledger_entries WHERE action = ?"
                                     " ORDER BY idx", (a,))]
           for a in ("admin.request", "room.purge")}  # fmt: skip
    assert idx["admin.request"][-1] + 1 == idx["room.purge"][0]
    # Blocked: nobody joins it again; the block shows in the block status.
    assert_error(alice.request("POST", f"/_matrix/client/v3/rooms/{room_id}/join", {}), 403,
                 "M_FORBIDDEN")  # fmt: skip
    assert admin.request("GET", f"{A}/v1/rooms/{room_id}/block").body == {
        "block": True, "user_id": admin.user_id,
    }  # fmt: skip
    assert_error(admin.request("GET", f"{A}/v1/rooms/{room_id}"), 404, "M_NOT_FOUND")
    # The users' clients see the room gone; the server keeps working.
    assert alice.request("GET", "/_matrix/client/v3/joined_rooms").body["joined_rooms"] == []
    for query in ({}, {"since": since, "timeout": "0"}):
        r = alice.request("GET", "/_matrix/client/v3/sync", query=query)
        assert r.status == 200 and room_id not in r.body.get("rooms", {}).get("join", {})
    again = alice.request("POST", "/_matrix/client/v3/createRoom", {}).body["room_id"]
    assert admin.request("GET", f"{A}/v1/rooms/{again}/members").body["members"] == [alice.user_id]


def test_delete_room_without_purge_v2(server, client, admin):
    alice, bob = client.register("alice"), client.register("bob")
    room_id = _room_with(alice, bob)
    r = admin.request("DELETE", f"{A}/v2/rooms/{room_id}", {"purge": False})
    assert r.status == 200
    status = admin.request("GET", f"{A}/v2/rooms/delete_status/{r.body['delete_id']}").body
    assert status["status"] == "complete"
    by_room = admin.request("GET", f"{A}/v2/rooms/{room_id}/delete_status").body
    assert by_room["results"][0]["delete_id"] == r.body["delete_id"]
    # Not purged: the events stay, nobody is joined, the alias and the directory entry are gone.
    assert db_rows(server, "SELECT 1 FROM events WHERE room_id = ?", (room_id,)) != []
    assert admin.request("GET", f"{A}/v1/rooms/{room_id}/members").body["total"] == 0
    assert db_rows(server, "SELECT 1 FROM room_aliases WHERE room_id = ?", (room_id,)) == []
    # Not blocked: an invite-free public room can be joined again.
    assert bob.request("POST", f"/_matrix/client/v3/rooms/{room_id}/join", {}).status == 200


def test_delete_room_bad_input(client, admin):
    assert_error(admin.request("DELETE", f"{A}/v1/rooms/!nope:localhost", {}), 404,
                 "M_NOT_FOUND")  # fmt: skip
    assert_error(admin.request("DELETE", f"{A}/v1/rooms/nonsense", {}), 400, "M_INVALID_PARAM")
    assert_error(admin.request("DELETE", f"{A}/v1/rooms/!x:localhost", {"block": "yes"}), 400,
                 "M_BAD_JSON")  # fmt: skip
    assert_error(
        admin.request("DELETE", f"{A}/v1/rooms/!x:localhost", {"new_room_user_id": "@a:b"}),
        400, "M_INVALID_PARAM",
    )  # fmt: skip
    assert_error(admin.request("GET", f"{A}/v2/rooms/delete_status/nope"), 404, "M_NOT_FOUND")


def test_registration_token_handles(server, client, admin):
    r = admin.request("POST", f"{A}/v1/registration_tokens/new", {"length": 20})
    assert r.status == 200 and len(r.body["token"]) == 20
    token = r.body["token"]
    listed = admin.request("GET", f"{A}/v1/registration_tokens").body["registration_tokens"]
    assert len(listed) == 1 and token not in json.dumps(listed)
    handle = listed[0]["token"]
    assert handle.startswith(token[:4] + ":")
    assert admin.request("GET", f"{A}/v1/registration_tokens/{handle}").status == 200
    # The full token addresses it too; a wrong handle does not.
    assert admin.request("GET", f"{A}/v1/registration_tokens/{token}").status == 200
    bad = token[:4] + ":" + "0" * 12
    assert_error(admin.request("GET", f"{A}/v1/registration_tokens/{bad}"), 404, "M_NOT_FOUND")
    assert_error(admin.request("POST", f"{A}/v1/registration_tokens/new", {"token": "a b"}), 400,
                 "M_INVALID_PARAM")  # fmt: skip
    assert_error(admin.request("POST", f"{A}/v1/registration_tokens/new",
                               {"uses_allowed": -1}), 400, "M_INVALID_PARAM")  # fmt: skip
    # The token works for registration until it is deleted.
    r = admin.request("GET", f"{A}/v1/registration_tokens", query={"valid": "true"})
    assert len(r.body["registration_tokens"]) == 1
    assert admin.request("DELETE", f"{A}/v1/registration_tokens/{handle}").body == {}
    assert db_rows(server, "SELECT * FROM registration_tokens") == []
    # The ledger never names more than the prefix.
    entries = [r[0] for r in db_rows(server, "SELECT entry FROM ledger_entries")]
    assert not any(token in bytes(e).decode(errors="replace") for e in entries)


def test_server_notice_txn_is_idempotent(server, client, admin):
    alice = client.register("alice")
    body = {"user_id": alice.user_id, "content": {"msgtype": "m.text", "body": "once"}}
    first = admin.request("PUT", f"{A}/v1/send_server_notice/t1", body)
    again = admin.request("PUT", f"{A}/v1/send_server_notice/t1", body)
    assert first.status == 200 and first.body == again.body
    rows = db_rows(server, "SELECT json FROM events WHERE type = 'm.room.message'")
    assert sum(json.loads(r[0])["content"]["body"] == "once" for r in rows) == 1
    assert_error(admin.request("POST", f"{A}/v1/send_server_notice",
                               {"user_id": "@ghost:localhost", "content": {"body": "x"}}),
                 404, "M_NOT_FOUND")  # fmt: skip
    assert_error(admin.request("POST", f"{A}/v1/send_server_notice",
                               {"user_id": alice.user_id, "content": "x"}),
                 400, "M_BAD_JSON")  # fmt: skip


def test_media_delete_by_date_keeps_avatars(server, client, admin):
    alice = client.register("alice")
    ids = []
    for data in (b"one", b"two"):
        r = alice.request("POST", "/_matrix/media/v3/upload", raw=data,
                          headers={"Content-Type": "text/plain"})  # fmt: skip
        ids.append(r.body["content_uri"])
    r = alice.request("PUT", f"/_matrix/client/v3/profile/{alice.user_id}/avatar_url",
                      {"avatar_url": ids[0]})  # fmt: skip
    assert r.status == 200
    r = admin.request("POST", f"{A}/v1/media/delete", query={"before_ts": "99999999999999"})
    assert r.status == 200 and r.body["deleted_media"] == [ids[1].rsplit("/", 1)[1]]
    left = [row[0] for row in db_rows(server, "SELECT media_id FROM local_media")]
    assert left == [ids[0].rsplit("/", 1)[1]]
    assert_error(admin.request("POST", f"{A}/v1/media/delete"), 400, "M_MISSING_PARAM")


def test_block_room_refuses_joins_and_invites(server, client, admin):
    alice, bob = client.register("alice"), client.register("bob")
    room_id = alice.request(
        "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}
    ).body["room_id"]
    r = admin.request("PUT", f"{A}/v1/rooms/{room_id}/block", {"block": True})
    assert r.status == 200 and r.body == {"block": True}
    join = f"/_matrix/client/v3/rooms/{room_id}/join"
    assert_error(bob.request("POST", join, {}), 403, "M_FORBIDDEN")
    invite = f"/_matrix/client/v3/rooms/{room_id}/invite"
    assert_error(alice.request("POST", invite, {"user_id": bob.user_id}), 403, "M_FORBIDDEN")
    assert admin.request("PUT", f"{A}/v1/rooms/{room_id}/block", {"block": False}).status == 200
    assert admin.request("GET", f"{A}/v1/rooms/{room_id}/block").body == {"block": False}
    assert bob.request("POST", join, {}).status == 200
    blocks = db_rows(server, "SELECT entry FROM ledger_entries WHERE action = 'room.block'")
    assert [json.loads(e[0])["details"]["block"] for e in blocks] == [True, False]


def test_room_quarantine_passes_protected_media_by(server, client, admin):
    alice = client.register("alice")
    room_id = alice.request("POST", "/_matrix/client/v3/createRoom", {}).body["room_id"]
    uris = []
    for i, data in enumerate((b"kept", b"caught")):
        r = alice.request("POST", "/_matrix/media/v3/upload", raw=data,
                          headers={"Content-Type": "text/plain"})  # fmt: skip
        uris.append(r.body["content_uri"])
        content = {"msgtype": "m.text", "body": "see", "url": r.body["content_uri"]}
        alice.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{i}",
                      content)  # fmt: skip
    kept, caught = (u.rsplit("/", 1)[1] for u in uris)
    assert admin.request("GET", f"{A}/v1/room/{room_id}/media").body == {
        "local": uris, "remote": [],
    }  # fmt: skip
    assert admin.request("POST", f"{A}/v1/media/protect/{kept}", {}).status == 200
    r = admin.request("POST", f"{A}/v1/room/{room_id}/media/quarantine", {})
    assert r.body == {"num_quarantined": 1}
    assert [row[0] for row in db_rows(server, "SELECT media_id FROM guard_quarantined_media")] == [
        caught
    ]
    info = admin.request("GET", f"{A}/v1/media/localhost/{kept}").body["media_info"]
    assert info["safe_from_quarantine"] is True and info["quarantined_by"] is None
    media = f"{A}/v1/users/{alice.user_id}/media"
    for order in ("safe_from_quarantine", "quarantined_by", "media_length", "upload_name"):
        r = admin.request("GET", media, query={"order_by": order, "dir": "b"})
        assert r.status == 200 and r.body["total"] == 2, r.body
    r = admin.request("GET", media, query={"order_by": "safe_from_quarantine", "dir": "b"})
    assert r.body["media"][0]["media_id"] == kept
    assert_error(admin.request("GET", media, query={"order_by": "x"}), 400, "M_INVALID_PARAM")
    assert admin.request("POST", f"{A}/v1/media/unprotect/{kept}", {}).status == 200
    assert db_rows(server, "SELECT * FROM protected_media") == []
    assert_error(admin.request("POST", f"{A}/v1/media/protect/nope", {}), 404, "M_NOT_FOUND")
    info = admin.request("GET", f"{A}/v1/media/localhost/{caught}").body["media_info"]
    assert admin.user_id in info["quarantined_by"]
    # The same media ID on another server is another media: quarantining it leaves ours be.
    r = admin.request("POST", f"{A}/v1/media/quarantine/elsewhere.org/{kept}", {})
    assert r.status == 200
    info = admin.request("GET", f"{A}/v1/media/localhost/{kept}").body["media_info"]
    assert info["quarantined_by"] is None
    r = admin.request("POST", f"{A}/v1/purge_media_cache", query={"before_ts": "1"})
    assert r.body == {"deleted": 0}


def test_purge_refused_while_a_local_user_cannot_leave(server, client, admin):
    alice = client.register("alice")
    body = {"user_id": alice.user_id, "content": {"msgtype": "m.text", "body": "hi"}}
    event_id = admin.request("POST", f"{A}/v1/send_server_notice", body).body["event_id"]
    room_id = db_rows(server, "SELECT room_id FROM events WHERE event_id = ?", (event_id,))[0][0]
    # The invite to one's server-notices room cannot be rejected (C-S API "Server Notices").
    r = admin.request("DELETE", f"{A}/v1/rooms/{room_id}", {})
    assert_error(r, 400, "M_UNKNOWN")
    status = admin.request("GET", f"{A}/v2/rooms/{room_id}/delete_status").body["results"]
    assert status[0]["status"] == "failed"
    assert status[0]["shutdown_room"]["failed_to_kick_users"] == [alice.user_id]
    assert db_rows(server, "SELECT 1 FROM events WHERE room_id = ?", (room_id,)) != []
    r = admin.request("DELETE", f"{A}/v1/rooms/{room_id}", {"force_purge": True})
    assert r.status == 200 and r.body["failed_to_kick_users"] == [alice.user_id]
    assert len(_records(server, "DELETE /_synapse/admin/v1/rooms/{roomId}")) == 2
    assert db_rows(server, "SELECT 1 FROM events WHERE room_id = ?", (room_id,)) == []
    # The next notice gets a new room.
    again = admin.request("POST", f"{A}/v1/send_server_notice", body)
    assert again.status == 200, again.body
    new_room = db_rows(server, "SELECT room_id FROM events WHERE event_id = ?",
                       (again.body["event_id"],))[0][0]  # fmt: skip
    assert new_room != room_id


def test_block_an_unknown_room(server, admin):
    r = admin.request("DELETE", f"{A}/v1/rooms/!unknown:elsewhere.org", {"block": True})
    assert r.status == 200 and r.body["kicked_users"] == []
    assert admin.request("GET", f"{A}/v1/rooms/!unknown:elsewhere.org/block").body["block"]


def test_lock_and_unlock_through_put(server, client, admin):
    alice = client.register("alice")
    path = f"{A}/v2/users/{alice.user_id}"
    assert admin.request("PUT", path, {"locked": True}).body["locked"] is True
    assert_error(alice.request("GET", "/_matrix/client/v3/account/whoami"), 401, "M_USER_LOCKED")
    # Locked users are listed only when asked for.
    names = [u["name"] for u in admin.request("GET", f"{A}/v2/users").body["users"]]
    assert alice.user_id not in names
    r = admin.request("GET", f"{A}/v2/users", query={"locked": "true"})
    assert alice.user_id in [u["name"] for u in r.body["users"]]
    assert admin.request("PUT", path, {"locked": False}).body["locked"] is False
    assert alice.request("GET", "/_matrix/client/v3/account/whoami").status == 200
    actions = [r[0] for r in db_rows(
        server, "SELECT action FROM ledger_entries WHERE subject = ? AND action LIKE 'account.%'",
        (alice.user_id,))]  # fmt: skip
    assert actions[-2:] == ["account.lock", "account.unlock"]


def test_a_room_under_legal_hold_is_not_purged(server, client, admin):
    """A legal hold on a room (issue 10) keeps its history: the purge is refused before anyone
    is made to leave; once the hold is lifted it goes ahead."""
    alice, bob = client.register("alice"), client.register("bob")
    room_id = _room_with(alice, bob)
    hold = f"/_bastion/admin/v1/legal_holds/rooms/{room_id}"
    assert admin.request("PUT", hold, {"reason": "litigation"}).status == 200
    r = admin.request("DELETE", f"{A}/v1/rooms/{room_id}", {"purge": True})
    assert_error(r, 403, "M_FORBIDDEN")
    assert "legal hold" in r.body["error"]
    assert db_rows(server, "SELECT 1 FROM events WHERE room_id = ?", (room_id,))
    members = db_rows(server, "SELECT user_id FROM current_membership WHERE room_id = ?"
                      " AND membership = 'join'", (room_id,))  # fmt: skip
    assert len(members) == 2
    assert admin.request("DELETE", hold, {}).status == 200
    r = admin.request("DELETE", f"{A}/v1/rooms/{room_id}", {"purge": True})
    assert r.status == 200, r.body
    assert db_rows(server, "SELECT 1 FROM events WHERE room_id = ?", (room_id,)) == []
