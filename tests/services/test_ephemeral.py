"""Typing notifications, receipts and read markers, presence (C-S API "Typing Notifications",
"Receipts", "Read and unread markers", "Presence") — endpoints and their /sync parts."""

from __future__ import annotations

import threading
import time
from urllib.parse import quote

from bastion.services.filtering import parse_filter
from bastion.services.sync_api import SyncContext, SyncToken
from bastion.storage.sqlite.accounts import Requester
from tests.support.accounts import call_on_server, make_user
from tests.support.rooms import V3, create_room, ephemeral, join, send, sync


def _room_with_two(server):
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    return alice, bob, room


# -- typing ---------------------------------------------------------------------------------


def test_typing_in_sync(server):
    alice, bob, room = _room_with_two(server)
    first = sync(bob)
    assert ephemeral(first, room, "m.typing") == []  # nobody typing: nothing on initial sync
    path = f"{V3}/rooms/{room}/typing/{alice.user_id}"
    r = alice.request("PUT", path, {"typing": True, "timeout": 20000})
    assert r.status == 200 and r.body == {}
    assert server.hs.typing.serial >= 1
    resp = sync(bob, first["next_batch"])
    assert ephemeral(resp, room, "m.typing") == [
        {"type": "m.typing", "content": {"user_ids": [alice.user_id]}}
    ]
    assert resp["next_batch"] != first["next_batch"]
    # an initial sync shows the current typers
    assert ephemeral(sync(bob), room, "m.typing")[0]["content"]["user_ids"] == [alice.user_id]
    # refreshing the timeout is not a change
    serial = server.hs.typing.serial
    alice.request("PUT", path, {"typing": True, "timeout": 20000})
    assert server.hs.typing.serial == serial
    nothing = sync(bob, resp["next_batch"])
    assert ephemeral(nothing, room, "m.typing") == []
    # stopping is a change: the list becomes empty
    alice.request("PUT", path, {"typing": False})
    resp2 = sync(bob, resp["next_batch"])
    assert ephemeral(resp2, room, "m.typing")[0]["content"]["user_ids"] == []


def test_typing_expires_and_wakes_long_poll(server):
    alice, bob, room = _room_with_two(server)
    since = sync(bob)["next_batch"]
    path = f"{V3}/rooms/{room}/typing/{alice.user_id}"
    alice.request("PUT", path, {"typing": True, "timeout": 300})
    resp = sync(bob, since)
    assert ephemeral(resp, room, "m.typing")[0]["content"]["user_ids"] == [alice.user_id]
    # the expiry (a timer, ~0.3 s) wakes the long poll with an empty list
    t0 = time.monotonic()
    resp2 = sync(bob, resp["next_batch"], timeout=10000)
    assert time.monotonic() - t0 < 5
    assert ephemeral(resp2, room, "m.typing")[0]["content"]["user_ids"] == []


def test_typing_wakes_waiting_sync(server):
    alice, bob, room = _room_with_two(server)
    since = sync(bob)["next_batch"]
    box = {}

    def waiter():
        box["resp"] = sync(bob, since, timeout=10000)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    alice.request("PUT", f"{V3}/rooms/{room}/typing/{alice.user_id}", {"typing": True})
    t.join(10)
    assert ephemeral(box["resp"], room, "m.typing")[0]["content"]["user_ids"] == [alice.user_id]


def test_typing_bad_input_and_access(server):
    alice, bob, room = _room_with_two(server)
    carol = make_user(server)
    path = f"{V3}/rooms/{room}/typing/{alice.user_id}"
    for body in ({}, {"typing": "yes"}, {"typing": True, "timeout": "10"},
                 {"typing": True, "timeout": 1.5}):  # fmt: skip
        r = alice.request("PUT", path, body)
        assert r.status == 400 and r.body["errcode"] in ("M_BAD_JSON", "M_NOT_JSON"), body
    r = alice.request("PUT", path, {"typing": True, "timeout": -1})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    # for someone else
    r = bob.request("PUT", path, {"typing": True})
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    # not joined / unknown room
    r = carol.request("PUT", f"{V3}/rooms/{room}/typing/{carol.user_id}", {"typing": True})
    assert r.status == 403
    r = carol.request("PUT", f"{V3}/rooms/!nope:localhost/typing/{carol.user_id}",
                      {"typing": True})  # fmt: skip
    assert r.status == 403
    r = alice.request("PUT", path, {"typing": True}, token=None)
    assert r.status == 401
    # a huge timeout is capped (the timer is at most 30 s)
    alice.request("PUT", path, {"typing": True, "timeout": 10**12})
    handle = server.hs.typing._typing[room][alice.user_id]  # noqa: SLF001
    assert handle.when() - server.loop.time() <= 30.5


