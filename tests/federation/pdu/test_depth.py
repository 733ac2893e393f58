"""Depth poisoning (issue 7, defect 2) against a scripted peer: an event of the largest depth
canonical JSON allows (2^53−1) does not stop local users from sending nor remote users from
joining (S-S API PDUs "depth": the deepest prev event plus one, capped as Synapse's MAX_DEPTH);
soft-failed and rejected events never raise the depth of later events, also after a restart."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest

from tests.support.federation import start_fed_server
from tests.support.harness import Client
from tests.support.peer import V1, FakePeer, bastion_and_peer, on_server
from tests.support.rooms import create_room, send

V3 = "/_matrix/client/v3"
HUGE = 2**53 - 1


def q(s: str) -> str:
    return quote(s, safe="")


@pytest.fixture(scope="module")
def world(tmp_path_factory, test_ca):
    with bastion_and_peer(tmp_path_factory.mktemp("depth"), test_ca) as world:
        yield world


def meta(srv, eid):
    return on_server(srv, lambda: srv.hs.store.get_event_meta([eid]).get(eid))


def depth(srv, eid) -> int:
    return meta(srv, eid).depth


def test_event_at_max_depth_does_not_stop_the_room(world):
    srv, peer, admin = world
    room_id = create_room(admin, room_version="10")
    peer.join(srv, room_id, peer.user("p1"))
    eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                            {"msgtype": "m.text", "body": "deep"}, depth=HUGE)  # fmt: skip
    status, body = peer.send(srv, uuid.uuid4().hex, [ev])
    assert (status, body) == (200, {"pdus": {eid: {}}})
    # Local users keep sending: the depth stays at the cap.
    for i in range(3):
        mine = send(admin, room_id, f"still here {i}")
        assert depth(srv, mine) == HUGE
    # Remote users keep joining: the make_join template is capped too.
    status, body = peer.request(
        srv, "GET", f"{V1}/make_join/{q(room_id)}/{q(peer.user('p2'))}?ver=10"
    )
    assert status == 200 and body["event"]["depth"] == HUGE, body
    joined = peer.join(srv, room_id, peer.user("p2"))
    assert depth(srv, joined) == HUGE
    member = on_server(srv, lambda: srv.hs.rooms.membership_of(room_id, peer.user("p2")))
    assert member == "join"
    # Local users join and send after it.
    bob = Client(srv.base_url).register("bob" + uuid.uuid4().hex[:6])
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    assert depth(srv, send(bob, room_id, "hello")) == HUGE


def test_soft_failed_event_does_not_raise_the_depth(world):
    srv, peer, admin = world
    room_id = create_room(admin, room_version="10")
    peer.join(srv, room_id, peer.user("p1"))
    before = on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_id))
    r = admin.request("POST", f"{V3}/rooms/{room_id}/ban", {"user_id": peer.user("p1")})
    assert r.status == 200, r.body
    ban = on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_id)).extremities[-1]
    # p1 sends from the state before its ban: allowed there, not now → soft-failed.
    eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                            {"msgtype": "m.text", "body": "from the past"}, state=before.state,
                            prev_events=list(before.extremities), depth=HUGE)  # fmt: skip
    status, body = peer.send(srv, uuid.uuid4().hex, [ev])
    assert (status, body) == (200, {"pdus": {eid: {}}})
    assert meta(srv, eid).soft_failed
    mine = send(admin, room_id, "after the soft-failed event")
    assert depth(srv, mine) == depth(srv, ban) + 1
    assert on_server(srv, lambda: srv.hs.store.get_event(mine))["prev_events"] == [ban]


def test_rejected_event_does_not_poison_the_head_after_a_restart(tmp_path, test_ca):
    srv = start_fed_server(tmp_path, test_ca, "restart", registration="open")
    port = srv.hs.federation_bound_port
    peer = FakePeer(test_ca, "peer-restart").start()
    try:
        admin = Client(srv.base_url).register("admin")
        room_id = create_room(admin, room_version="10")
        peer.join(srv, room_id, peer.user("p1"))
        last = send(admin, room_id, "before")
        pl = on_server(
            srv, lambda: srv.hs.rooms.current_state_event(room_id, "m.room.power_levels")
        )
        content = {**pl["content"], "users": {**pl["content"]["users"], peer.user("p1"): 100}}
        # p1 may not change the power levels: rejected (check 5), stored with its depth.
        eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.power_levels", content,
                                "", depth=HUGE)  # fmt: skip
        status, body = peer.send(srv, uuid.uuid4().hex, [ev])
        assert status == 200 and "error" in body["pdus"][eid], body
        assert meta(srv, eid).rejected and meta(srv, eid).depth == HUGE
        srv.stop()
        srv = start_fed_server(tmp_path, test_ca, "restart", port=port, registration="open")
        admin = Client(srv.base_url, admin.access_token)
        mine = send(admin, room_id, "after the restart")
        assert depth(srv, mine) == depth(srv, last) + 1
        status, body = peer.request(
            srv, "GET", f"{V1}/make_join/{q(room_id)}/{q(peer.user('p2'))}?ver=10"
        )
        assert status == 200 and body["event"]["depth"] == depth(srv, mine) + 1, body
    finally:
        peer.stop()
        srv.stop()
