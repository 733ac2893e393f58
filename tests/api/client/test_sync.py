"""/sync: initial and incremental, long-poll, rooms.join/invite/leave, filters, access."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.api.client.test_rooms import V3, create, send
from tests.support.guard import exempt


def sync(c, since=None, timeout=0, **query):
    q = {"timeout": str(timeout), **query}
    if since:
        q["since"] = since
    r = c.request("GET", V3 + "/sync", query=q)
    assert r.status == 200, r.body
    assert "next_batch" in r.body
    return r.body


def timeline_ids(body, room_id, section="join"):
    room = body["rooms"][section].get(room_id)
    return [e["event_id"] for e in room["timeline"]["events"]] if room else []


@pytest.fixture
def alice(client):
    return client.register()


@pytest.fixture
def bob(client):
    return client.register()


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_initial_and_incremental(alice, bob, version):
    room_id = create(alice, room_version=version, preset="public_chat", name="R")
    first = sync(alice)
    room = first["rooms"]["join"][room_id]
    state_types = {e["type"] for e in room["state"]["events"]} | {
        e["type"] for e in room["timeline"]["events"]
    }
    assert {"m.room.create", "m.room.name", "m.room.power_levels"} <= state_types
    assert room["summary"]["m.joined_member_count"] == 1
    assert all("room_id" not in e for e in room["timeline"]["events"])
    eid = send(alice, room_id, txn="t-1").body["event_id"]
    inc = sync(alice, first["next_batch"])
    assert inc["next_batch"] != first["next_batch"]
    events = inc["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["event_id"] for e in events] == [eid]
    assert events[0]["unsigned"]["transaction_id"] == "t-1"
    assert inc["rooms"]["join"][room_id]["timeline"]["limited"] is False
    # Nothing new: the room is not in the response.
    empty = sync(alice, inc["next_batch"])
    assert room_id not in empty["rooms"]["join"]
    # Another member sees the event without transaction_id.
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    b = sync(bob)
    ev = next(e for e in b["rooms"]["join"][room_id]["timeline"]["events"] if e["event_id"] == eid)
    assert "transaction_id" not in ev["unsigned"]


def test_limited_timeline_and_state_delta(alice, server):
    exempt(server, alice)  # 12 messages within milliseconds: a limited timeline, bulk by design
    room_id = create(alice)
    first = sync(alice)
    alice.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.topic/", {"topic": "T"})
    for _ in range(12):
        send(alice, room_id)
    inc = sync(alice, first["next_batch"], filter=json.dumps({"room": {"timeline": {"limit": 5}}}))
    room = inc["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is True
    assert len(room["timeline"]["events"]) == 5
    assert [e["type"] for e in room["state"]["events"]] == ["m.room.topic"]
    # prev_batch paginates back from the start of the timeline.
    r = alice.request("GET", f"{V3}/rooms/{room_id}/messages",
                      query={"dir": "b", "from": room["timeline"]["prev_batch"], "limit": "1"})  # fmt: skip
    assert r.body["chunk"][0]["event_id"] not in timeline_ids(inc, room_id)
    assert r.body["chunk"][0]["type"] == "m.room.message"


def test_long_poll_wakes_on_message(alice):
    room_id = create(alice)
    first = sync(alice)
    result = {}

    def poll():
        t0 = time.monotonic()
        result["body"] = sync(alice, first["next_batch"], timeout=10000)
        result["elapsed"] = time.monotonic() - t0

    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.3)
    t_send = time.monotonic()
    eid = send(alice, room_id).body["event_id"]
    th.join(15)
    assert timeline_ids(result["body"], room_id) == [eid]
    assert time.monotonic() - t_send < 1.0


def test_long_poll_times_out(alice):
    create(alice)
    first = sync(alice)
    t0 = time.monotonic()
    body = sync(alice, first["next_batch"], timeout=500)
    elapsed = time.monotonic() - t0
    assert 0.45 <= elapsed < 3
    assert body["rooms"]["join"] == {}


def test_long_poll_wakes_on_invite(alice, bob):
    first = sync(bob)
    room_id = create(alice, name="Invite me", initial_state=[
        {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])  # fmt: skip
    result = {}
    th = threading.Thread(target=lambda: result.update(sync(bob, first["next_batch"], 10000)))
    th.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    alice.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": bob.user_id})
    th.join(15)
    assert time.monotonic() - t0 < 1.0
    invite_state = result["rooms"]["invite"][room_id]["invite_state"]["events"]
    types = {e["type"] for e in invite_state}
    assert {"m.room.create", "m.room.join_rules", "m.room.name", "m.room.encryption",
            "m.room.member"} <= types  # fmt: skip
    member = next(e for e in invite_state if e["type"] == "m.room.member")
    assert member["state_key"] == bob.user_id and member["content"]["membership"] == "invite"
    # After joining, the room moves to join with its full state (incl. encryption).
    assert bob.request("POST", f"{V3}/rooms/{room_id}/join", {}).status == 200
    joined = sync(bob, result["next_batch"])
    assert room_id not in joined["rooms"]["invite"]
    room = joined["rooms"]["join"][room_id]
    types = {e["type"] for e in room["state"]["events"]} | {
        e["type"] for e in room["timeline"]["events"]
    }
    assert "m.room.encryption" in types


def test_kicked_user_stops_receiving(alice, bob):
    room_id = create(alice, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    first = sync(bob)
    assert room_id in first["rooms"]["join"]
    alice.request("POST", f"{V3}/rooms/{room_id}/kick", {"user_id": bob.user_id})
    secret = send(alice, room_id, {"msgtype": "m.text", "body": "after kick"}).body["event_id"]
    inc = sync(bob, first["next_batch"])
    assert room_id not in inc["rooms"]["join"]
    left = inc["rooms"]["leave"][room_id]
    ids = [e["event_id"] for e in left["timeline"]["events"]]
    assert secret not in ids
    assert left["timeline"]["events"][-1]["content"]["membership"] == "leave"
    later = sync(bob, inc["next_batch"])
    assert room_id not in later["rooms"]["leave"] and room_id not in later["rooms"]["join"]
    send(alice, room_id)
    assert room_id not in sync(bob, later["next_batch"])["rooms"]["join"]
    # Initial sync: left rooms only with include_leave.
    assert room_id not in sync(bob)["rooms"]["leave"]
    with_leave = sync(bob, filter=json.dumps({"room": {"include_leave": True}}))
    assert room_id in with_leave["rooms"]["leave"]
    assert secret not in timeline_ids(with_leave, room_id, "leave")
    # Forgotten rooms are gone even with include_leave.
    assert bob.request("POST", f"{V3}/rooms/{room_id}/forget", {}).status == 200
    with_leave = sync(bob, filter=json.dumps({"room": {"include_leave": True}}))
    assert room_id not in with_leave["rooms"]["leave"]


def test_filters_inline_and_by_id(alice):
    room_id = create(alice)
    send(alice, room_id)
    flt = {"room": {"timeline": {"types": ["m.room.message"]}, "state": {"types": ["m.room.name"]}}}
    body = sync(alice, filter=json.dumps(flt))
    room = body["rooms"]["join"][room_id]
    assert {e["type"] for e in room["timeline"]["events"]} == {"m.room.message"}
    r = alice.request("POST", f"{V3}/user/{alice.user_id}/filter",
                      {"room": {"rooms": ["!other:localhost"]}})  # fmt: skip
    assert r.status == 200
    body = sync(alice, filter=r.body["filter_id"])
    assert room_id not in body["rooms"]["join"]
    r = alice.request("GET", V3 + "/sync", query={"filter": "nonexistent"})
    assert r.status == 400
    r = alice.request("GET", V3 + "/sync", query={"filter": "{not json"})
    assert r.status == 400


def test_lazy_load_members(alice, client, server):
    exempt(server, alice)  # 12 messages within milliseconds: a limited timeline, bulk by design
    room_id = create(alice, preset="public_chat")
    others = [client.register() for _ in range(3)]
    for o in others:
        assert o.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    for _ in range(12):
        send(alice, room_id)
    flt = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 5}}}
    body = sync(alice, filter=json.dumps(flt))
    room = body["rooms"]["join"][room_id]
    members = {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}
    assert members == {alice.user_id}
    assert room["summary"]["m.joined_member_count"] == 4
    assert len(room["summary"]["m.heroes"]) == 3


def test_bad_params(alice):
    for q in ({"since": "garbage"}, {"timeout": "x"}, {"full_state": "maybe"},
              {"set_presence": "busy"}):  # fmt: skip
        r = alice.request("GET", V3 + "/sync", query=q)
        assert r.status == 400, q
    r = alice.request("GET", V3 + "/sync", token="bad")
    assert r.status == 401


def test_full_state_and_state_after(alice):
    room_id = create(alice, name="N")
    first = sync(alice)
    full = sync(alice, first["next_batch"], full_state="true")
    room = full["rooms"]["join"][room_id]
    assert any(e["type"] == "m.room.name" for e in room["state"]["events"])
    after = sync(alice, use_state_after="true")
    room = after["rooms"]["join"][room_id]
    assert any(e["type"] == "m.room.name" for e in room["state_after"]["events"])


def test_redaction_in_sync_has_top_level_redacts(alice):
    room_id = create(alice, room_version="11")
    first = sync(alice)
    eid = send(alice, room_id).body["event_id"]
    alice.request("PUT", f"{V3}/rooms/{room_id}/redact/{eid}/r1", {})
    body = sync(alice, first["next_batch"])
    events = body["rooms"]["join"][room_id]["timeline"]["events"]
    red = next(e for e in events if e["type"] == "m.room.redaction")
    assert red["redacts"] == eid and red["content"]["redacts"] == eid
    original = next(e for e in events if e["event_id"] == eid)
    assert original["content"] == {}
