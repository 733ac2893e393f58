"""Relations of events received over federation (C-S API "Relationships"; the persist path of
received PDUs indexes them as the local send path does): a thread reply and a reaction sent on
one Bastion are listed by the other's relations and threads endpoints."""

from __future__ import annotations

import uuid

from tests.support import server_pair
from tests.support.harness import Client
from tests.support.server_pair import V3, q, shared_room, wait_for

pair = server_pair.pair  # the fixture
V1 = "/_matrix/client/v1"


def _send(c: Client, room_id: str, etype: str, content: dict) -> str:
    r = c.request("PUT", f"{V3}/rooms/{q(room_id)}/send/{etype}/{uuid.uuid4().hex}", content)
    assert r.status == 200, r.body
    return r.body["event_id"]


def _relations(c: Client, room_id: str, event_id: str) -> list[str]:
    r = c.request("GET", f"{V1}/rooms/{q(room_id)}/relations/{q(event_id)}")
    return [e["event_id"] for e in r.body.get("chunk", [])] if r.status == 200 else []


def test_received_relations_are_indexed_both_ways(pair):
    a, b = pair
    alice = Client(a.base_url).register()
    bob = Client(b.base_url).register()
    room_id = shared_room(alice, bob, preset="private_chat")
    root = _send(alice, room_id, "m.room.message", {"msgtype": "m.text", "body": "root"})
    wait_for(lambda: bob.request("GET", f"{V3}/rooms/{q(room_id)}/event/{q(root)}").status == 200)
    reply = _send(bob, room_id, "m.room.message", {
        "msgtype": "m.text", "body": "from b",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root},
    })  # fmt: skip
    wait_for(lambda: _relations(alice, room_id, root) == [reply])
    like = _send(alice, room_id, "m.reaction", {
        "m.relates_to": {"rel_type": "m.annotation", "event_id": reply, "key": "ok"}
    })  # fmt: skip
    wait_for(lambda: _relations(bob, room_id, reply) == [like])
    r = alice.request("GET", f"{V1}/rooms/{q(room_id)}/threads")
    assert [e["event_id"] for e in r.body["chunk"]] == [root]
    thread = r.body["chunk"][0]["unsigned"]["m.relations"]["m.thread"]
    assert thread["count"] == 1 and thread["latest_event"]["event_id"] == reply
