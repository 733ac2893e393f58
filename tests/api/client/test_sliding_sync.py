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


def test_space_and_tag_filters(alice, bob):
    """``spaces``: the children a space the user is joined to names (a child with no ``via`` is
    none; another user's space reveals nothing); ``tags`` and ``not_tags`` (which wins)."""
    space = create(alice, creation_content={"type": "m.space"})
    a, b, c = (create(alice, preset="public_chat", name=n) for n in "ABC")
    for child, via in ((a, ["localhost"]), (b, ["localhost"]), (c, [])):
        r = alice.request("PUT", f"{V3}/rooms/{space}/state/m.space.child/{child}", {"via": via})
        assert r.status == 200, r.body
    assert set(ss(alice, all_rooms(spaces=[space]))["rooms"]) == {a, b}
    assert ss(alice, all_rooms(spaces=["!unknown:localhost"]))["lists"]["all"]["count"] == 0
    # bob's own space names alice's room a; bob is not in a, and alice is not in bob's space.
    bobs = create(bob, creation_content={"type": "m.space"})
    assert bob.request("PUT", f"{V3}/rooms/{bobs}/state/m.space.child/{a}",
                       {"via": ["localhost"]}).status == 200  # fmt: skip
    assert ss(alice, all_rooms(spaces=[bobs]))["rooms"] == {}
    # Tags.
    base = f"{V3}/user/{alice.user_id}/rooms"
    for room, tag in ((a, "m.favourite"), (b, "m.lowpriority"), (c, "u.work"), (c, "m.favourite")):
        r = alice.request("PUT", f"{base}/{room}/tags/{tag}", {})
        assert r.status == 200, r.body
    assert set(ss(alice, all_rooms(tags=["m.favourite"]))["rooms"]) == {a, c}
    assert set(ss(alice, all_rooms(tags=["m.favourite"], not_tags=["u.work"]))["rooms"]) == {a}
    untagged = ss(alice, all_rooms(not_tags=["m.favourite", "m.lowpriority"]))["rooms"]
    assert set(untagged) == {space}
    # Junk is refused as a Matrix error.
    for bad in ({"spaces": "x"}, {"tags": [1]}, {"not_tags": ["t"] * 101}):
        body = ss(alice, all_rooms(**bad), status=400)
        assert body["errcode"] == "M_BAD_JSON"


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
        {"extensions": {"to_device": {"enabled": True, "limit": "5"}}},
        {"extensions": {"to_device": {"enabled": True, "limit": -1}}},
        {"extensions": {"to_device": {"enabled": True, "since": 5}}},
        {"extensions": {"receipts": {"enabled": True, "lists": "all"}}},
        {"extensions": {"typing": {"enabled": True, "rooms": [1]}}},
        {"extensions": {"account_data": {"enabled": True, "lists": ["x"] * 101}}},
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


# -- extensions: to-device, e2ee -------------------------------------------------------------


def to_device(sender, recipient, content, etype="org.example.test"):
    messages = {recipient.user_id: {recipient.device_id: content}}
    r = sender.request("PUT", f"{V3}/sendToDevice/{etype}/{uuid.uuid4().hex}",
                       {"messages": messages})  # fmt: skip
    assert r.status == 200, r.body


def to_device_ext(since=None, **extra):
    spec = {"enabled": True, **extra}
    if since is not None:
        spec["since"] = since
    return {"extensions": {"to_device": spec}}


def inbox_size(server, device):
    wait_writes(server)
    row = server.hs.store.db.read_one(
        "SELECT COUNT(*) FROM device_inbox WHERE user_id = ? AND device_id = ?",
        (device.user_id, device.device_id),
    )
    return row[0]


