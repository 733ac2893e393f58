"""Forks in the room DAG against a scripted federation peer (tests/support/peer.py).

* Soft failure (S-S API "Soft failure"): a soft-failed event is never served to clients, never
  a forward extremity or prev event of ours, but takes part in state resolution when a later
  event references it — the spec's example, where the soft-failed state event ends up in the
  room's state and clients are told through the ``state`` section of /sync; the room head
  loaded from the store ignores soft-failed events.
* /sync after a fork (C-S API "Syncing"): ``state`` and ``state_after`` are built from the
  room's resolved state, not from the state on the branch of the room's newest event.
* Backfill (S-S API "Backfilling and retrieving missing events"): a response is checked oldest
  first (the state at each event comes from its prev events, not from ``/state_ids``), and
  /messages pages through it newest first, across several backfill rounds.
"""

from __future__ import annotations

import json
import uuid

import pytest

from bastion.core.auth_rules import auth_types_for_event
from bastion.core.events import compute_event_id, compute_room_id_v12, sign_event
from tests.support.federation import run
from tests.support.harness import Client
from tests.support.peer import V1, bastion_and_peer, on_server
from tests.support.rooms import create_room, send, sync

V3 = "/_matrix/client/v3"
#: Remote events of the forks carry timestamps after the peer's default (1_700_000_000_000),
#: which orders them in state resolution.
BASE_TS = 1_700_000_100_000


@pytest.fixture(scope="module")
def world(tmp_path_factory, test_ca):
    with bastion_and_peer(tmp_path_factory.mktemp("forks"), test_ca) as world:
        yield world


def txn() -> str:
    return uuid.uuid4().hex


def join_peer_users(srv, peer, room_id: str, *users: str) -> None:
    for u in users:
        eid, ev = peer.build_on(srv, room_id, u, "m.room.member", {"membership": "join"}, u)
        status, body = peer.send(srv, txn(), [ev])
        assert status == 200 and body["pdus"] == {eid: {}}, body


def head(srv, room_id):
    return on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_id))


def meta(srv, eid):
    return on_server(srv, lambda: srv.hs.store.get_event_meta([eid]).get(eid))


def group_state(srv, group):
    return on_server(srv, lambda: dict(srv.hs.store.get_state_group(group)))


def state_map(events: list[dict]) -> dict:
    return {(e["type"], e["state_key"]): e["event_id"] for e in events}


def timeline_ids(room: dict) -> list[str]:
    return [e["event_id"] for e in room["timeline"]["events"]]


