"""EDUs between two Bastion servers over TLS (S-S API "EDUs", "Typing Notifications",
"Receipts", "Presence", "Device Management", "Send-to-device messaging", "Server ACLs"): each
handler alone (wrong-origin senders dropped, to-device deduplication on ``message_id``,
device-list resynchronisation on an unknown ``prev_id``, ACLs) and the real flows through the
transaction queue."""

from __future__ import annotations

import time

from tests.support import server_pair
from tests.support.e2ee import new_device
from tests.support.federation import run
from tests.support.harness import Client
from tests.support.peer import on_server
from tests.support.server_pair import (
    V3,
    idle,
    q,
    shared_room,
    sync_until,
    wait_for,
)

pair = server_pair.pair  # the fixture


def edu(srv, edu_type: str, origin: str, content: dict) -> None:
    run(srv, srv.hs.federation.edu_handlers[edu_type](origin, content))


def to_device(c: Client, since: str | None) -> tuple[list[dict], str]:
    query = {"timeout": "0"} | ({"since": since} if since else {})
    r = c.request("GET", f"{V3}/sync", query=query)
    assert r.status == 200, r.body
    return r.body["to_device"]["events"], r.body["next_batch"]


def test_edus_for_users_of_another_server_are_dropped(pair):
    a, b = pair
    alice = Client(a.base_url).register()
    r = alice.request("POST", f"{V3}/createRoom", {})
    room_id = r.body["room_id"]
    _, since = to_device(alice, None)
    store = a.hs.store
    b_name = b.hs.server_name
    # B speaks for alice, a user of A: every EDU is dropped.
    edu(a, "m.typing", b_name, {"room_id": room_id, "user_id": alice.user_id, "typing": True})
    assert on_server(a, lambda: a.hs.typing.typing_users(room_id)) == []
    event_id = on_server(a, lambda: store.get_current_state_ids(room_id))[("m.room.create", "")]
    receipt = {"event_ids": [event_id], "data": {"ts": 1}}
    edu(a, "m.receipt", b_name, {room_id: {"m.read": {alice.user_id: receipt}}})
    assert on_server(a, lambda: store.receipts_for_room(room_id, None, store.current_pos)) == []
    edu(a, "m.presence", b_name, {"push": [
        {"user_id": alice.user_id, "presence": "unavailable", "last_active_ago": 5}
    ]})  # fmt: skip
    assert on_server(a, lambda: a.hs.presence.content(alice.user_id))["presence"] != "unavailable"
    before = store.current_pos
    edu(a, "m.device_list_update", b_name, {
        "user_id": alice.user_id, "device_id": "EVIL", "stream_id": 9, "prev_id": [],
    })  # fmt: skip
    edu(a, "m.signing_key_update", b_name, {"user_id": alice.user_id})
    assert store.current_pos == before  # nothing written
    message = {"sender": alice.user_id, "type": "m.test", "message_id": "m1",
               "messages": {alice.user_id: {"*": {"forged": True}}}}  # fmt: skip
    edu(a, "m.direct_to_device", b_name, message)
    assert to_device(alice, since)[0] == []
    # Malformed EDUs are dropped too, without an exception.
    for etype, content in [
        ("m.typing", {"room_id": room_id, "user_id": 5, "typing": True}),
        ("m.receipt", {room_id: "x"}),
        ("m.presence", {"push": "x"}),
        ("m.device_list_update", {"user_id": "@x:" + b_name, "device_id": "D", "stream_id": "1"}),
        ("m.direct_to_device", {"sender": "@x:" + b_name, "type": "t", "messages": {}}),
    ]:
        edu(a, etype, b_name, content)
    assert store.current_pos == before


def test_direct_to_device_is_delivered_once_per_message_id(pair):
    a, b = pair
    alice = Client(a.base_url).register()
    _, since = to_device(alice, None)
    sender = f"@eve:{b.hs.server_name}"
    message = {
        "sender": sender,
        "type": "m.test",
        "message_id": "abc123",
        "messages": {alice.user_id: {"*": {"n": 1}}, f"@x:{b.hs.server_name}": {"*": {}}},
    }
    edu(a, "m.direct_to_device", b.hs.server_name, message)
    edu(a, "m.direct_to_device", b.hs.server_name, message)  # a retried transaction
    events, since = to_device(alice, since)
    assert events == [{"sender": sender, "type": "m.test", "content": {"n": 1}}]
    # The same message_id from another origin is another message; a new ID is delivered.
    edu(a, "m.direct_to_device", b.hs.server_name, {**message, "message_id": "abc124"})
    events, since = to_device(alice, since)
    assert [e["content"] for e in events] == [{"n": 1}]
    assert to_device(alice, since)[0] == []


