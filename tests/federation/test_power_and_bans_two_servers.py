"""Power levels and bans between two Bastions over TLS (the room lives on A; B's users joined it
over federation), each rule enforced by both servers:

* a low-power user is refused by their own server, and the event their server forges past its
  own checks is rejected by the other (never served, state unchanged);
* a power-level change made on A is honoured by B (B's user may then act, and A accepts it);
* a ban made on A and a ban made on B are in both servers' state; the banned user can neither
  send nor rejoin, and the event their server forges for them is rejected by the other.
"""

from __future__ import annotations

import urllib.parse
import uuid

from tests.support import server_pair
from tests.support.forge import forge, push
from tests.support.harness import Client
from tests.support.peer import on_server
from tests.support.server_pair import V3, shared_room, wait_for

pair = server_pair.pair  # the fixture


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def state(c: Client, room_id: str, etype: str, state_key: str = ""):
    r = c.request("GET", f"{V3}/rooms/{q(room_id)}/state/{etype}/{q(state_key)}")
    return r.status, r.body


def send(c: Client, room_id: str, body: str):
    return c.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/{uuid.uuid4().hex}",
                     {"msgtype": "m.text", "body": body})  # fmt: skip


def bodies(c: Client, room_id: str) -> list[str]:
    r = c.request("GET", f"{V3}/rooms/{q(room_id)}/messages", query={"dir": "b", "limit": "50"})
    assert r.status == 200, r.body
    return [e["content"].get("body") for e in r.body["chunk"] if e["type"] == "m.room.message"]


def meta(srv, eid):
    return on_server(srv, lambda: srv.hs.store.get_event_meta([eid]).get(eid))


def membership(srv, room_id, user_id):
    return on_server(srv, lambda: srv.hs.rooms.membership_of(room_id, user_id))


def test_power_levels_and_bans_enforced_by_both_servers(pair):
    a, b = pair
    alice, carol = Client(a.base_url).register(), Client(a.base_url).register()
    bob, dave = Client(b.base_url).register(), Client(b.base_url).register()
    room_id = shared_room(alice, bob, preset="public_chat", name="room on A")
    for c in (carol, dave):
        r = c.request("POST", f"{V3}/join/{q(room_id)}", {}, query={"via": a.hs.server_name})
        assert r.status == 200, r.body
    wait_for(lambda: membership(a, room_id, dave.user_id) == "join")
    wait_for(lambda: membership(b, room_id, carol.user_id) == "join")

    # 1. bob (power 0) may not rename the room: B refuses; the event B forges is rejected by A.
    r = bob.request("PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.name/", {"name": "bob's"})
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")
    eid, ev = forge(b, room_id, bob.user_id, "m.room.name", {"name": "forged on B"}, "")
    status, body = push(b, a.hs.server_name, [ev])
    assert status == 200 and "error" in body["pdus"][eid], body
    assert meta(a, eid).rejected
    assert state(alice, room_id, "m.room.name")[1] == {"name": "room on A"}
    # carol (power 0, on A) likewise: A refuses, and B rejects what A forges.
    r = carol.request("PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.topic/", {"topic": "c"})
    assert r.status == 403
    eid, ev = forge(a, room_id, carol.user_id, "m.room.topic", {"topic": "forged on A"}, "")
    status, body = push(a, b.hs.server_name, [ev])
    assert status == 200 and "error" in body["pdus"][eid], body
    assert meta(b, eid).rejected
    assert state(bob, room_id, "m.room.topic")[0] == 404

    # 2. alice gives bob 50 on A; B honours it: bob renames the room, A accepts.
    _, pl = state(alice, room_id, "m.room.power_levels")
    pl = {**pl, "users": {**pl["users"], bob.user_id: 50}}
    r = alice.request("PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels/", pl)
    assert r.status == 200, r.body
    wait_for(lambda: state(bob, room_id, "m.room.power_levels")[1]["users"].get(bob.user_id) == 50)
    r = bob.request("PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.name/", {"name": "by bob"})
    assert r.status == 200, r.body
    wait_for(lambda: state(alice, room_id, "m.room.name")[1] == {"name": "by bob"})

    # 3. alice (A) bans dave (B): both hold the ban; dave can neither send nor rejoin; the
    #    message B forges for him is rejected by A.
    r = alice.request("POST", f"{V3}/rooms/{q(room_id)}/ban", {"user_id": dave.user_id})
    assert r.status == 200, r.body
    wait_for(lambda: membership(b, room_id, dave.user_id) == "ban")
    assert state(bob, room_id, "m.room.member", dave.user_id)[1]["membership"] == "ban"
    assert send(dave, room_id, "dave banned").status == 403
    r = dave.request("POST", f"{V3}/join/{q(room_id)}", {}, query={"via": a.hs.server_name})
    assert r.status == 403, r.body
    eid, ev = forge(b, room_id, dave.user_id, "m.room.message", {"msgtype": "m.text",
                    "body": "forged for dave"})  # fmt: skip
    status, body = push(b, a.hs.server_name, [ev])
    assert status == 200 and "error" in body["pdus"][eid], body
    assert meta(a, eid).rejected and "forged for dave" not in bodies(alice, room_id)
    assert membership(a, room_id, dave.user_id) == "ban"

    # 4. bob (B, power 50) bans carol (A): both hold the ban; carol can neither send nor rejoin;
    #    the message A forges for her is rejected by B.
    r = bob.request("POST", f"{V3}/rooms/{q(room_id)}/ban", {"user_id": carol.user_id})
    assert r.status == 200, r.body
    wait_for(lambda: membership(a, room_id, carol.user_id) == "ban")
    assert state(alice, room_id, "m.room.member", carol.user_id)[1]["membership"] == "ban"
    assert send(carol, room_id, "carol banned").status == 403
    assert carol.request("POST", f"{V3}/join/{q(room_id)}", {}).status == 403
    eid, ev = forge(a, room_id, carol.user_id, "m.room.message", {"msgtype": "m.text",
                    "body": "forged for carol"})  # fmt: skip
    status, body = push(a, b.hs.server_name, [ev])
    assert status == 200 and "error" in body["pdus"][eid], body
    assert meta(b, eid).rejected and "forged for carol" not in bodies(bob, room_id)
    # The room still works for everyone else, both ways.
    assert send(alice, room_id, "still fine").status == 200
    wait_for(lambda: "still fine" in bodies(bob, room_id))