def test_soft_failed_event_takes_part_in_state_resolution(world):
    """The spec's example: C, on a branch before its sender left, is soft-failed; D, from a
    server that built on both branches, is accepted, and the state before D is the resolution
    of the states after both branches — C's topic wins (it is ordered before the leave)."""
    srv, peer, admin = world
    p1, p2 = peer.user("p1"), peer.user("p2")
    room_id = create_room(admin, power_level_content_override={
        "events": {"m.room.topic": 0, "m.room.power_levels": 100}})  # fmt: skip
    join_peer_users(srv, peer, room_id, p1, p2)
    old = head(srv, room_id)
    since = sync(admin)["next_batch"]
    l_id, leave = peer.build_on(srv, room_id, p2, "m.room.member", {"membership": "leave"}, p2,
                                ts=BASE_TS + 10)  # fmt: skip
    assert peer.send(srv, txn(), [leave])[1]["pdus"] == {l_id: {}}
    c_id, c = peer.build_on(srv, room_id, p2, "m.room.topic", {"topic": "other branch"}, "",
                            state=old.state, prev_events=old.extremities, ts=BASE_TS + 5)  # fmt: skip
    assert peer.send(srv, txn(), [c])[1]["pdus"] == {c_id: {}}
    m = meta(srv, c_id)
    assert m.soft_failed and not m.rejected
    assert head(srv, room_id).extremities == [l_id]
    assert ("m.room.topic", "") not in head(srv, room_id).state
    # Never served to clients, never built on.
    r = admin.request("GET", f"{V3}/rooms/{room_id}/event/{c_id}")
    assert (r.status, r.body.get("errcode")) == (404, "M_NOT_FOUND"), r.body
    r = admin.request("GET", f"{V3}/rooms/{room_id}/context/{c_id}")
    assert r.status == 404, r.body
    m0 = send(admin, room_id, "ours")
    assert on_server(srv, lambda: srv.hs.store.get_event(m0))["prev_events"] == [l_id]
    # D references our message and C.
    d_id, d = peer.build_on(srv, room_id, p1, "m.room.message", {"msgtype": "m.text",
                            "body": "both branches"}, prev_events=[m0, c_id])  # fmt: skip
    assert peer.send(srv, txn(), [d])[1]["pdus"] == {d_id: {}}
    md = meta(srv, d_id)
    assert not md.soft_failed and not md.rejected
    before_d = group_state(srv, md.sg_before)
    assert before_d[("m.room.topic", "")] == c_id
    assert before_d[("m.room.member", p2)] == l_id
    now = head(srv, room_id)
    assert now.extremities == [d_id]
    assert now.state[("m.room.topic", "")] == c_id and now.state[("m.room.member", p2)] == l_id
    assert group_state(srv, now.group) == now.state
    cur = on_server(srv, lambda: srv.hs.store.get_current_state_ids(room_id))
    assert cur == now.state
    r = admin.request("GET", f"{V3}/rooms/{room_id}/state/m.room.topic")
    assert (r.status, r.body) == (200, {"topic": "other branch"})
    # Clients learn C through the state section, never in a timeline.
    room = sync(admin, since)["rooms"]["join"][room_id]
    assert timeline_ids(room) == [l_id, m0, d_id]
    assert state_map(room["state"]["events"]) == {("m.room.topic", ""): c_id}
    room = sync(admin, since, use_state_after="true")["rooms"]["join"][room_id]
    assert c_id in state_map(room["state_after"]["events"]).values()
    r = admin.request("GET", f"{V3}/rooms/{room_id}/messages", query={"dir": "b", "limit": "50"})
    assert c_id not in [e["event_id"] for e in r.body["chunk"]]
    # Our next event builds on D alone.
    m1 = send(admin, room_id, "after")
    assert on_server(srv, lambda: srv.hs.store.get_event(m1))["prev_events"] == [d_id]


def test_reloaded_room_head_ignores_soft_failed_events(world):
    """The room head loaded from the store (after a restart) takes the state group of the
    room's current state, never the group after a soft-failed event."""
    srv, peer, admin = world
    p1, p2 = peer.user("p1"), peer.user("p2")
    room_id = create_room(admin, name="original")
    join_peer_users(srv, peer, room_id, p1, p2)
    old = head(srv, room_id)
    r = admin.request("POST", f"{V3}/rooms/{room_id}/ban", {"user_id": p2})
    assert r.status == 200, r.body
    r = admin.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.name/", {"name": "kept"})
    assert r.status == 200, r.body
    name_id = r.body["event_id"]
    c_id, c = peer.build_on(srv, room_id, p2, "m.room.message", {"msgtype": "m.text",
                            "body": "evading"}, state=old.state, prev_events=old.extremities)  # fmt: skip
    assert peer.send(srv, txn(), [c])[1]["pdus"] == {c_id: {}}
    assert meta(srv, c_id).soft_failed
    expected = head(srv, room_id).state
    on_server(srv, lambda: srv.hs.rooms.forget_head(room_id))
    reloaded = head(srv, room_id)
    assert reloaded.state == expected and c_id not in reloaded.extremities
    assert group_state(srv, reloaded.group) == expected
    r = admin.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.topic/", {"topic": "t"})
    assert r.status == 200, r.body
    after = group_state(srv, meta(srv, r.body["event_id"]).sg_after)
    assert after[("m.room.name", "")] == name_id
    assert after == on_server(srv, lambda: srv.hs.store.get_current_state_ids(room_id))


