"""Search over events received over federation (C-S API "Server Side Search"; the persist path
of received PDUs indexes them as the local send path does): a message sent on one Bastion is
found by a search on the other."""

from __future__ import annotations

import uuid

from tests.support import server_pair
from tests.support.harness import Client
from tests.support.server_pair import V3, q, shared_room, wait_for

pair = server_pair.pair  # the fixture


def _found(c: Client, term: str) -> list[str]:
    body = {"search_categories": {"room_events": {"search_term": term}}}
    r = c.request("POST", f"{V3}/search", body)
    assert r.status == 200, r.body
    return [x["result"]["event_id"] for x in r.body["search_categories"]["room_events"]["results"]]


def test_received_messages_are_searchable(pair):
    a, b = pair
    alice = Client(a.base_url).register()
    bob = Client(b.base_url).register()
    room_id = shared_room(alice, bob, preset="private_chat")
    r = bob.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/{uuid.uuid4().hex}",
                    {"msgtype": "m.text", "body": "a cormorant from afar"})  # fmt: skip
    assert r.status == 200, r.body
    eid = r.body["event_id"]
    wait_for(lambda: _found(alice, "cormorant") == [eid])
    assert _found(bob, "cormorant") == [eid]