def test_typing_left_out_by_filter(server):
    alice, bob, room = _room_with_two(server)
    alice.request("PUT", f"{V3}/rooms/{room}/typing/{alice.user_id}", {"typing": True})
    flt = '{"room": {"ephemeral": {"not_types": ["m.typing"]}}}'
    assert ephemeral(sync(bob, filter=flt), room, "m.typing") == []
    flt = '{"room": {"not_rooms": ["' + room + '"]}}'
    assert room not in sync(bob, filter=flt)["rooms"]["join"]


# -- receipts -------------------------------------------------------------------------------


def test_receipts_in_sync(server):
    alice, bob, room = _room_with_two(server)
    ev = send(alice, room)
    since = sync(bob)["next_batch"]
    r = alice.request("POST", f"{V3}/rooms/{room}/receipt/m.read/{quote(ev)}", {})
    assert r.status == 200 and r.body == {}
    resp = sync(bob, since)
    [receipt] = ephemeral(resp, room, "m.receipt")
    data = receipt["content"][ev]["m.read"][alice.user_id]
    assert isinstance(data["ts"], int) and "thread_id" not in data
    # initial sync carries the latest receipts too
    assert ev in ephemeral(sync(bob), room, "m.receipt")[0]["content"]
    # nothing new: no receipt
    assert ephemeral(sync(bob, resp["next_batch"]), room, "m.receipt") == []
    # threaded receipt: main
    r = alice.request("POST", f"{V3}/rooms/{room}/receipt/m.read/{quote(ev)}",
                      {"thread_id": "main"})  # fmt: skip
    assert r.status == 200
    resp2 = sync(bob, resp["next_batch"])
    assert (
        ephemeral(resp2, room, "m.receipt")[0]["content"][ev]["m.read"][alice.user_id]["thread_id"]
        == "main"
    )


def test_private_receipts_only_for_owner(server):
    alice, bob, room = _room_with_two(server)
    ev = send(bob, room)
    a_since, b_since = sync(alice)["next_batch"], sync(bob)["next_batch"]
    r = alice.request("POST", f"{V3}/rooms/{room}/receipt/m.read.private/{quote(ev)}", {})
    assert r.status == 200
    mine = ephemeral(sync(alice, a_since), room, "m.receipt")
    assert mine[0]["content"][ev]["m.read.private"][alice.user_id]["ts"] > 0
    theirs = sync(bob, b_since)
    assert ephemeral(theirs, room, "m.receipt") == []
    assert all("m.read.private" not in e["content"].get(ev, {})
               for e in ephemeral(sync(bob), room, "m.receipt"))  # fmt: skip


def test_fully_read_and_read_markers(server):
    alice, bob, room = _room_with_two(server)
    ev1, ev2 = send(bob, room, "one"), send(bob, room, "two")
    since = sync(alice)["next_batch"]
    r = alice.request("POST", f"{V3}/rooms/{room}/receipt/m.fully_read/{quote(ev1)}", {})
    assert r.status == 200
    ad = f"{V3}/user/{alice.user_id}/rooms/{room}/account_data/m.fully_read"
    assert alice.request("GET", ad).body == {"event_id": ev1}
    resp = sync(alice, since)
    room_ad = resp["rooms"]["join"][room]["account_data"]["events"]
    assert {"type": "m.fully_read", "content": {"event_id": ev1}} in room_ad
    # read_markers sets the marker and a receipt in one request
    r = alice.request("POST", f"{V3}/rooms/{room}/read_markers",
                      {"m.fully_read": ev2, "m.read": ev2})  # fmt: skip
    assert r.status == 200 and r.body == {}
    assert alice.request("GET", ad).body == {"event_id": ev2}
    resp2 = sync(alice, resp["next_batch"])
    assert alice.user_id in ephemeral(resp2, room, "m.receipt")[0]["content"][ev2]["m.read"]
    # m.fully_read cannot be set as account data directly
    r = alice.request("PUT", ad, {"event_id": ev1})
    assert r.status == 405 and r.body["errcode"] == "M_BAD_JSON"
    # an empty read_markers body does nothing
    assert alice.request("POST", f"{V3}/rooms/{room}/read_markers", {}).status == 200