def test_sync_state_after_a_fork_is_the_resolved_state(world):
    """The peer's branch, made before our ban and rename, renames the room too (and loses the
    resolution) and sends a message on top: /sync's state and state_after carry the resolved
    state (our name, the ban), not the state on the branch of the room's newest event."""
    srv, peer, admin = world
    p1, p2 = peer.user("p1"), peer.user("p2")
    room_id = create_room(admin, name="original", power_level_content_override={
        "events": {"m.room.name": 0, "m.room.power_levels": 100}})  # fmt: skip
    join_peer_users(srv, peer, room_id, p1, p2)
    old = head(srv, room_id)
    r = admin.request("POST", f"{V3}/rooms/{room_id}/ban", {"user_id": p2})
    assert r.status == 200, r.body
    ban_id = head(srv, room_id).state[("m.room.member", p2)]
    r = admin.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.name/", {"name": "ours"})
    assert r.status == 200, r.body
    ours = r.body["event_id"]
    since = sync(admin)["next_batch"]
    theirs, f_name = peer.build_on(srv, room_id, p1, "m.room.name", {"name": "theirs"}, "",
                                   state=old.state, prev_events=old.extremities)  # fmt: skip
    f_state = {**old.state, ("m.room.name", ""): theirs}
    msg_id, f_msg = peer.build_on(srv, room_id, p1, "m.room.message", {"msgtype": "m.text",
                                  "body": "on our branch"}, state=f_state, prev_events=[theirs])  # fmt: skip
    assert peer.send(srv, txn(), [f_name, f_msg])[1]["pdus"] == {theirs: {}, msg_id: {}}
    assert not meta(srv, theirs).soft_failed and not meta(srv, msg_id).soft_failed
    now = head(srv, room_id)
    assert set(now.extremities) == {ours, msg_id}
    assert now.state[("m.room.name", "")] == ours and now.state[("m.room.member", p2)] == ban_id
    old_join = old.state[("m.room.member", p2)]
    flt = json.dumps({"room": {"timeline": {"limit": 1}}})

    # Initial syncs: the state is the resolved one, at the start and at the end of the timeline.
    room = sync(admin, filter=flt)["rooms"]["join"][room_id]
    assert timeline_ids(room) == [msg_id] and room["timeline"]["limited"]
    st = state_map(room["state"]["events"])
    assert st[("m.room.name", "")] == ours and st[("m.room.member", p2)] == ban_id
    room = sync(admin, filter=flt, use_state_after="true")["rooms"]["join"][room_id]
    st = state_map(room["state_after"]["events"])
    assert st[("m.room.name", "")] == ours and st[("m.room.member", p2)] == ban_id
    # Incremental, limited: the room's state did not change since the last sync.
    room = sync(admin, since, filter=flt)["rooms"]["join"][room_id]
    assert timeline_ids(room) == [msg_id] and room["timeline"]["limited"]
    ids = set(state_map(room["state"]["events"]).values())
    assert theirs not in ids and old_join not in ids, room["state"]
    for flt_ in (flt, None):
        q = {"use_state_after": "true"} | ({"filter": flt_} if flt_ else {})
        room = sync(admin, since, **q)["rooms"]["join"][room_id]
        ids = set(state_map(room["state_after"]["events"]).values())
        assert theirs not in ids and old_join not in ids, room["state_after"]
    # The members at the end of the fork are the resolved ones too.
    token = sync(admin)["next_batch"]
    r = admin.request("GET", f"{V3}/rooms/{room_id}/members", query={"at": token})
    assert r.status == 200, r.body
    got = {e["state_key"]: e["content"]["membership"] for e in r.body["chunk"]}
    assert got[p2] == "ban" and got[p1] == "join"


