"""Room previews (C-S API "Room Previews"): ``GET /rooms/{roomId}/initialSync``
(room_initial_sync.yaml), a member's snapshot of state, latest messages, membership, directory
visibility and room account data, a former member's up to their leave, a world_readable room
previewed by anyone; and ``GET /events?room_id=`` (peeking_events.yaml), its new events,
long-polled. Every other room, unknown ones included, 403 alike."""

from __future__ import annotations

import threading
import time
import urllib.parse
import uuid

from tests.support.accounts import assert_error
from tests.support.harness import Client, ServerThread

V3 = "/_matrix/client/v3"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def initial_sync(c: Client, room: str, **query):
    return c.request("GET", f"{V3}/rooms/{q(room)}/initialSync", query=query or None)


def create(c: Client, **body) -> str:
    r = c.request("POST", f"{V3}/createRoom", body)
    assert r.status == 200, r.body
    return r.body["room_id"]


def say(c: Client, room: str, body: str) -> str:
    r = c.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/{uuid.uuid4().hex}",
                  {"msgtype": "m.text", "body": body})  # fmt: skip
    assert r.status == 200, r.body
    return r.body["event_id"]


def bodies(r) -> list[str]:
    return [e["content"]["body"] for e in r.body["messages"]["chunk"]
            if e["type"] == "m.room.message"]  # fmt: skip


def test_a_members_snapshot(server):
    alice = Client(server.base_url).register()
    room = create(alice, name="Snapshot", visibility="public", preset="public_chat")
    r = alice.request("PUT", f"{V3}/user/{q(alice.user_id)}/rooms/{q(room)}/tags/u.work",
                      {"order": 0.5})  # fmt: skip
    assert r.status == 200, r.body
    for i in range(5):
        say(alice, room, f"m{i}")
    r = initial_sync(alice, room)
    assert r.status == 200, r.body
    body = r.body
    assert body["room_id"] == room and body["membership"] == "join"
    assert body["visibility"] == "public"
    assert bodies(r) == [f"m{i}" for i in range(5)]  # chronological
    assert all(e["room_id"] == room for e in body["messages"]["chunk"])
    types = {(e["type"], e["state_key"]) for e in body["state"]}
    assert {("m.room.create", ""), ("m.room.name", ""), ("m.room.member", alice.user_id)} <= types
    assert {"type": "m.tag", "content": {"tags": {"u.work": {"order": 0.5}}}} in body[
        "account_data"
    ]
    # The whole room fitted: nothing further back.
    assert "start" not in body["messages"] and body["messages"]["end"]

    # A limit: the latest two, and a token that pages further back with /messages.
    r = initial_sync(alice, room, limit="2")
    assert bodies(r) == ["m3", "m4"]
    start = r.body["messages"]["start"]
    older = alice.request("GET", f"{V3}/rooms/{q(room)}/messages",
                          query={"dir": "b", "from": start, "limit": "1"})  # fmt: skip
    assert older.status == 200, older.body
    assert [e["content"]["body"] for e in older.body["chunk"]] == ["m2"]
    # Junk limits are clamped or refused as Matrix errors.
    assert initial_sync(alice, room, limit="100000").status == 200
    assert_error(initial_sync(alice, room, limit="x"), 400, "M_INVALID_PARAM")


def test_a_former_member_sees_up_to_their_leave(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    room = create(alice, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{q(room)}", {}).status == 200
    say(alice, room, "before")
    assert bob.request("POST", f"{V3}/rooms/{q(room)}/leave", {}).status == 200
    say(alice, room, "after")
    r = initial_sync(alice, room, limit="50")
    assert bodies(r)[-1] == "after"
    r = initial_sync(bob, room, limit="50")
    assert r.status == 200, r.body
    assert r.body["membership"] == "leave" and r.body["visibility"] == "private"
    assert "after" not in bodies(r) and "before" in bodies(r)
    mine = [e for e in r.body["state"] if e["type"] == "m.room.member"
            and e["state_key"] == bob.user_id]  # fmt: skip
    assert mine[0]["content"]["membership"] == "leave"


def test_world_readable_rooms_can_be_previewed_and_others_cannot(server):
    alice = Client(server.base_url).register()
    carol = Client(server.base_url).register()
    open_room = create(alice, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "state_key": "",
         "content": {"history_visibility": "world_readable"}},
    ])  # fmt: skip
    say(alice, open_room, "for everyone")
    shut = create(alice, preset="public_chat")  # shared history: members only
    say(alice, shut, "for members")
    r = initial_sync(carol, open_room)
    assert r.status == 200, r.body
    assert "membership" not in r.body  # carol is not a member: a preview
    assert bodies(r) == ["for everyone"]
    for room in (shut, "!nothere:localhost"):
        assert_error(initial_sync(carol, room), 403, "M_FORBIDDEN")
    assert_error(initial_sync(carol, "not-a-room-id"), 400, "M_INVALID_PARAM")
    r = carol.request("GET", f"{V3}/rooms/{q(open_room)}/initialSync", token=None)
    assert_error(r, 401, "M_MISSING_TOKEN")


