"""GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event (C-S API "Room participation",
v1.6): the closest event the user may see at or after / at or before a timestamp; 404 when
there is none; junk parameters refused with Matrix errors."""

from __future__ import annotations

import time
import urllib.parse
import uuid

from tests.support.harness import Client

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def create(c: Client, **body) -> str:
    r = c.request("POST", f"{V3}/createRoom", body)
    assert r.status == 200, r.body
    return r.body["room_id"]


def send(c: Client, room: str, text: str) -> tuple[str, int]:
    """Send a message; (event ID, origin_server_ts). Sleeps so timestamps differ."""
    time.sleep(0.01)
    r = c.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/{uuid.uuid4().hex}",
                  {"msgtype": "m.text", "body": text})  # fmt: skip
    assert r.status == 200, r.body
    eid = r.body["event_id"]
    ev = c.request("GET", f"{V3}/rooms/{q(room)}/event/{q(eid)}")
    assert ev.status == 200, ev.body
    time.sleep(0.01)
    return eid, ev.body["origin_server_ts"]


def t2e(c: Client, room: str, **query):
    return c.request("GET", f"{V1}/rooms/{q(room)}/timestamp_to_event", query=query)


def test_both_directions(server):
    alice = Client(server.base_url).register()
    room = create(alice, preset="private_chat")
    e1, t1 = send(alice, room, "one")
    e2, t2 = send(alice, room, "two")
    e3, t3 = send(alice, room, "three")
    assert t1 < t2 < t3
    r = t2e(alice, room, ts=t2, dir="f")
    assert r.status == 200 and r.body == {"event_id": e2, "origin_server_ts": t2}
    assert t2e(alice, room, ts=t2 + 1, dir="f").body["event_id"] == e3
    assert t2e(alice, room, ts=t2, dir="b").body["event_id"] == e2
    assert t2e(alice, room, ts=t2 - 1, dir="b").body["event_id"] == e1
    assert t2e(alice, room, ts=t3 + 10**9, dir="b").body["event_id"] == e3
    # Nothing after the last event, nothing before the room existed.
    r = t2e(alice, room, ts=t3 + 1, dir="f")
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")
    r = t2e(alice, room, ts=0, dir="b")
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")
    # From the beginning: the room's first event, its create event.
    r = t2e(alice, room, ts=0, dir="f")
    assert r.status == 200
    first = alice.request("GET", f"{V3}/rooms/{q(room)}/event/{q(r.body['event_id'])}")
    assert first.body["type"] == "m.room.create"


def test_visibility(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    eve = Client(server.base_url).register()
    room = create(alice, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}])  # fmt: skip
    e1, t1 = send(alice, room, "before bob")
    r = bob.request("POST", f"{V3}/join/{q(room)}", {})
    assert r.status == 200, r.body
    e2, t2 = send(alice, room, "after bob")
    # Alice sees the first message; Bob, joined later under "joined" visibility, does not.
    assert t2e(alice, room, ts=t1, dir="b").body["event_id"] == e1
    r = t2e(bob, room, ts=t1, dir="b")
    assert r.status == 200 and r.body["event_id"] != e1
    # (the history_visibility event itself: visible under the "shared" before it)
    hv = bob.request("GET", f"{V3}/rooms/{q(room)}/event/{q(r.body['event_id'])}")
    assert hv.body["type"] == "m.room.history_visibility"
    r = t2e(bob, room, ts=t1, dir="f")
    assert r.status == 200 and r.body["event_id"] != e1  # his own join, the first he may see
    assert t2e(bob, room, ts=t2, dir="b").body["event_id"] == e2
    # Not a member: refused (as /messages is); an unknown room looks the same.
    r = t2e(eve, room, ts=t1, dir="f")
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")
    r = t2e(eve, "!nothere:localhost", ts=t1, dir="f")
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")
    # A former member sees nothing after leaving.
    r = bob.request("POST", f"{V3}/rooms/{q(room)}/leave", {})
    assert r.status == 200
    e3, t3 = send(alice, room, "after bob left")
    r = t2e(bob, room, ts=t3, dir="f")
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")
    assert t2e(alice, room, ts=t3, dir="f").body["event_id"] == e3


def test_junk(server):
    alice = Client(server.base_url).register()
    room = create(alice)
    for query, code in (
        ({"dir": "f"}, "M_MISSING_PARAM"),
        ({"ts": "1"}, "M_MISSING_PARAM"),
        ({"ts": "", "dir": "f"}, "M_MISSING_PARAM"),
        ({"ts": "abc", "dir": "f"}, "M_INVALID_PARAM"),
        ({"ts": "1.5", "dir": "f"}, "M_INVALID_PARAM"),
        ({"ts": "9" * 5000, "dir": "f"}, "M_INVALID_PARAM"),
        ({"ts": "1", "dir": "x"}, "M_INVALID_PARAM"),
        ({"ts": "1", "dir": ""}, "M_INVALID_PARAM"),
    ):
        r = t2e(alice, room, **query)
        assert (r.status, r.body.get("errcode")) == (400, code), query
    # Huge and negative timestamps are clamped, never a 500.
    r = t2e(alice, room, ts=str(10**30), dir="b")
    assert r.status == 200 and r.body["event_id"].startswith("$")
    r = t2e(alice, room, ts="-5", dir="b")
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")
    r = t2e(alice, "not-a-room", ts="1", dir="f")
    assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM")
    r = alice.request("GET", f"{V1}/rooms/{q(room)}/timestamp_to_event",
                      query={"ts": "1", "dir": "f"}, token=None)  # fmt: skip
    assert r.status == 401
