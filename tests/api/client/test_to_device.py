"""Send-to-device messaging and its /sync delivery (C-S API "Send-to-Device messaging"), and the
E2EE device-list extensions of /sync that follow room membership."""

from __future__ import annotations

import threading
import time
import uuid

from tests.support.e2ee import V3, Device, new_device, sync_direct, wait_writes
from tests.support.guard import exempt


def send(dev, messages: dict, event_type: str = "m.room.encrypted", txn: str | None = None):
    txn = txn or uuid.uuid4().hex
    return dev.request("PUT", f"{V3}/sendToDevice/{event_type}/{txn}", {"messages": messages})


def sync(dev, since: str | None = None, timeout: int = 0):
    q = {"timeout": str(timeout)}
    if since:
        q["since"] = since
    r = dev.request("GET", f"{V3}/sync", query=q)
    assert r.status == 200, r.body
    return r.body


def inbox_count(server, dev) -> int:
    row = server.hs.store.db.read_one(
        "SELECT COUNT(*) FROM device_inbox WHERE user_id = ? AND device_id = ?",
        (dev.user_id, dev.device_id),
    )
    return row[0]


def test_delivered_in_order_and_deleted_on_next_sync(client, server):
    alice = new_device(client)
    bob = new_device(client)
    for i in range(3):
        r = send(alice, {bob.user_id: {bob.device_id: {"n": i}}})
        assert r.status == 200 and r.body == {}, r.body
    first = sync(bob)
    events = first["to_device"]["events"]
    assert [e["content"]["n"] for e in events] == [0, 1, 2]
    assert all(e["sender"] == alice.user_id and e["type"] == "m.room.encrypted" for e in events)
    # Not acknowledged yet: an initial sync again gets them again.
    again = sync(bob)
    assert [e["content"]["n"] for e in again["to_device"]["events"]] == [0, 1, 2]
    # A sync with the later `since` acknowledges them: never delivered again, then deleted.
    nxt = sync(bob, first["next_batch"])
    assert nxt["to_device"]["events"] == []
    wait_writes(server)
    assert inbox_count(server, bob) == 0
    send(alice, {bob.user_id: {bob.device_id: {"n": 3}}})
    later = sync(bob, nxt["next_batch"])
    assert [e["content"]["n"] for e in later["to_device"]["events"]] == [3]
    assert later["next_batch"] != nxt["next_batch"]
    # Retrying the same since (a lost response) gets the same messages again.
    retry = sync(bob, nxt["next_batch"])
    assert [e["content"]["n"] for e in retry["to_device"]["events"]] == [3]


def test_star_unknowns_and_idempotent_txn(client, server):
    alice = new_device(client)
    password = "correct horse battery"
    bob1 = Device(client.register(password=password))
    r = client.request(
        "POST",
        f"{V3}/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": bob1.user_id},
            "password": password,
        },
        token=None,
    )
    bob2 = Device(type(client)(client.base_url, r.body["access_token"]))
    bob2.user_id, bob2.device_id = bob1.user_id, r.body["device_id"]
    msgs = {
        bob1.user_id: {"*": {"to": "all"}},
        "@ghost:localhost": {"X": {"a": 1}},
        "@carol:remote.example": {"X": {"a": 1}},
        alice.user_id: {"NOSUCHDEVICE": {"a": 1}},
    }
    assert send(alice, msgs, txn="t1").status == 200
    assert send(alice, msgs, txn="t1").status == 200  # the same transaction: no duplicate
    for dev in (bob1, bob2):
        events = sync(dev)["to_device"]["events"]
        assert [e["content"] for e in events] == [{"to": "all"}], events
    assert sync(alice)["to_device"]["events"] == []
    # Another device of the same user may reuse the transaction ID.
    assert send(bob2, {alice.user_id: {alice.device_id: {"x": 1}}}, txn="t1").status == 200
    assert len(sync(alice)["to_device"]["events"]) == 1


def test_more_than_a_hundred_pending(client, server):
    alice = new_device(client)
    bob = new_device(client)
    exempt(server, alice.user_id)  # 150 sends at once: a scale test, bulk by design
    messages = {bob.user_id: {bob.device_id: {}}}
    for i in range(150):
        messages[bob.user_id][bob.device_id] = {"n": i}
        assert send(alice, messages).status == 200
    first = sync(bob)
    got = [e["content"]["n"] for e in first["to_device"]["events"]]
    assert got == list(range(100))
    wait_writes(server)
    second = sync(bob, first["next_batch"], timeout=1000)
    assert second["next_batch"] != first["next_batch"]
    got2 = [e["content"]["n"] for e in second["to_device"]["events"]]
    assert got2 == list(range(100, 150))
    third = sync(bob, second["next_batch"])
    assert third["to_device"]["events"] == []
    wait_writes(server)
    assert inbox_count(server, bob) == 0


def test_long_poll_woken_by_message(client):
    alice = new_device(client)
    bob = new_device(client)
    since = sync(bob)["next_batch"]
    out: dict = {}

    def poll():
        out["body"] = sync(bob, since, timeout=10000)

    t = threading.Thread(target=poll)
    start = time.monotonic()
    t.start()
    time.sleep(0.3)
    send(alice, {bob.user_id: {bob.device_id: {"wake": True}}})
    t.join(15)
    assert time.monotonic() - start < 5
    assert [e["content"] for e in out["body"]["to_device"]["events"]] == [{"wake": True}]