def test_to_device_limit_next_batch_and_acknowledgement(client, server):
    alice, bob = new_device(client), new_device(client)
    for n in range(5):
        to_device(alice, bob, {"n": n})
    first = ss(bob, to_device_ext(limit=2))["extensions"]["to_device"]
    assert [e["content"]["n"] for e in first["events"]] == [0, 1]
    assert first["events"][0]["sender"] == alice.user_id
    # Not acknowledged yet (the same since): the same batch again, nothing deleted.
    again = ss(bob, to_device_ext(limit=2))["extensions"]["to_device"]
    assert again == first
    assert inbox_size(server, bob) == 5
    # Each next_batch acknowledges its batch and the next one follows at once.
    got, sizes, since = [], [], first["next_batch"]
    for _ in range(3):
        td = ss(bob, to_device_ext(since, limit=2))["extensions"]["to_device"]
        got += [e["content"]["n"] for e in td["events"]]
        sizes.append(len(td["events"]))
        since = td["next_batch"]
    assert got == [2, 3, 4] and sizes == [2, 1, 0]
    assert inbox_size(server, bob) == 0
    # The limit is capped at 100 and a zero one still makes progress.
    for n in range(3):
        to_device(alice, bob, {"n": n})
    td = ss(bob, to_device_ext(since, limit=0))["extensions"]["to_device"]
    assert [e["content"]["n"] for e in td["events"]] == [0]
    td = ss(bob, to_device_ext(td["next_batch"], limit=10**9))["extensions"]["to_device"]
    assert [e["content"]["n"] for e in td["events"]] == [1, 2]


def test_to_device_since_from_the_future_deletes_nothing(client, server):
    alice, bob = new_device(client), new_device(client)
    to_device(alice, bob, {"n": 1})
    future = str(server.hs.store.current_pos + 1000)
    td = ss(bob, to_device_ext(future))["extensions"]["to_device"]
    assert td == {"next_batch": future, "events": []}
    assert inbox_size(server, bob) == 1
    td = ss(bob, to_device_ext())["extensions"]["to_device"]
    assert [e["content"] for e in td["events"]] == [{"n": 1}]


def long_poll(c, body, pos, timeout=10000):
    """Start a long-polled request in a thread; returns (thread, result holder)."""
    out: dict = {}

    def poll():
        t0 = time.monotonic()
        out["body"] = ss(c, body, pos=pos, timeout=timeout)
        out["done"] = time.monotonic()
        out["took"] = out["done"] - t0

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.3)
    return th, out


def test_to_device_message_wakes_the_long_poll(client):
    alice, bob = new_device(client), new_device(client)
    first = ss(bob, to_device_ext())
    since = first["extensions"]["to_device"]["next_batch"]
    th, out = long_poll(bob, to_device_ext(since), first["pos"])
    t_send = time.monotonic()
    to_device(alice, bob, {"hello": "bob"})
    th.join(15)
    assert [e["content"] for e in out["body"]["extensions"]["to_device"]["events"]] == [
        {"hello": "bob"}
    ]
    assert out["done"] - t_send < 2.0


def test_e2ee_device_lists_changed_wakes_and_left(client, server):
    alice, bob = new_device(client), new_device(client)
    room_id = create(alice, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    ext = {"extensions": {"e2ee": {"enabled": True}}}
    first = ss(alice, ext)
    assert "device_lists" not in first["extensions"]["e2ee"]  # nothing to compare with yet
    # bob signs in on a new device: alice's long poll is woken with bob's device list changed.
    th, out = long_poll(alice, ext, first["pos"])
    t_login = time.monotonic()
    r = Client(server.base_url).request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": bob.user_id},
        "password": "correct horse battery",
    })  # fmt: skip
    assert r.status == 200, r.body
    th.join(15)
    lists = out["body"]["extensions"]["e2ee"]["device_lists"]
    assert lists == {"changed": [bob.user_id], "left": []}
    assert out["done"] - t_login < 2.0
    # bob leaves the only room they shared: left.
    assert bob.request("POST", f"{V3}/rooms/{room_id}/leave", {}).status == 200
    gone = ss(alice, ext, pos=out["body"]["pos"])
    assert gone["extensions"]["e2ee"]["device_lists"] == {"changed": [], "left": [bob.user_id]}