def test_receipt_bad_input_and_access(server):
    alice, bob, room = _room_with_two(server)
    carol = make_user(server)
    other_room = create_room(carol)
    ev = send(alice, room)
    foreign = send(carol, other_room)
    base = f"{V3}/rooms/{room}/receipt"
    r = alice.request("POST", f"{base}/m.bogus/{quote(ev)}", {})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    r = alice.request("POST", f"{base}/m.read/{quote('$nope')}", {})
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = alice.request("POST", f"{base}/m.read/{quote(foreign)}", {})  # event of another room
    assert r.status == 404
    r = alice.request("POST", f"{base}/m.read/not-an-event", {})
    assert r.status == 400
    for body in ({"thread_id": ""}, {"thread_id": 5}):
        r = alice.request("POST", f"{base}/m.read/{quote(ev)}", body)
        assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM", body
    r = alice.request("POST", f"{base}/m.fully_read/{quote(ev)}", {"thread_id": "main"})
    assert r.status == 400
    r = alice.request("POST", f"{base}/m.read/{quote(ev)}", {"thread_id": "$otherroot"})
    assert r.status == 400  # the event is not in that thread
    r = alice.request("POST", f"{base}/m.read/{quote(ev)}", raw=b"[]")
    assert r.status == 400
    # not joined
    r = carol.request("POST", f"{base}/m.read/{quote(ev)}", {})
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    r = carol.request("POST", f"{V3}/rooms/{room}/read_markers", {"m.fully_read": ev})
    assert r.status == 403
    for body in ({"m.fully_read": 1}, {"m.read": ["$x"]}):
        r = alice.request("POST", f"{V3}/rooms/{room}/read_markers", body)
        assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    r = alice.request("POST", f"{V3}/rooms/{room}/read_markers", {"m.read": "$missing"})
    assert r.status == 404
    # a failed read_markers request writes nothing
    r = alice.request("POST", f"{V3}/rooms/{room}/read_markers",
                      {"m.fully_read": ev, "m.read": "$missing"})  # fmt: skip
    assert r.status == 404
    ad = f"{V3}/user/{alice.user_id}/rooms/{room}/account_data/m.fully_read"
    assert alice.request("GET", ad).status == 404


def test_receipt_empty_body_allowed(server):
    alice, _bob, room = _room_with_two(server)
    ev = send(alice, room)
    r = alice.request("POST", f"{V3}/rooms/{room}/receipt/m.read/{quote(ev)}", raw=b"")
    assert r.status == 200


# -- presence -------------------------------------------------------------------------------


def test_presence_status(server):
    alice, bob, room = _room_with_two(server)
    carol = make_user(server)
    path = f"{V3}/presence/{alice.user_id}/status"
    # never set: offline
    r = alice.request("GET", path)
    assert r.status == 200 and r.body["presence"] == "offline"
    b_since = sync(bob)["next_batch"]
    r = alice.request("PUT", path, {"presence": "online", "status_msg": "at lunch"})
    assert r.status == 200 and r.body == {}
    for viewer in (alice, bob):
        r = viewer.request("GET", path)
        assert r.status == 200
        assert r.body["presence"] == "online" and r.body["status_msg"] == "at lunch"
        assert r.body["last_active_ago"] >= 0 and r.body["currently_active"] is True
    # no shared room: forbidden
    r = carol.request("GET", path)
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    # bob's incremental sync carries alice's presence
    resp = sync(bob, b_since)
    events = [e for e in resp.get("presence", {}).get("events", []) if e["sender"] == alice.user_id]
    assert events and events[0]["type"] == "m.presence"
    assert events[0]["content"]["presence"] == "online"
    # carol's does not
    assert all(e["sender"] != alice.user_id
               for e in sync(carol).get("presence", {}).get("events", []))  # fmt: skip
    # status_msg kept when absent; unavailable
    alice.request("PUT", path, {"presence": "unavailable"})
    r = bob.request("GET", path)
    assert r.body["presence"] == "unavailable" and r.body["status_msg"] == "at lunch"
    resp2 = sync(bob, resp["next_batch"])
    assert [e["content"]["presence"] for e in resp2["presence"]["events"]] == ["unavailable"]
    # presence filter
    flt = '{"presence": {"not_types": ["m.presence"]}}'
    assert "presence" not in sync(bob, filter=flt) or not sync(bob, filter=flt)["presence"].get(
        "events"
    )