def test_bad_input(client):
    alice = new_device(client)
    path = f"{V3}/sendToDevice/m.test/txn1"
    for body, errcode in (
        ({}, "M_BAD_JSON"),
        ({"messages": []}, "M_BAD_JSON"),
        ({"messages": {alice.user_id: []}}, "M_BAD_JSON"),
        ({"messages": {alice.user_id: {"D": "text"}}}, "M_BAD_JSON"),
        ({"messages": {"not-a-user": {"D": {}}}}, "M_INVALID_PARAM"),
        ({"messages": {alice.user_id: {"D": {"x": "y" * 70000}}}}, "M_TOO_LARGE"),
    ):
        r = alice.request("PUT", path, body)
        assert r.status in (400, 413), (body, r.body)
        assert r.body["errcode"] == errcode, (body, r.body)
    r = alice.request("PUT", path, raw=b"nope")
    assert r.status == 400 and r.body["errcode"] == "M_NOT_JSON"
    r = client.request("PUT", path, {"messages": {}}, token=None)
    assert r.status == 401


def _room_with(creator, *others):
    r = creator.request("POST", f"{V3}/createRoom", {"preset": "private_chat"})
    assert r.status == 200, r.body
    room_id = r.body["room_id"]
    for o in others:
        r = creator.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": o.user_id})
        assert r.status == 200, r.body
        r = o.request("POST", f"{V3}/rooms/{room_id}/join", {})
        assert r.status == 200, r.body
    return room_id


def test_device_lists_follow_rooms(client):
    alice = new_device(client)
    bob = Device(client.register())
    carol = new_device(client)
    stranger = Device(client.register())
    room_id = _room_with(alice, bob)
    since = sync(alice)["next_batch"]
    # Bob uploads keys: Alice (sharing a room) hears of it; the stranger does not.
    s_since = sync(stranger)["next_batch"]
    bob.upload(device_keys=bob.device_keys())
    body = sync(alice, since)
    assert bob.user_id in body["device_lists"]["changed"]
    assert body["device_lists"]["left"] == []
    r = alice.request("GET", f"{V3}/keys/changes", query={"from": since, "to": body["next_batch"]})
    assert bob.user_id in r.body["changed"]
    assert bob.user_id not in sync(stranger, s_since)["device_lists"]["changed"]
    since = body["next_batch"]
    # Carol joins: she newly shares a room with Alice, and Carol learns of Alice and Bob.
    c_since = sync(carol)["next_batch"]
    r = alice.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": carol.user_id})
    assert r.status == 200
    assert carol.request("POST", f"{V3}/rooms/{room_id}/join", {}).status == 200
    body = sync(alice, since)
    assert carol.user_id in body["device_lists"]["changed"]
    since = body["next_batch"]
    c_body = sync(carol, c_since)
    assert {alice.user_id, bob.user_id} <= set(c_body["device_lists"]["changed"])
    # Bob leaves: Alice no longer shares any room with him.
    assert bob.request("POST", f"{V3}/rooms/{room_id}/leave", {}).status == 200
    body = sync(alice, since)
    assert body["device_lists"]["left"] == [bob.user_id]
    assert bob.user_id not in body["device_lists"]["changed"]
    r = alice.request("GET", f"{V3}/keys/changes", query={"from": since, "to": body["next_batch"]})
    assert r.body["left"] == [bob.user_id]


def test_sync_always_carries_key_counts(client):
    dev = new_device(client, otks=4)
    first = sync(dev)
    assert first["device_one_time_keys_count"] == {"signed_curve25519": 4}
    assert first["device_unused_fallback_key_types"] == []
    second = sync(dev, first["next_batch"])
    assert second["device_one_time_keys_count"] == {"signed_curve25519": 4}
    assert second["device_unused_fallback_key_types"] == []


def test_long_poll_woken_by_device_list_change(client):
    alice = new_device(client)
    bob = Device(client.register())
    _room_with(alice, bob)
    since = sync(alice)["next_batch"]
    out: dict = {}

    def poll():
        out["body"] = sync(alice, since, timeout=10000)

    t = threading.Thread(target=poll)
    start = time.monotonic()
    t.start()
    time.sleep(0.3)
    assert bob.upload(device_keys=bob.device_keys()).status == 200
    t.join(15)
    assert time.monotonic() - start < 5
    assert bob.user_id in out["body"]["device_lists"]["changed"]


def test_held_back_messages_wait_for_a_new_position(client, server):
    alice = new_device(client)
    bob = new_device(client)
    exempt(server, alice.user_id)  # 105 sends at once: over a sync's 100, bulk by design
    for i in range(105):
        send(alice, {bob.user_id: {bob.device_id: {"n": i}}})
    part, token = sync_direct(server, bob.user_id, bob.device_id)
    assert len(part["to_device"]["events"]) == 100
    wait_writes(server)
    # A response whose next_batch would equal `since` carries none of the rest...
    part, _ = sync_direct(server, bob.user_id, bob.device_id, token, upto=token)
    assert part["to_device"]["events"] == []
    # ...the position the full response took lets the next one carry them.
    part, token2 = sync_direct(server, bob.user_id, bob.device_id, token)
    assert token2 != token
    assert [e["content"]["n"] for e in part["to_device"]["events"]] == list(range(100, 105))