def test_e2ee_one_time_key_counts_and_fallback_types(client):
    alice = new_device(client, otks=2, fallback=True)
    bob = new_device(client)
    ext = {"extensions": {"e2ee": {"enabled": True}}}
    first = ss(alice, ext)["extensions"]["e2ee"]
    assert first["device_one_time_keys_count"] == {"signed_curve25519": 2}
    assert first["device_unused_fallback_key_types"] == ["signed_curve25519"]
    for _ in range(3):  # two one-time keys, then the fallback key
        r = bob.request("POST", f"{V3}/keys/claim", {
            "one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}},
        })  # fmt: skip
        assert r.body["one_time_keys"][alice.user_id][alice.device_id], r.body
    after = ss(alice, ext)["extensions"]["e2ee"]
    # Zero is said, not left out (a missing count means "unchanged" to MSC4186 clients).
    assert after["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert after["device_unused_fallback_key_types"] == []


# -- extensions: which rooms, and what a room is owed -----------------------------------------


def put_room_data(c, room_id, etype, content):
    r = c.request("PUT", f"{V3}/user/{c.user_id}/rooms/{room_id}/account_data/{etype}", content)
    assert r.status == 200, r.body


def test_room_account_data_only_for_rooms_in_view_and_owed_on_return(alice):
    older = create(alice, name="older")
    newer = create(alice, name="newer")
    put_room_data(alice, older, "org.example.a", {"v": 1})
    put_room_data(alice, newer, "org.example.a", {"v": 2})
    ext = {"account_data": {"enabled": True}}
    top = {**all_rooms(ranges=((0, 0),)), "extensions": ext}
    first = ss(alice, top)
    assert list(first["rooms"]) == [newer]
    # Only the room in the window: a client does not know the other room yet.
    assert first["extensions"]["account_data"]["rooms"] == {
        newer: [{"type": "org.example.a", "content": {"v": 2}}]
    }
    # Changed while outside the window: not sent now, but owed.
    put_room_data(alice, older, "org.example.b", {"v": 3})
    put_room_data(alice, newer, "org.example.b", {"v": 4})
    inc = ss(alice, top, pos=first["pos"])
    assert inc["extensions"]["account_data"]["rooms"] == {
        newer: [{"type": "org.example.b", "content": {"v": 4}}]
    }
    # The window grows: the other room comes with all of its account data (never sent).
    both = {**all_rooms(ranges=((0, 1),)), "extensions": ext}
    grown = ss(alice, both, pos=inc["pos"])
    assert grown["extensions"]["account_data"]["rooms"] == {
        older: [
            {"type": "org.example.a", "content": {"v": 1}},
            {"type": "org.example.b", "content": {"v": 3}},
        ]
    }
    # Shrinks again; a change in the room outside is owed and sent (alone) when it returns.
    shrunk = ss(alice, top, pos=grown["pos"])
    assert shrunk["extensions"]["account_data"]["rooms"] == {}
    put_room_data(alice, older, "org.example.c", {"v": 5})
    outside = ss(alice, top, pos=shrunk["pos"])
    assert outside["extensions"]["account_data"]["rooms"] == {}
    back = ss(alice, both, pos=outside["pos"])
    assert back["extensions"]["account_data"]["rooms"] == {
        older: [{"type": "org.example.c", "content": {"v": 5}}]
    }
    # A room subscription covers its room too.
    sub = ss(alice, {"room_subscriptions": {older: {"timeline_limit": 0}}, "extensions": ext})
    assert list(sub["extensions"]["account_data"]["rooms"]) == [older]


def test_an_extension_left_out_of_a_request_sends_its_rooms_whole_when_back(alice):
    room_id = create(alice)
    put_room_data(alice, room_id, "org.example.a", {"v": 1})
    on = {**all_rooms(), "extensions": {"account_data": {"enabled": True}}}
    first = ss(alice, on)
    assert list(first["extensions"]["account_data"]["rooms"]) == [room_id]
    off = ss(alice, all_rooms(), pos=first["pos"])
    assert "account_data" not in off["extensions"]
    put_room_data(alice, room_id, "org.example.b", {"v": 2})  # while it is off
    off = ss(alice, all_rooms(), pos=off["pos"])
    back = ss(alice, on, pos=off["pos"])
    assert back["extensions"]["account_data"]["rooms"] == {
        room_id: [
            {"type": "org.example.a", "content": {"v": 1}},
            {"type": "org.example.b", "content": {"v": 2}},
        ]
    }


def receipt(c, room_id, event_id, rtype="m.read"):
    r = c.request("POST", f"{V3}/rooms/{room_id}/receipt/{rtype}/{event_id}", {})
    assert r.status == 200, r.body


def test_receipts_of_a_new_room_are_those_of_its_timeline_and_own(client, alice, bob):
    carol = client.register()
    room_id = create(alice, preset="public_chat")
    for c in (bob, carol):
        assert c.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    old = send(alice, room_id).body["event_id"]
    receipt(bob, room_id, old)
    receipt(alice, room_id, old)
    latest = send(bob, room_id).body["event_id"]
    receipt(carol, room_id, latest)
    req = {**all_rooms(limit=1), "extensions": {"receipts": {"enabled": True}}}
    first = ss(alice, req)
    assert [e["event_id"] for e in first["rooms"][room_id]["timeline"]] == [latest]
    content = first["extensions"]["receipts"]["rooms"][room_id]["content"]
    # The receipts on the timeline's event and alice's own; not bob's on the older event
    # (MSC3960: a room's receipts scale with what is sent, not with its members).
    assert set(content) == {old, latest}
    assert set(content[old]["m.read"]) == {alice.user_id}
    assert carol.user_id in content[latest]["m.read"]
    # Afterwards: what changed.
    receipt(bob, room_id, latest)
    inc = ss(alice, req, pos=first["pos"])
    content = inc["extensions"]["receipts"]["rooms"][room_id]["content"]
    assert list(content) == [latest] and list(content[latest]["m.read"]) == [bob.user_id]


def two_rooms_with(alice, bob):
    """Two rooms alice and bob share; the second is the more recently active."""
    rooms = []
    for name in ("older", "newer"):
        room_id = create(alice, preset="public_chat", name=name)
        assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
        rooms.append(room_id)
    return rooms


def test_receipts_owed_to_a_room_outside_the_window(alice, bob):
    older, newer = two_rooms_with(alice, bob)
    event_id = send(bob, older).body["event_id"]
    send(bob, newer)
    ext = {"receipts": {"enabled": True}}
    both = {**all_rooms(ranges=((0, 1),)), "extensions": ext}
    top = {**all_rooms(ranges=((0, 0),)), "extensions": ext}
    first = ss(alice, both)
    assert set(first["rooms"]) == {older, newer}
    shrunk = ss(alice, top, pos=first["pos"])
    receipt(alice, older, event_id)  # while the room is outside the window
    outside = ss(alice, top, pos=shrunk["pos"])
    assert outside["extensions"]["receipts"]["rooms"] == {}
    back = ss(alice, both, pos=outside["pos"])
    content = back["extensions"]["receipts"]["rooms"][older]["content"]
    assert list(content[event_id]["m.read"]) == [alice.user_id]
    again = ss(alice, both, pos=back["pos"])
    assert again["extensions"]["receipts"]["rooms"] == {}


def typing(c, room_id, on):
    r = c.request("PUT", f"{V3}/rooms/{room_id}/typing/{c.user_id}",
                  {"typing": on, "timeout": 30000})  # fmt: skip
    assert r.status == 200, r.body


def test_typing_of_a_room_coming_into_view_is_who_types_now(alice, bob):
    older, newer = two_rooms_with(alice, bob)
    ext = {"typing": {"enabled": True}}
    both = {**all_rooms(ranges=((0, 1),)), "extensions": ext}
    top = {**all_rooms(ranges=((0, 0),)), "extensions": ext}
    first = ss(alice, top)
    typing(bob, older, True)
    inc = ss(alice, top, pos=first["pos"])
    assert inc["extensions"]["typing"]["rooms"] == {}
    grown = ss(alice, both, pos=inc["pos"])
    assert grown["extensions"]["typing"]["rooms"] == {
        older: {"type": "m.typing", "content": {"user_ids": [bob.user_id]}}
    }
    # bob stops while the room is out of view: when it returns, nobody is typing there.
    shrunk = ss(alice, top, pos=grown["pos"])
    typing(bob, older, False)
    outside = ss(alice, top, pos=shrunk["pos"])
    assert outside["extensions"]["typing"]["rooms"] == {}
    back = ss(alice, both, pos=outside["pos"])
    assert back["extensions"]["typing"]["rooms"] == {
        older: {"type": "m.typing", "content": {"user_ids": []}}
    }


@pytest.mark.parametrize(
    ("scope", "expect"),
    [
        ({}, {"a", "b", "sub"}),
        ({"lists": ["b"], "rooms": []}, {"b"}),
        ({"lists": [], "rooms": ["*"]}, {"sub"}),
        ({"lists": None, "rooms": ["SUB"]}, {"sub"}),
        ({"lists": ["a", "nope"], "rooms": None}, {"a"}),
    ],
)
def test_extension_lists_and_rooms_choose_the_rooms(alice, scope, expect):
    ids = {name: create(alice, name=name) for name in ("sub", "b", "a")}  # "a" most recent
    for room_id in ids.values():
        put_room_data(alice, room_id, "org.example.x", {"v": 1})
    rooms = {k: [ids["sub"] if r == "SUB" else r for r in v] if isinstance(v, list) else v
             for k, v in scope.items()}  # fmt: skip
    body = {
        "lists": {
            "a": {"ranges": [[0, 0]], "timeline_limit": 0},
            "b": {"ranges": [[1, 1]], "timeline_limit": 0},
        },
        "room_subscriptions": {ids["sub"]: {"timeline_limit": 0}},
        "extensions": {"account_data": {"enabled": True, **rooms}},
    }
    got = ss(alice, body)["extensions"]["account_data"]["rooms"]
    assert set(got) == {ids[n] for n in expect}


# -- rooms: updates owed, wider required_state ------------------------------------------------


def test_room_updates_outside_the_window_are_sent_when_it_returns(alice):
    older = create(alice, name="older")
    newer = create(alice, name="newer")
    both = all_rooms(limit=5, ranges=((0, 1),))
    top = all_rooms(limit=5, ranges=((0, 0),))
    first = ss(alice, both)
    assert set(first["rooms"]) == {older, newer}
    missed = send(alice, older).body["event_id"]
    latest = send(alice, newer).body["event_id"]
    # The window shrinks to the newer room in the same response: the older one's message
    # is not sent now...
    inc = ss(alice, top, pos=first["pos"])
    assert list(inc["rooms"]) == [newer]
    assert [e["event_id"] for e in inc["rooms"][newer]["timeline"]] == [latest]
    # ...but when the window grows back it is, though nothing happened since.
    back = ss(alice, both, pos=inc["pos"])
    room = back["rooms"][older]
    assert [e["event_id"] for e in room["timeline"]] == [missed]
    assert "initial" not in room and room["limited"] is False
    assert newer not in back["rooms"]
    assert ss(alice, both, pos=back["pos"])["rooms"] == {}


def test_a_wider_required_state_sends_the_state_it_adds(alice):
    room_id = create(alice, name="Named", topic="Topical")
    first = ss(alice, all_rooms(required_state=[["m.room.name", ""]]))
    assert [e["type"] for e in first["rooms"][room_id]["required_state"]] == ["m.room.name"]
    # Subscribing with more state: the room comes back (not whole) with the added state only.
    sub = {
        **all_rooms(required_state=[["m.room.name", ""]]),
        "room_subscriptions": {room_id: {"timeline_limit": 0,
                                         "required_state": [["m.room.topic", ""]]}},
    }  # fmt: skip
    wider = ss(alice, sub, pos=first["pos"])
    room = wider["rooms"][room_id]
    assert "initial" not in room and room["timeline"] == []
    assert [e["type"] for e in room["required_state"]] == ["m.room.topic"]
    assert ss(alice, sub, pos=wider["pos"])["rooms"] == {}


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


def test_a_larger_timeline_limit_sends_the_latest_events_again(alice):
    """MSC4186 "Changes to timeline_limit": a room already sent with a smaller
    ``timeline_limit`` comes again with its latest events up to the new limit, marked
    ``unstable_expanded_timeline`` (Synapse's name), not ``initial``; once, then as usual."""
    room = create(alice, preset="public_chat")
    create(alice, preset="public_chat")  # another room, its limit unchanged
    text = {"msgtype": "m.text", "body": "x"}
    ids = [send(alice, room, text).body["event_id"] for _ in range(4)]
    first = ss(alice, all_rooms(limit=1))
    assert [e["event_id"] for e in first["rooms"][room]["timeline"]] == ids[-1:]
    sub = {**all_rooms(limit=1), "room_subscriptions": {room: {"timeline_limit": 3}}}
    wider = ss(alice, sub, pos=first["pos"])
    assert list(wider["rooms"]) == [room]  # the quiet room keeps its limit: nothing for it
    got = wider["rooms"][room]
    assert [e["event_id"] for e in got["timeline"]] == ids[-3:]
    assert got["unstable_expanded_timeline"] is True and "initial" not in got
    assert got["limited"] is True
    # The same request again: nothing new.
    assert ss(alice, sub, pos=wider["pos"])["rooms"] == {}
    # A new message: only it, as usual.
    eid = send(alice, room, text).body["event_id"]
    later = ss(alice, sub, pos=wider["pos"])["rooms"]
    assert list(later) == [room]
    assert [e["event_id"] for e in later[room]["timeline"]] == [eid]
    assert "unstable_expanded_timeline" not in later[room]