# ---------------------------------------------------------------------------------------------
# Backfill
# ---------------------------------------------------------------------------------------------
def remote_room_with_history(peer, n_messages: int, version: str = "12"):
    """A room made on the peer: create, creator join, power levels, public join rules, a name,
    then ``n_messages`` messages. Returns (room_id, state, last event ID, depth)."""
    creator = peer.user("creator")
    ts = BASE_TS + uuid.uuid4().int % 1_000_000
    create = sign_event({"type": "m.room.create", "state_key": "", "sender": creator,
                         "content": {"room_version": version}, "origin_server_ts": ts,
                         "depth": 1, "prev_events": [], "auth_events": []},
                        version, peer.server_name, peer.key_id, peer.key)  # fmt: skip
    room_id = compute_room_id_v12(create)
    create_id = compute_event_id(create, version)
    peer.events[create_id] = create
    state = {("m.room.create", ""): create_id}
    prev, depth = create_id, 1

    def add(etype, content, state_key=None):
        nonlocal prev, depth
        probe = {"type": etype, "sender": creator, "content": content, "room_id": room_id}
        if state_key is not None:
            probe["state_key"] = state_key
        auth = [state[k] for k in auth_types_for_event(probe, version) if k in state]
        depth += 1
        eid, _ = peer.build(version, room_id, creator, etype, content, state_key,
                            prev_events=[prev], auth_events=auth, depth=depth, ts=ts + depth)  # fmt: skip
        if state_key is not None:
            state[(etype, state_key)] = eid
        prev = eid

    add("m.room.member", {"membership": "join"}, creator)
    add("m.room.power_levels", {"users": {}, "users_default": 0}, "")
    add("m.room.join_rules", {"join_rule": "public"}, "")
    add("m.room.name", {"name": "long history"}, "")
    for i in range(1, n_messages + 1):
        add("m.room.message", {"msgtype": "m.text", "body": f"m{i}"})
    return room_id, state, prev, depth


def test_backfill_is_checked_oldest_first_and_pages_in_order(world):
    srv, peer, _ = world
    room_id, state, last, depth = remote_room_with_history(peer, 50)
    bob = Client(srv.base_url).register("bob" + uuid.uuid4().hex[:6])
    probe = {"type": "m.room.member", "sender": bob.user_id, "content": {"membership": "join"},
             "room_id": room_id, "state_key": bob.user_id}  # fmt: skip
    auth = [state[k] for k in auth_types_for_event(probe, "12") if k in state]
    join_ev = sign_event({**probe, "origin_server_ts": BASE_TS + 2_000_000, "depth": depth + 1,
                          "prev_events": [last], "auth_events": auth}, "12",
                         srv.hs.server_name, srv.hs.signing_key.key_id, srv.hs.signing_key.key)  # fmt: skip
    join_id = compute_event_id(join_ev, "12")
    state_events = [peer.events[e] for e in state.values()]
    chain = peer._auth_chain({"auth_events": list(state.values())})  # noqa: SLF001
    run(srv, srv.hs.federation.events.process_room_state(
        peer.server_name, room_id, "12", state_events, chain, join_ev))  # fmt: skip
    peer.serve_state_ids = True
    n0 = len(peer.requests)
    try:
        chunk: list[dict] = []
        query = {"dir": "b", "limit": "10"}
        for _ in range(20):
            r = bob.request("GET", f"{V3}/rooms/{room_id}/messages", query=query)
            assert r.status == 200, r.body
            chunk.extend(r.body["chunk"])
            if "end" not in r.body:
                break
            query = {**query, "from": r.body["end"]}
    finally:
        peer.serve_state_ids = False
    asked = [p for _, p in peer.requests[n0:]]
    assert sum(p.startswith(f"{V1}/backfill/") for p in asked) >= 3  # 20 events a round
    state_ids = [p for p in asked if p.startswith(f"{V1}/state_ids/")]
    assert len(state_ids) <= 3, asked  # one a round: the state at its oldest event's prev
    ids = [e["event_id"] for e in chunk]
    assert len(ids) == len(set(ids)), "a page repeated events"
    bodies = [e["content"]["body"] for e in chunk if e["type"] == "m.room.message"]
    assert bodies == [f"m{i}" for i in range(50, 0, -1)]
    assert ids[0] == join_id
    types = [e["type"] for e in chunk if e["type"] != "m.room.message"]
    assert types == ["m.room.member", "m.room.name", "m.room.join_rules",
                     "m.room.power_levels", "m.room.member"]  # fmt: skip
    # Forwards from the oldest backfilled event: the same events, oldest first.
    r = bob.request("GET", f"{V3}/rooms/{room_id}/messages",
                    query={"dir": "f", "limit": "100", "from": query["from"]})  # fmt: skip
    assert r.status == 200, r.body
    fwd = [e["event_id"] for e in r.body["chunk"]]
    assert fwd == ids[::-1][-len(fwd) :] and fwd[-1] == join_id, fwd