def test_typing_receipts_and_to_device_across_servers(pair):
    a, b = pair
    alice = Client(a.base_url).register()
    bob = Client(b.base_url).register()
    room_id = shared_room(alice, bob)
    _, alice_since = sync_until(alice, lambda s: True)
    # bob types on B: alice's sync on A shows it (m.typing EDU through B's queue).
    r = bob.request("PUT", f"{V3}/rooms/{q(room_id)}/typing/{q(bob.user_id)}",
                    {"typing": True, "timeout": 20000})  # fmt: skip
    assert r.status == 200, r.body

    def typing(s, user):
        return any(
            user in e["content"]["user_ids"]
            for x in s
            for e in x["rooms"]["join"].get(room_id, {}).get("ephemeral", {}).get("events", [])
            if e["type"] == "m.typing"
        )

    _, alice_since = sync_until(alice, lambda s: typing(s, bob.user_id), alice_since)
    # bob reads alice's message: the receipt reaches A.
    r = alice.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/t1",
                      {"msgtype": "m.text", "body": "hi"})  # fmt: skip
    event_id = r.body["event_id"]
    wait_for(lambda: b.hs.store.get_event(event_id) is not None)
    r = bob.request("POST", f"{V3}/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {})
    assert r.status == 200, r.body

    def receipt(s):
        return any(
            bob.user_id in e["content"].get(event_id, {}).get("m.read", {})
            for x in s
            for e in x["rooms"]["join"].get(room_id, {}).get("ephemeral", {}).get("events", [])
            if e["type"] == "m.receipt"
        )

    _, alice_since = sync_until(alice, receipt, alice_since)
    # alice's typing reaches B too.
    alice.request("PUT", f"{V3}/rooms/{q(room_id)}/typing/{q(alice.user_id)}",
                  {"typing": True, "timeout": 20000})  # fmt: skip
    wait_for(lambda: alice.user_id in on_server(b, lambda: b.hs.typing.typing_users(room_id)))
    # A to-device message from alice to all of bob's devices crosses as m.direct_to_device.
    _, bob_since = to_device(bob, None)
    r = alice.request("PUT", f"{V3}/sendToDevice/m.test/txn1",
                      {"messages": {bob.user_id: {"*": {"hello": "bob"}}}})  # fmt: skip
    assert r.status == 200, r.body
    # The same transaction ID again is not sent again.
    alice.request("PUT", f"{V3}/sendToDevice/m.test/txn1",
                  {"messages": {bob.user_id: {"*": {"hello": "bob"}}}})  # fmt: skip
    got: list[dict] = []
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        events, bob_since = to_device(bob, bob_since)
        got += events
        time.sleep(0.1)
    assert got == [{"sender": alice.user_id, "type": "m.test", "content": {"hello": "bob"}}]
    time.sleep(0.5)
    assert to_device(bob, bob_since)[0] == []


def test_typing_and_receipts_denied_by_the_room_acl(pair):
    a, _b = pair
    alice = Client(a.base_url).register()
    room_id = alice.request("POST", f"{V3}/createRoom", {}).body["room_id"]
    r = alice.request("PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.server_acl/",
                      {"allow": ["*"], "deny": ["evil.example"]})  # fmt: skip
    assert r.status == 200, r.body
    edus = a.hs.federation.edus
    edus._joined = lambda room, user: True  # isolate the ACL check from membership
    evil = "@mallory:evil.example"
    edu(a, "m.typing", "evil.example", {"room_id": room_id, "user_id": evil, "typing": True})
    assert on_server(a, lambda: a.hs.typing.typing_users(room_id)) == []
    receipt = {"event_ids": ["$x"], "data": {"ts": 1}}
    edu(a, "m.receipt", "evil.example", {room_id: {"m.read": {evil: receipt}}})
    store = a.hs.store
    assert on_server(a, lambda: store.receipts_for_room(room_id, None, store.current_pos)) == []
    # An allowed server in the same room gets through (with the membership check bypassed).
    good = "@carol:good.example"
    edu(a, "m.typing", "good.example", {"room_id": room_id, "user_id": good, "typing": True})
    assert on_server(a, lambda: a.hs.typing.typing_users(room_id)) == [good]
    edu(a, "m.receipt", "good.example", {room_id: {"m.read": {good: receipt}}})
    rows = on_server(a, lambda: store.receipts_for_room(room_id, None, store.current_pos))
    assert [(r["user_id"], r["event_id"]) for r in rows] == [(good, "$x")]


def test_device_list_updates_and_resync_on_unknown_prev_id(pair):
    a, b = pair
    alice = Client(a.base_url).register()
    bob_dev = new_device(Client(b.base_url), otks=2)
    bob = bob_dev.client
    room_id = shared_room(alice, bob)
    assert room_id
    # alice asks for bob's keys: A fetches bob's whole list from B and caches it.
    r = alice.request("POST", f"{V3}/keys/query", {"device_keys": {bob.user_id: []}})
    assert r.status == 200 and r.body["failures"] == {}, r.body
    assert set(r.body["device_keys"][bob.user_id]) == {bob.device_id}
    assert (
        r.body["device_keys"][bob.user_id][bob.device_id]["keys"] == (bob_dev.device_keys()["keys"])
    )
    cached = a.hs.store.get_remote_device_list(bob.user_id)
    assert cached is not None
    assert a.hs.federation.device_lists.cache_is_current(bob.user_id)
    _, alice_since = sync_until(alice, lambda s: True)

    # bob logs in a second device and uploads its keys: B sends m.device_list_update EDUs;
    # alice sees bob in device_lists.changed and the new device in keys/query (from the cache).
    bob2 = new_device_login(b, bob, bob_dev)
    _, alice_since = sync_until(
        alice,
        lambda s: bob.user_id in [u for x in s for u in x.get("device_lists", {}).get("changed", [])],
        alice_since,
    )  # fmt: skip
    wait_for(lambda: set(a.hs.store.get_remote_devices(bob.user_id)) >= {bob2.device_id})
    wait_for(lambda: a.hs.store.get_remote_devices(bob.user_id)[bob2.device_id][0] is not None)
    r = alice.request("POST", f"{V3}/keys/query", {"device_keys": {bob.user_id: []}})
    assert set(r.body["device_keys"][bob.user_id]) == {bob.device_id, bob2.device_id}
    resynced = a.hs.store.get_remote_device_list(bob.user_id)["synced_pos"]
    assert resynced == cached["synced_pos"]  # applied incrementally, no resync

    # Renaming a device on B is an update too (S-S API "Device Management").
    r = bob.request("PUT", f"{V3}/devices/{q(bob.device_id)}", {"display_name": "renamed"})
    assert r.status == 200, r.body
    wait_for(lambda: a.hs.store.get_remote_devices(bob.user_id)[bob.device_id][1] == "renamed")
    r = alice.request("POST", f"{V3}/keys/query", {"device_keys": {bob.user_id: []}})
    served = r.body["device_keys"][bob.user_id][bob.device_id]
    assert served["unsigned"]["device_display_name"] == "renamed"

    # An update whose prev_id A never saw: A resynchronises from B's GET /user/devices, so
    # the device the update announced (which B does not have) does not stay.
    edu(a, "m.device_list_update", b.hs.server_name, {
        "user_id": bob.user_id, "device_id": "GHOST", "stream_id": 10**12,
        "prev_id": [10**12 - 1], "device_display_name": "ghost",
    })  # fmt: skip
    idle(a)
    row = a.hs.store.get_remote_device_list(bob.user_id)
    assert row["synced_pos"] > cached["synced_pos"]
    assert row["stream_id"] == b.hs.store.last_outbound_device_change(bob.user_id)
    assert set(a.hs.store.get_remote_devices(bob.user_id)) == {bob.device_id, bob2.device_id}

    # A known prev_id is applied without a resync; a deleted device goes away.
    last = row["stream_id"]
    edu(a, "m.device_list_update", b.hs.server_name, {
        "user_id": bob.user_id, "device_id": bob2.device_id, "stream_id": last + 1,
        "prev_id": [last], "deleted": True,
    })  # fmt: skip
    idle(a)
    assert a.hs.store.get_remote_device_list(bob.user_id)["synced_pos"] == row["synced_pos"]
    assert set(a.hs.store.get_remote_devices(bob.user_id)) == {bob.device_id}
    # The same update again is a duplicate and changes nothing.
    pos = a.hs.store.current_pos
    edu(a, "m.device_list_update", b.hs.server_name, {
        "user_id": bob.user_id, "device_id": bob2.device_id, "stream_id": last + 1,
        "prev_id": [last], "deleted": True,
    })  # fmt: skip
    assert a.hs.store.current_pos == pos


def new_device_login(b, bob: Client, bob_dev):
    """A second device of bob with keys uploaded (a new login, as a client would)."""
    from tests.support.e2ee import Device

    r = bob.request("POST", f"{V3}/login", {
        "type": "m.login.password", "password": "correct horse battery",
        "identifier": {"type": "m.id.user", "user": bob.user_id},
    })  # fmt: skip
    assert r.status == 200, r.body
    second = Client(b.base_url, r.body["access_token"])
    second.user_id, second.device_id = bob.user_id, r.body["device_id"]
    dev = Device(second)
    r = dev.upload(device_keys=dev.device_keys())
    assert r.status == 200, r.body
    return dev


def test_signing_key_update_across_servers(pair):
    from tests.support.e2ee import cross_signing_body, cross_signing_set

    a, b = pair
    alice = Client(a.base_url).register()
    bob_dev = new_device(Client(b.base_url))
    bob = bob_dev.client
    shared_room(alice, bob)
    r = alice.request("POST", f"{V3}/keys/query", {"device_keys": {bob.user_id: []}})
    assert r.status == 200 and bob.user_id not in r.body["master_keys"], r.body
    _, alice_since = sync_until(alice, lambda s: True)
    # bob uploads cross-signing keys on B: m.signing_key_update reaches A, and alice's
    # keys/query (served from A's cache) has bob's master and self-signing keys; the
    # user-signing key stays private to bob.
    msk, ssk, usk = cross_signing_set(bob.user_id)
    body = cross_signing_body(msk, ssk, usk)
    r = bob.request("POST", f"{V3}/keys/device_signing/upload", body)
    assert r.status == 200, r.body
    _, alice_since = sync_until(
        alice,
        lambda s: bob.user_id in [u for x in s for u in x.get("device_lists", {}).get("changed", [])],
        alice_since,
    )  # fmt: skip
    wait_for(lambda: "master" in a.hs.store.get_remote_cross_signing_keys(bob.user_id))
    r = alice.request("POST", f"{V3}/keys/query", {"device_keys": {bob.user_id: []}})
    assert r.body["master_keys"][bob.user_id] == body["master_key"]
    assert r.body["self_signing_keys"][bob.user_id] == body["self_signing_key"]
    assert bob.user_id not in r.body["user_signing_keys"]
    assert a.hs.federation.device_lists.cache_is_current(bob.user_id)


def test_presence_goes_to_the_servers_sharing_a_room(pair):
    """A local user's presence change is sent as ``m.presence`` to the servers of the rooms
    they are in (S-S API "Presence"), and only to those."""
    a, b = pair
    alice = Client(a.base_url).register()
    bob = Client(b.base_url).register()
    carol = Client(a.base_url).register()  # shares no room with anyone on B
    shared_room(alice, bob)
    _, bob_since = sync_until(bob, lambda s: True)
    for user in (carol, alice):
        r = user.request("PUT", f"{V3}/presence/{q(user.user_id)}/status",
                         {"presence": "online", "status_msg": "at the desk"})  # fmt: skip
        assert r.status == 200, r.body

    def presence_of(s, user_id):
        return [
            e["content"] for x in s for e in x.get("presence", {}).get("events", [])
            if e["sender"] == user_id
        ]  # fmt: skip

    got, bob_since = sync_until(bob, lambda s: presence_of(s, alice.user_id), bob_since)
    seen = presence_of(got, alice.user_id)[-1]
    assert seen["presence"] == "online" and seen["status_msg"] == "at the desk"
    # A later change replaces it.
    r = alice.request("PUT", f"{V3}/presence/{q(alice.user_id)}/status",
                      {"presence": "unavailable", "status_msg": "away"})  # fmt: skip
    assert r.status == 200, r.body
    wait_for(lambda: on_server(b, lambda: b.hs.presence.content(alice.user_id))["presence"]
             == "unavailable")  # fmt: skip
    # carol shares no room with B's users: B never heard of her.
    assert on_server(b, lambda: b.hs.presence.content(carol.user_id))["presence"] == "offline"