def test_presence_bad_input(server):
    alice = make_user(server)
    bob = make_user(server)
    path = f"{V3}/presence/{alice.user_id}/status"
    for body in ({}, {"presence": "busy"}, {"presence": 1},
                 {"presence": "online", "status_msg": 5},
                 {"presence": "online", "status_msg": "x" * 5000}):  # fmt: skip
        r = alice.request("PUT", path, body)
        assert r.status == 400, body
        assert r.body["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM")
    r = bob.request("PUT", path, {"presence": "online"})
    assert r.status == 403
    r = alice.request("GET", f"{V3}/presence/not-a-user/status")
    assert r.status == 400


def test_set_from_sync(server):
    alice = make_user(server)
    hs = server.hs
    from tests.support.accounts import run_on_server

    run_on_server(server, hs.presence.set_from_sync(alice.user_id, None))
    assert call_on_server(server, hs.presence.content, alice.user_id)["presence"] == "online"
    run_on_server(server, hs.presence.set_from_sync(alice.user_id, "offline"))
    assert call_on_server(server, hs.presence.content, alice.user_id)["presence"] == "online"
    pos = hs.store.current_pos
    run_on_server(server, hs.presence.set_from_sync(alice.user_id, "online"))
    assert hs.store.current_pos == pos  # no change, no write
    run_on_server(server, hs.presence.set_from_sync(alice.user_id, "unavailable"))
    assert call_on_server(server, hs.presence.content, alice.user_id)["presence"] == "unavailable"


def test_contributors_directly(server):
    """The contributors work on a bare SyncContext (no /sync needed)."""
    alice, bob, room = _room_with_two(server)
    hs = server.hs
    ev = send(alice, room)
    alice.request("POST", f"{V3}/rooms/{room}/receipt/m.read/{quote(ev)}", {})
    alice.request("PUT", f"{V3}/rooms/{room}/typing/{alice.user_id}", {"typing": True})

    def run():
        ctx = SyncContext(
            requester=Requester(bob.user_id, bob.device_id),
            since=None,
            upto=SyncToken(hs.store.current_pos, hs.typing.serial),
            filter=parse_filter({}),
            joined_room_ids={room},
        )
        resp: dict = {}
        room_out: dict = {}
        for c in (hs.account_data, hs.typing, hs.receipts, hs.presence):
            assert c in hs.sync_contributors
            c.contribute_global(ctx, resp)
            c.contribute_room(ctx, room, room_out)
        return resp, room_out

    resp, room_out = call_on_server(server, run)
    types = [e["type"] for e in room_out["ephemeral"]["events"]]
    assert "m.typing" in types and "m.receipt" in types
    assert any(e["type"] == "m.push_rules" for e in resp["account_data"]["events"])


def test_typing_user_who_left_is_not_shown(server):
    alice, bob, room = _room_with_two(server)
    bob.request("PUT", f"{V3}/rooms/{room}/typing/{bob.user_id}", {"typing": True})
    assert ephemeral(sync(alice), room, "m.typing")[0]["content"]["user_ids"] == [bob.user_id]
    assert bob.request("POST", f"{V3}/rooms/{room}/leave", {}).status == 200
    assert ephemeral(sync(alice), room, "m.typing") == []
    # remove_user (for the room engine on leave) clears it and moves the serial
    serial = server.hs.typing.serial
    call_on_server(server, server.hs.typing.remove_user, room, bob.user_id)
    assert server.hs.typing.serial == serial + 1
    assert server.hs.typing.typing_users(room) == []
