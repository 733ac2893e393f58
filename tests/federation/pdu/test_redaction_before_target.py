"""A redaction received before the event it names (rooms v3+ "Handling redactions": "Servers
SHOULD NOT apply or send redactions to clients until both the redaction event and the redacted
event have been seen"): the redaction is accepted and kept; when the event arrives it is stored
in its redacted form, never served or indexed with its content; a redaction that may not apply
to it (from another room) leaves it as it is."""

from __future__ import annotations

import uuid

import pytest

from tests.support.peer import bastion_and_peer, on_server
from tests.support.rooms import create_room

V3 = "/_matrix/client/v3"
SECRET = "early-redaction-secret-4471"


@pytest.fixture(scope="module")
def world(tmp_path_factory, test_ca):
    with bastion_and_peer(tmp_path_factory.mktemp("early-redaction"), test_ca) as world:
        yield world


def _joined(srv, peer, admin) -> str:
    room_id = create_room(admin, preset="public_chat")
    eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.member",
                            {"membership": "join"}, peer.user("p1"))  # fmt: skip
    status, body = peer.send(srv, uuid.uuid4().hex, [ev])
    assert status == 200 and body["pdus"] == {eid: {}}, body
    return room_id


def _search(admin, term: str) -> int:
    r = admin.request("POST", f"{V3}/search",
                      {"search_categories": {"room_events": {"search_term": term}}})  # fmt: skip
    assert r.status == 200, r.body
    return r.body["search_categories"]["room_events"]["count"]


def test_an_event_arriving_after_its_redaction_is_stored_redacted(world):
    srv, peer, admin = world
    room_id = _joined(srv, peer, admin)
    head = on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_id))
    prevs = list(head.extremities)
    # The message and its redaction are siblings: the redaction does not lead to the message,
    # so it can be received, checked and accepted first.
    msg_id, msg = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                                {"msgtype": "m.text", "body": SECRET}, prev_events=prevs)  # fmt: skip
    red_id, red = peer.build_on(
        srv, room_id, peer.user("p1"), "m.room.redaction",
        {"redacts": msg_id, "reason": "too soon"}, prev_events=prevs,
    )  # fmt: skip
    status, body = peer.send(srv, uuid.uuid4().hex, [red])
    assert status == 200 and body["pdus"] == {red_id: {}}, body
    pending = on_server(srv, lambda: srv.hs.store.pending_redactions_of(msg_id))
    assert pending == [red_id]

    status, body = peer.send(srv, uuid.uuid4().hex, [msg])
    assert status == 200 and body["pdus"] == {msg_id: {}}, body
    row = on_server(srv, lambda: srv.hs.store.get_event_row(msg_id))
    assert row is not None and row.redacted_because == red_id
    assert row.event["content"] == {}
    r = admin.request("GET", f"{V3}/rooms/{room_id}/event/{msg_id}")
    assert r.status == 200 and r.body["content"] == {}, r.body
    assert r.body["unsigned"]["redacted_because"]["event_id"] == red_id
    assert _search(admin, SECRET) == 0
    assert on_server(srv, lambda: srv.hs.store.pending_redactions_of(msg_id)) == []


def test_a_redaction_from_another_room_does_not_apply(world):
    srv, peer, admin = world
    here = _joined(srv, peer, admin)
    there = _joined(srv, peer, admin)
    word = "unredacted-" + uuid.uuid4().hex[:8]
    msg_id, msg = peer.build_on(srv, here, peer.user("p1"), "m.room.message",
                                {"msgtype": "m.text", "body": word})  # fmt: skip
    red_id, red = peer.build_on(srv, there, peer.user("p1"), "m.room.redaction",
                                {"redacts": msg_id})  # fmt: skip
    status, body = peer.send(srv, uuid.uuid4().hex, [red])
    assert status == 200 and body["pdus"] == {red_id: {}}, body
    status, body = peer.send(srv, uuid.uuid4().hex, [msg])
    assert status == 200 and body["pdus"] == {msg_id: {}}, body
    row = on_server(srv, lambda: srv.hs.store.get_event_row(msg_id))
    assert row is not None and row.redacted_because is None
    assert row.event["content"]["body"] == word
    assert _search(admin, word) == 1
