"""Simplified Sliding Sync (MSC4186): lists sorted by activity and their windows, counts,
incremental ``pos`` and its long poll, room subscriptions, the to_device, e2ee and
account_data extensions, and refused input."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.api.client.test_rooms import V3, create, send
from tests.support.e2ee import new_device, wait_writes
from tests.support.harness import Client

SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"


def ss(c, body, pos=None, timeout=0, status=200):
    q = {"timeout": str(timeout)}
    if pos is not None:
        q["pos"] = pos
    r = c.request("POST", SS, body, query=q)
    assert r.status == status, r.body
    return r.body


def all_rooms(limit=1, required_state=None, ranges=((0, 99),), **filters):
    spec = {
        "ranges": [list(r) for r in ranges],
        "timeline_limit": limit,
        "required_state": required_state or [],
    }
    if filters:
        spec["filters"] = filters
    return {"lists": {"all": spec}}


@pytest.fixture
def alice(client):
    return client.register()


@pytest.fixture
def bob(client):
    return client.register()


def test_lists_sorted_by_activity_with_ranges_and_counts(alice, bob):
    rooms = [create(alice, preset="public_chat", name=f"R{i}") for i in range(3)]
    send(alice, rooms[0])  # rooms[0] is now the most recent, then rooms[2], rooms[1]
    body = ss(alice, all_rooms(limit=1, required_state=[["m.room.name", ""]]))
    assert body["lists"]["all"]["count"] == 3
    got = body["rooms"]
    assert set(got) == set(rooms)
    order = sorted(got, key=lambda r: -got[r]["bump_stamp"])
    assert order == [rooms[0], rooms[2], rooms[1]]
    r0 = got[rooms[0]]
    assert r0["initial"] is True and r0["name"] == "R0"
    assert [e["type"] for e in r0["timeline"]] == ["m.room.message"]
    assert r0["limited"] is True and "prev_batch" in r0
    assert [e["type"] for e in r0["required_state"]] == ["m.room.name"]
    assert r0["joined_count"] == 1 and r0["invited_count"] == 0
    assert r0["notification_count"] == 0 and r0["highlight_count"] == 0
    # A window of one: only the most recent room, but the count is of the whole list.
    one = ss(alice, all_rooms(ranges=((0, 0),)))
    assert one["lists"]["all"]["count"] == 3
    assert list(one["rooms"]) == [rooms[0]]
    # A message moves the least active room to the top (the remembered order is refreshed).
    send(alice, rooms[1])
    top = ss(alice, all_rooms(ranges=((0, 0),)))
    assert list(top["rooms"]) == [rooms[1]]
    assert top["rooms"][rooms[1]]["bump_stamp"] > r0["bump_stamp"]
    # Huge ranges are clamped, not refused.
    big = ss(alice, all_rooms(ranges=((0, 10**12),)))
    assert set(big["rooms"]) == set(rooms)
    # Invites are listed (invite_state) and filterable.
    invited = create(bob, preset="private_chat")
    assert bob.request("POST", f"{V3}/rooms/{invited}/invite",
                       {"user_id": alice.user_id}).status == 200  # fmt: skip
    inv = ss(alice, all_rooms(is_invite=True))
    assert list(inv["rooms"]) == [invited]
    assert inv["rooms"][invited]["invite_state"]
    assert ss(alice, all_rooms(is_invite=False))["lists"]["all"]["count"] == 3
    assert list(ss(alice, all_rooms(is_invited=True))["rooms"]) == [invited]
    assert inv["rooms"][invited]["membership"] == "invite"
    assert r0["membership"] == "join"


def test_required_state_forms_and_filters(alice, bob):
    plain = create(alice, preset="public_chat", name="P")
    enc = create(
        alice,
        preset="private_chat",
        initial_state=[{"type": "m.room.encryption", "state_key": "",
                        "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
    )  # fmt: skip
    assert bob.request("POST", f"{V3}/join/{plain}", {}).status == 200
    send(bob, plain)
    body = ss(alice, all_rooms(limit=1, required_state=[["m.room.member", "$LAZY"]]))
    member_keys = {e["state_key"] for e in body["rooms"][plain]["required_state"]}
    assert member_keys == {alice.user_id, bob.user_id}  # the sender and the user
    body = ss(alice, all_rooms(limit=0, required_state=[["m.room.member", "$ME"]]))
    assert {e["state_key"] for e in body["rooms"][plain]["required_state"]} == {alice.user_id}
    assert body["rooms"][plain]["timeline"] == []
    body = ss(alice, all_rooms(limit=0, required_state=[["*", "*"]]))
    types = {e["type"] for e in body["rooms"][plain]["required_state"]}
    assert {"m.room.create", "m.room.name", "m.room.member", "m.room.power_levels"} <= types
    assert list(ss(alice, all_rooms(is_encrypted=True))["rooms"]) == [enc]
    assert list(ss(alice, all_rooms(is_encrypted=False))["rooms"]) == [plain]
    # is_dm follows m.direct.
    r = alice.request("PUT", f"{V3}/user/{alice.user_id}/account_data/m.direct",
                      {bob.user_id: [plain]})  # fmt: skip
    assert r.status == 200
    assert list(ss(alice, all_rooms(is_dm=True))["rooms"]) == [plain]
    assert list(ss(alice, all_rooms(is_dm=False))["rooms"]) == [enc]
    space = create(alice, creation_content={"type": "m.space"})
    assert list(ss(alice, all_rooms(room_types=["m.space"]))["rooms"]) == [space]
    assert space not in ss(alice, all_rooms(not_room_types=["m.space"]))["rooms"]


def test_incremental_pos_returns_only_changed_rooms(alice):
    quiet = create(alice)
    busy = create(alice)
    first = ss(alice, all_rooms(limit=5))
    assert set(first["rooms"]) == {quiet, busy}
    eid = send(alice, busy).body["event_id"]
    inc = ss(alice, all_rooms(limit=5), pos=first["pos"])
    assert list(inc["rooms"]) == [busy]
    room = inc["rooms"][busy]
    assert [e["event_id"] for e in room["timeline"]] == [eid]
    assert "initial" not in room and room["num_live"] == 1 and room["limited"] is False
    # Nothing new: nothing returned (timeout 0).
    empty = ss(alice, all_rooms(limit=5), pos=inc["pos"])
    assert empty["rooms"] == {}
    assert empty["lists"]["all"]["count"] == 2


def test_long_poll_wakes_on_new_message(alice):
    room_id = create(alice)
    first = ss(alice, all_rooms())
    out = {}

    def poll():
        out["body"] = ss(alice, all_rooms(), pos=first["pos"], timeout=10000)

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.3)
    t_send = time.monotonic()
    eid = send(alice, room_id).body["event_id"]
    th.join(15)
    assert [e["event_id"] for e in out["body"]["rooms"][room_id]["timeline"]] == [eid]
    assert time.monotonic() - t_send < 1.0
    t0 = time.monotonic()
    idle = ss(alice, all_rooms(), pos=out["body"]["pos"], timeout=300)
    assert idle["rooms"] == {} and time.monotonic() - t0 >= 0.25


def test_room_subscriptions_only_visible_rooms(alice, bob):
    mine = create(alice, preset="public_chat", name="Mine")
    theirs = create(bob, preset="private_chat", name="Secret")
    send(bob, theirs, {"msgtype": "m.text", "body": "hidden"})
    sub = {"timeline_limit": 3, "required_state": [["m.room.name", ""]]}
    body = ss(alice, {"room_subscriptions": {mine: sub, theirs: sub}})
    assert list(body["rooms"]) == [mine]
    assert body["rooms"][mine]["name"] == "Mine"
    assert body["lists"] == {}
    # Subscriptions are sticky on the connection (matrix-js-sdk sends them once) until
    # unsubscribe_rooms drops them.
    eid = send(alice, mine).body["event_id"]
    inc = ss(alice, {}, pos=body["pos"])
    assert [e["event_id"] for e in inc["rooms"][mine]["timeline"]] == [eid]
    send(alice, mine)
    dropped = ss(alice, {"unsubscribe_rooms": [mine]}, pos=inc["pos"])
    assert dropped["rooms"] == {}
    r = alice.request("POST", SS, {"room_subscriptions": {"not-a-room": sub}})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"


def test_to_device_delivered_once(client, server):
    alice = new_device(client)
    bob = new_device(client)
    msg = {bob.user_id: {bob.device_id: {"n": 1}}}
    r = alice.request("PUT", f"{V3}/sendToDevice/m.room.encrypted/{uuid.uuid4().hex}",
                      {"messages": msg})  # fmt: skip
    assert r.status == 200
    ext = {"extensions": {"to_device": {"enabled": True}}}
    first = ss(bob, ext)
    td = first["extensions"]["to_device"]
    assert [e["content"] for e in td["events"]] == [{"n": 1}]
    # Not acknowledged: asked again without since, delivered again.
    assert ss(bob, ext)["extensions"]["to_device"]["events"] == td["events"]
    ack = {"extensions": {"to_device": {"enabled": True, "since": td["next_batch"]}}}
    second = ss(bob, ack)
    assert second["extensions"]["to_device"]["events"] == []
    wait_writes(server)
    row = server.hs.store.db.read_one(
        "SELECT COUNT(*) FROM device_inbox WHERE user_id = ? AND device_id = ?",
        (bob.user_id, bob.device_id),
    )
    assert row[0] == 0
    bad = {"extensions": {"to_device": {"enabled": True, "since": "s1_0"}}}
    assert bob.request("POST", SS, bad).status == 400


def test_e2ee_counts_and_device_lists(client):
    alice = new_device(client, otks=3)
    body = ss(alice, {"extensions": {"e2ee": {"enabled": True}}})
    e2ee = body["extensions"]["e2ee"]
    assert e2ee["device_one_time_keys_count"] == {"signed_curve25519": 3}
    assert e2ee["device_unused_fallback_key_types"] == []
    bob = new_device(client)
    room_id = create(alice, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    inc = ss(alice, {"extensions": {"e2ee": {"enabled": True}}}, pos=body["pos"])
    assert bob.user_id in inc["extensions"]["e2ee"]["device_lists"]["changed"]


def test_account_data_global_and_room(alice):
    room_id = create(alice)
    ext = {"extensions": {"account_data": {"enabled": True}}, **all_rooms()}
    first = ss(alice, ext)
    assert any(e["type"] == "m.push_rules" for e in first["extensions"]["account_data"]["global"])
    alice.request("PUT", f"{V3}/user/{alice.user_id}/account_data/org.example.g", {"a": 1})
    alice.request("PUT", f"{V3}/user/{alice.user_id}/rooms/{room_id}/account_data/org.example.r",
                  {"b": 2})  # fmt: skip
    inc = ss(alice, ext, pos=first["pos"])
    ad = inc["extensions"]["account_data"]
    assert [(e["type"], e["content"]) for e in ad["global"]] == [("org.example.g", {"a": 1})]
    assert ad["rooms"] == {room_id: [{"type": "org.example.r", "content": {"b": 2}}]}


@pytest.mark.parametrize(
    "body",
    [
        {"lists": []},
        {"lists": {"a": {"ranges": [[5, 1]]}}},
        {"lists": {"a": {"ranges": [[0]]}}},
        {"lists": {"a": {"ranges": [["0", 1]]}}},
        {"lists": {"a": {"timeline_limit": "10"}}},
        {"lists": {"a": {"timeline_limit": -1}}},
        {"lists": {"a": {"required_state": [["m.room.name"]]}}},
        {"lists": {"a": {"filters": {"is_dm": "yes"}}}},
        {"lists": {"a": {"filters": {"room_types": "m.space"}}}},
        {"conn_id": 5},
        {"conn_id": "x" * 1000},
        {"room_subscriptions": []},
        {"extensions": {"e2ee": {"enabled": "true"}}},
        {"lists": {f"l{i}": {} for i in range(101)}},
        {"unsubscribe_rooms": "!a:b"},
    ],
)
def test_bad_bodies(alice, body):
    r = alice.request("POST", SS, body)
    assert r.status == 400, r.body
    assert r.body["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM")


def test_bad_and_unknown_pos(alice):
    for pos in ("nope", "99999", "1" * 40, "-1"):
        r = alice.request("POST", SS, all_rooms(), query={"pos": pos})
        assert r.status == 400 and r.body["errcode"] == "M_UNKNOWN_POS", (pos, r.body)
    first = ss(alice, all_rooms())
    # A pos of another connection is unknown on this one.
    r = alice.request("POST", SS, {"conn_id": "other", **all_rooms()}, query={"pos": first["pos"]})
    assert r.status == 400 and r.body["errcode"] == "M_UNKNOWN_POS"
    assert ss(alice, all_rooms(), pos=first["pos"])["lists"]["all"]["count"] == 0
    r = alice.request("POST", SS, all_rooms(), query={"timeout": "abc"})
    assert r.status == 400


def test_invite_then_join_then_leave(alice, bob):
    room_id = create(bob, preset="private_chat", name="Later")
    assert bob.request("POST", f"{V3}/rooms/{room_id}/invite",
                       {"user_id": alice.user_id}).status == 200  # fmt: skip
    req = all_rooms(limit=5, required_state=[["m.room.name", ""]])
    first = ss(alice, req)
    assert "invite_state" in first["rooms"][room_id]
    assert alice.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    joined = ss(alice, req, pos=first["pos"])
    room = joined["rooms"][room_id]
    # Joined since it was an invite: sent whole (initial, its state), not as a delta.
    assert room["initial"] is True and room["name"] == "Later"
    assert [e["type"] for e in room["required_state"]] == ["m.room.name"]
    assert alice.request("POST", f"{V3}/rooms/{room_id}/leave", {}).status == 200
    left = ss(alice, req, pos=joined["pos"])
    assert left["lists"]["all"]["count"] == 0
    events = left["rooms"][room_id]["timeline"]
    assert events[-1]["type"] == "m.room.member"
    assert events[-1]["content"]["membership"] == "leave"
    # Sent once: nothing more of it afterwards.
    send(bob, room_id)
    assert room_id not in ss(alice, req, pos=left["pos"])["rooms"]


def test_typing_and_receipts(alice, bob):
    room_id = create(alice, preset="public_chat")
    other = create(alice, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    eid = send(bob, room_id).body["event_id"]
    req = {
        **all_rooms(),
        "extensions": {"typing": {"enabled": True}, "receipts": {"enabled": True}},
    }
    first = ss(alice, req)
    assert first["extensions"]["typing"] == {"rooms": {}}
    r = bob.request("POST", f"{V3}/rooms/{room_id}/receipt/m.read/{eid}", {})
    assert r.status == 200
    r = bob.request("PUT", f"{V3}/rooms/{room_id}/typing/{bob.user_id}",
                    {"typing": True, "timeout": 30000})  # fmt: skip
    assert r.status == 200
    inc = ss(alice, req, pos=first["pos"], timeout=5000)
    typing = inc["extensions"]["typing"]["rooms"]
    assert typing == {room_id: {"type": "m.typing", "content": {"user_ids": [bob.user_id]}}}
    receipts = inc["extensions"]["receipts"]["rooms"]
    assert list(receipts) == [room_id]
    assert receipts[room_id]["type"] == "m.receipt"
    assert bob.user_id in receipts[room_id]["content"][eid]["m.read"]
    assert other not in receipts
    # Already sent: not again.
    again = ss(alice, req, pos=inc["pos"])
    assert again["extensions"]["typing"]["rooms"] == {}
    assert again["extensions"]["receipts"]["rooms"] == {}
    # A room new to the connection gets its current typing and receipts.
    fresh = ss(alice, {**req, "conn_id": "second"})
    assert fresh["extensions"]["typing"]["rooms"][room_id]["content"]["user_ids"] == [bob.user_id]
    assert eid in fresh["extensions"]["receipts"]["rooms"][room_id]["content"]


def test_heroes_avatar_lazy_members_and_timeline_limit_zero(alice, bob):
    unnamed = create(alice, preset="public_chat")
    r = alice.request("PUT", f"{V3}/rooms/{unnamed}/state/m.room.avatar/", {"url": "mxc://x/y"})
    assert r.status == 200
    assert bob.request("PUT", f"{V3}/profile/{bob.user_id}/displayname",
                       {"displayname": "Bobby"}).status == 200  # fmt: skip
    first = ss(alice, all_rooms(limit=0, required_state=[["m.room.member", "$LAZY"]]))
    room = first["rooms"][unnamed]
    assert "name" not in room and room["avatar"] == "mxc://x/y"
    assert "heroes" not in room  # alone in it: nobody to name it after
    assert bob.request("POST", f"{V3}/join/{unnamed}", {}).status == 200
    send(bob, unnamed)
    # timeline_limit 0: the room still comes back when something happened (limited, counts).
    zero = ss(alice, all_rooms(limit=0), pos=first["pos"])
    room = zero["rooms"][unnamed]
    assert room["timeline"] == [] and room["limited"] is True
    assert room["heroes"] == [{"user_id": bob.user_id, "displayname": "Bobby"}]
    assert room["joined_count"] == 2
    # $LAZY on an incremental response: the member event of a sender of this timeline, even
    # though it did not change since pos.
    send(bob, unnamed)
    lazy = ss(alice, all_rooms(limit=1, required_state=[["m.room.member", "$LAZY"]]),
              pos=zero["pos"])  # fmt: skip
    keys = {e["state_key"] for e in lazy["rooms"][unnamed]["required_state"]}
    assert bob.user_id in keys


def test_versions_advertises_simplified_sliding_sync(server):
    r = Client(server.base_url).request("GET", "/_matrix/client/versions")
    assert r.body["unstable_features"]["org.matrix.simplified_msc3575"] is True
    # Not without a token.
    assert Client(server.base_url).request("POST", SS, {}).status == 401


def test_connections_per_device_are_bounded(alice):
    from bastion.services import sliding_sync as module

    first = ss(alice, {"conn_id": "c0"})
    for i in range(1, module.CONNECTIONS_PER_DEVICE + 1):
        ss(alice, {"conn_id": f"c{i}"})
    # The device's oldest connection was dropped: its pos is unknown now (start afresh).
    r = alice.request("POST", SS, {"conn_id": "c0"}, query={"pos": first["pos"]})
    assert r.status == 400 and r.body["errcode"] == "M_UNKNOWN_POS"
    latest = ss(alice, {"conn_id": "c1"})
    assert ss(alice, {"conn_id": "c1"}, pos=latest["pos"])["rooms"] == {}


def test_timeline_events_carry_their_bundles(alice, bob):
    """Timeline events come with their bundled aggregations, as in /sync (C-S API
    "Aggregations of child events"), on the first request and incremental ones."""
    room = create(alice, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{room}", {}).status == 200
    text = {"msgtype": "m.text", "body": "root"}
    root = send(alice, room, text).body["event_id"]
    reply = {"msgtype": "m.text", "body": "one",
             "m.relates_to": {"rel_type": "m.thread", "event_id": root}}  # fmt: skip
    one = send(bob, room, reply).body["event_id"]
    edited = {"msgtype": "m.text", "body": "* root!", "m.new_content": {**text, "body": "root!"},
              "m.relates_to": {"rel_type": "m.replace", "event_id": root}}  # fmt: skip
    edit = send(alice, room, edited).body["event_id"]
    first = ss(bob, all_rooms(limit=10))
    events = {e["event_id"]: e for e in first["rooms"][room]["timeline"]}
    bundle = events[root]["unsigned"]["m.relations"]
    assert bundle["m.thread"]["count"] == 1
    assert bundle["m.thread"]["latest_event"]["event_id"] == one
    assert bundle["m.thread"]["current_user_participated"] is True
    assert bundle["m.replace"]["event_id"] == edit and events[root]["content"] == text
    assert "m.relations" not in events[edit]["unsigned"]
    # incremental: a new root and its thread in one batch
    other = send(alice, room, {**text, "body": "second root"}).body["event_id"]
    send(alice, room, {**reply, "m.relates_to": {"rel_type": "m.thread", "event_id": other}})
    inc = ss(bob, all_rooms(limit=10), pos=first["pos"])
    events = {e["event_id"]: e for e in inc["rooms"][room]["timeline"]}
    assert list(events)[0] == other
    bundle = events[other]["unsigned"]["m.relations"]
    assert bundle["m.thread"]["count"] == 1
    assert bundle["m.thread"]["current_user_participated"] is False