def peek(c: Client, room: str, **query):
    return c.request("GET", f"{V3}/events", query={"room_id": room, **query})


def test_peeking_follows_a_world_readable_room(server):
    """GET /events?room_id= (peeking_events.yaml): from /initialSync's ``end``, a non-member
    gets the room's new events, long-polled; ``end`` is the next ``from``."""
    alice = Client(server.base_url).register()
    carol = Client(server.base_url).register()
    room = create(alice, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "state_key": "",
         "content": {"history_visibility": "world_readable"}},
    ])  # fmt: skip
    say(alice, room, "first")
    snap = initial_sync(carol, room)
    assert bodies(snap) == ["first"]
    since = snap.body["messages"]["end"]
    # Nothing new: an empty answer at once (timeout 0), from where it was.
    r = peek(carol, room, **{"from": since, "timeout": "0"})
    assert r.status == 200, r.body
    assert r.body["chunk"] == [] and r.body["start"] == since
    # A long poll woken by alice's message.
    got: dict = {}

    def poll() -> None:
        got["r"] = peek(carol, room, **{"from": since, "timeout": "10000"})

    started = time.monotonic()
    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.3)
    eid = say(alice, room, "second")
    waiter.join(15)
    assert time.monotonic() - started < 8
    r = got["r"]
    assert r.status == 200, r.body
    assert [e["event_id"] for e in r.body["chunk"]] == [eid]
    assert r.body["chunk"][0]["content"]["body"] == "second"
    # From its end: nothing more.
    r = peek(carol, room, **{"from": r.body["end"], "timeout": "0"})
    assert r.body["chunk"] == []
    # Without a from: from now.
    r = peek(carol, room, timeout="0")
    assert r.status == 200 and r.body["chunk"] == [], r.body


def test_peeking_is_refused_where_the_requester_may_not_read(server):
    alice = Client(server.base_url).register()
    carol = Client(server.base_url).register()
    shut = create(alice, preset="public_chat")
    for room in (shut, "!nothere:localhost"):
        assert_error(peek(carol, room, timeout="0"), 403, "M_FORBIDDEN")
    assert_error(carol.request("GET", f"{V3}/events", query={"timeout": "0"}), 400,
                 "M_MISSING_PARAM")  # fmt: skip
    assert_error(peek(carol, "not-a-room"), 400, "M_INVALID_PARAM")
    assert_error(peek(alice, shut, **{"from": "junk"}), 400, "M_INVALID_PARAM")
    assert_error(peek(alice, shut, timeout="x"), 400, "M_INVALID_PARAM")
    # A member peeks into their own room too.
    eid = say(alice, shut, "mine")
    r = peek(alice, shut, **{"from": "s0_0", "timeout": "0"})
    assert r.status == 200 and eid in [e["event_id"] for e in r.body["chunk"]]


def test_a_peek_ends_at_once_when_the_server_stops(tmp_path):
    """A stopping server ends every long poll (the notifier wakes them all): a peek answers at
    once, it does not wait, nor spin, until its timeout."""
    srv = ServerThread(tmp_path / "data").start()
    try:
        alice = Client(srv.base_url).register()
        room = create(alice, preset="public_chat")
        since = initial_sync(alice, room).body["messages"]["end"]
        srv.loop.call_soon_threadsafe(srv.hs.notifier.close)
        started = time.monotonic()
        r = peek(alice, room, **{"from": since, "timeout": "60000"})
        assert r.status == 200 and r.body["chunk"] == [], r.body
        assert time.monotonic() - started < 5
    finally:
        srv.stop()
