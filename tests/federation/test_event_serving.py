"""Read endpoints other servers call (/event, /state, /state_ids, /event_auth, /backfill,
/get_missing_events): only servers in the room, history visibility applied (redacted copies),
rejected events never served, bad input refused; and process_room_state (a send_join response
ingested: verified, checked, persisted so the room works for a local user)."""

from __future__ import annotations

import uuid

import pytest

from bastion.core.events import compute_event_id, compute_room_id_v12, sign_event
from bastion.errors import MatrixError
from tests.support.federation import run, start_fed_server
from tests.support.harness import Client
from tests.support.peer import V1, FakePeer, on_server
from tests.support.rooms import create_room, send, sync

V3 = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def world(tmp_path_factory, test_ca):
    tmp = tmp_path_factory.mktemp("reads")
    srv = start_fed_server(tmp, test_ca, "bastion", registration="open")
    peer = FakePeer(test_ca, "peer").start()
    outsider = FakePeer(test_ca, "outsider").start()
    admin = Client(srv.base_url).register("admin" + uuid.uuid4().hex[:6])
    yield srv, peer, outsider, admin
    peer.stop()
    outsider.stop()
    srv.stop()


def join(srv, peer, room_id, local="p1"):
    u = peer.user(local)
    eid, ev = peer.build_on(srv, room_id, u, "m.room.member", {"membership": "join"}, u)
    status, body = peer.send(srv, uuid.uuid4().hex, [ev])
    assert status == 200 and body["pdus"] == {eid: {}}, body
    return eid


def test_reads_for_members_only_with_visibility(world):
    srv, peer, outsider, admin = world
    room_id = create_room(admin, initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}])  # fmt: skip
    secret = send(admin, room_id, "before you came")
    join_id = join(srv, peer, room_id)
    after = send(admin, room_id, "after you came")
    # Outsider: not in the room.
    for method, path, body in (
        ("GET", f"{V1}/event/{after}", None),
        ("GET", f"{V1}/state_ids/{room_id}?event_id={after}", None),
        ("GET", f"{V1}/state/{room_id}?event_id={after}", None),
        ("GET", f"{V1}/event_auth/{room_id}/{after}", None),
        ("GET", f"{V1}/backfill/{room_id}?v={after}&limit=10", None),
        ("POST", f"{V1}/get_missing_events/{room_id}",
         {"earliest_events": [], "latest_events": [after]}),
    ):  # fmt: skip
        s, b = outsider.request(srv, method, path, body)
        assert (s, b["errcode"]) == (403, "M_FORBIDDEN"), path
    # Member server: whole events after its join, the earlier one redacted (visibility joined).
    s, b = peer.request(srv, "GET", f"{V1}/event/{after}")
    assert s == 200 and b["pdus"][0]["content"]["body"] == "after you came"
    assert b["origin"] == srv.hs.server_name
    s, b = peer.request(srv, "GET", f"{V1}/event/{secret}")
    assert s == 200 and b["pdus"][0]["content"] == {}
    # state_ids / state before the event, with auth chains.
    s, b = peer.request(srv, "GET", f"{V1}/state_ids/{room_id}?event_id={after}")
    assert s == 200 and join_id in b["pdu_ids"] and b["auth_chain_ids"]
    state_ids = on_server(srv, lambda: srv.hs.store.get_event_row(after).sg_before)
    expected = on_server(srv, lambda: set(srv.hs.store.get_state_group(state_ids).values()))
    assert set(b["pdu_ids"]) == expected
    s, b2 = peer.request(srv, "GET", f"{V1}/state/{room_id}?event_id={after}")
    assert s == 200 and len(b2["pdus"]) == len(b["pdu_ids"])
    assert len(b2["auth_chain"]) == len(b["auth_chain_ids"])
    s, b = peer.request(srv, "GET", f"{V1}/event_auth/{room_id}/{after}")
    assert s == 200 and {e["type"] for e in b["auth_chain"]} >= {"m.room.create", "m.room.member"}
    # backfill: from the newest event back, at most limit, deepest first.
    s, b = peer.request(srv, "GET", f"{V1}/backfill/{room_id}?v={after}&limit=3")
    assert s == 200 and len(b["pdus"]) == 3
    depths = [e["depth"] for e in b["pdus"]]
    assert depths == sorted(depths, reverse=True)
    # get_missing_events: between earliest and latest, oldest first.
    s, b = peer.request(srv, "POST", f"{V1}/get_missing_events/{room_id}",
                        {"earliest_events": [join_id], "latest_events": [after], "limit": 10})  # fmt: skip
    assert s == 200 and b["events"] == []  # after's only prev event is the join
    s, b = peer.request(srv, "POST", f"{V1}/get_missing_events/{room_id}",
                        {"earliest_events": [secret], "latest_events": [after], "limit": 10})  # fmt: skip
    assert s == 200 and [compute_event_id(e, "12") for e in b["events"]] == [join_id]
    # Bad input.
    assert peer.request(srv, "GET", f"{V1}/state_ids/{room_id}")[1]["errcode"] == "M_MISSING_PARAM"
    assert peer.request(srv, "GET", f"{V1}/backfill/{room_id}?limit=3")[0] == 400
    s, b = peer.request(srv, "POST", f"{V1}/get_missing_events/{room_id}",
                        {"earliest_events": "x", "latest_events": []})  # fmt: skip
    assert (s, b["errcode"]) == (400, "M_BAD_JSON")
    s, b = peer.request(srv, "GET", f"{V1}/event/$nope")
    assert (s, b["errcode"]) == (404, "M_NOT_FOUND")
    s, b = peer.request(srv, "GET", f"{V1}/state_ids/!unknown:x?event_id={after}")
    assert s == 403


def test_rejected_events_are_never_served(world):
    srv, peer, outsider, admin = world
    room_id = create_room(admin)
    join(srv, peer, room_id)
    eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.power_levels",
                            {"users": {peer.user("p1"): 100}}, "")  # fmt: skip
    s, b = peer.send(srv, uuid.uuid4().hex, [ev])
    assert "error" in b["pdus"][eid]
    s, b = peer.request(srv, "GET", f"{V1}/event/{eid}")
    assert s == 404
    s, b = peer.request(srv, "GET", f"{V1}/state_ids/{room_id}?event_id={eid}")
    assert s == 404
    head = on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_id).extremities[-1])
    s, b = peer.request(srv, "GET", f"{V1}/backfill/{room_id}?v={head}&limit=50")
    assert s == 200 and eid not in {compute_event_id(e, "12") for e in b["pdus"]}


def _remote_room(peer, version="12"):
    """A room made entirely on the peer: create, creator join, power levels, public join rules,
    a few members. Returns (room_id, state events, auth chain)."""
    creator = peer.user("creator")
    ts = 1_700_000_000_000 + uuid.uuid4().int % 1_000_000  # a new room each time
    create = sign_event({"type": "m.room.create", "state_key": "", "sender": creator,
                         "content": {"room_version": version}, "origin_server_ts": ts,
                         "depth": 1, "prev_events": [], "auth_events": []},
                        version, peer.server_name, peer.key_id, peer.key)  # fmt: skip
    room_id = compute_room_id_v12(create)
    create_id = compute_event_id(create, version)
    peer.events[create_id] = create
    state = {("m.room.create", ""): create_id}
    prev, depth = create_id, 1

    def add(etype, content, state_key, sender=creator):
        nonlocal prev, depth
        from bastion.core.auth_rules import auth_types_for_event

        probe = {"type": etype, "sender": sender, "content": content, "room_id": room_id,
                 "state_key": state_key}  # fmt: skip
        auth = [state[k] for k in auth_types_for_event(probe, version) if k in state]
        depth += 1
        eid, ev = peer.build(version, room_id, sender, etype, content, state_key,
                             prev_events=[prev], auth_events=auth, depth=depth)  # fmt: skip
        state[(etype, state_key)] = eid
        prev = eid
        return eid

    add("m.room.member", {"membership": "join"}, creator)
    add("m.room.power_levels", {"users": {}, "users_default": 0}, "")
    add("m.room.join_rules", {"join_rule": "public"}, "")
    add("m.room.name", {"name": "far away"}, "")
    for i in range(20):
        u = peer.user(f"m{i}")
        add("m.room.member", {"membership": "join"}, u, sender=u)
    return room_id, state, prev, depth


def test_process_room_state_joins_a_remote_room(world):
    srv, peer, outsider, admin = world
    room_id, state, prev, depth = _remote_room(peer)
    bob = Client(srv.base_url).register("bob" + uuid.uuid4().hex[:6])
    from bastion.core.auth_rules import auth_types_for_event

    content = {"membership": "join"}
    probe = {"type": "m.room.member", "sender": bob.user_id, "content": content,
             "room_id": room_id, "state_key": bob.user_id}  # fmt: skip
    auth = [state[k] for k in auth_types_for_event(probe, "12") if k in state]
    join_ev = sign_event({**probe, "origin_server_ts": 1_700_000_001_000, "depth": depth + 1,
                          "prev_events": [prev], "auth_events": auth}, "12",
                         srv.hs.server_name, srv.hs.signing_key.key_id, srv.hs.signing_key.key)  # fmt: skip
    state_events = [peer.events[e] for e in state.values()]
    chain = peer._auth_chain({"auth_events": [e for e in state.values()]})  # noqa: SLF001
    # A forged state event in the response: dropped, the rest still checks out.
    from nacl.signing import SigningKey

    forged_id, forged = peer.build("12", room_id, peer.user("creator"), "m.room.topic",
                                   {"topic": "forged"}, "", prev_events=[prev],
                                   auth_events=[state[("m.room.power_levels", "")],
                                                state[("m.room.member", peer.user("creator"))]],
                                   depth=depth + 1, key=SigningKey.generate())  # fmt: skip
    run(srv, srv.hs.federation.events.process_room_state(
        peer.server_name, room_id, "12", [*state_events, forged], chain, join_ev))  # fmt: skip
    assert on_server(srv, lambda: srv.hs.store.get_event_meta([forged_id])) == {}
    join_id = compute_event_id(join_ev, "12")
    assert on_server(srv, lambda: srv.hs.rooms.membership_of(room_id, bob.user_id)) == "join"
    head = on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_id))
    assert head.extremities == [join_id] and len(head.state) == len(state) + 1
    body = sync(bob)
    assert room_id in body["rooms"]["join"]
    names = [e for e in body["rooms"]["join"][room_id]["state"]["events"]
             if e["type"] == "m.room.name"] + [e for e in body["rooms"]["join"][room_id]
                                               ["timeline"]["events"] if e["type"] == "m.room.name"]  # fmt: skip
    assert names and names[0]["content"]["name"] == "far away"
    # The local user can now talk in the room (built on the join).
    eid = send(bob, room_id, "hello remote room")
    assert on_server(srv, lambda: srv.hs.store.get_event(eid))["prev_events"] == [join_id]
    # And the peer's next event over /send is accepted on top.
    m_id, m = peer.build_on(srv, room_id, peer.user("m3"), "m.room.message",
                            {"msgtype": "m.text", "body": "hi bob"})  # fmt: skip
    assert peer.send(srv, uuid.uuid4().hex, [m])[1]["pdus"] == {m_id: {}}


def test_process_room_state_refuses_a_join_the_state_does_not_allow(world):
    srv, peer, outsider, admin = world
    room_id, state, prev, depth = _remote_room(peer)
    # Make the room invite-only on the peer's side.
    from bastion.core.auth_rules import auth_types_for_event

    probe = {"type": "m.room.join_rules", "sender": peer.user("creator"),
             "content": {"join_rule": "invite"}, "room_id": room_id, "state_key": ""}  # fmt: skip
    auth = [state[k] for k in auth_types_for_event(probe, "12") if k in state]
    jr_id, jr = peer.build("12", room_id, probe["sender"], probe["type"], probe["content"], "",
                           prev_events=[prev], auth_events=auth, depth=depth + 1)  # fmt: skip
    state[("m.room.join_rules", "")] = jr_id
    carol = "@carol:" + srv.hs.server_name
    probe = {"type": "m.room.member", "sender": carol, "content": {"membership": "join"},
             "room_id": room_id, "state_key": carol}  # fmt: skip
    auth = [state[k] for k in auth_types_for_event(probe, "12") if k in state]
    join_ev = sign_event({**probe, "origin_server_ts": 1_700_000_002_000, "depth": depth + 2,
                          "prev_events": [jr_id], "auth_events": auth}, "12",
                         srv.hs.server_name, srv.hs.signing_key.key_id, srv.hs.signing_key.key)  # fmt: skip
    state_events = [peer.events[e] for e in state.values()]
    chain = peer._auth_chain({"auth_events": list(state.values())})  # noqa: SLF001
    with pytest.raises(MatrixError) as e:
        run(srv, srv.hs.federation.events.process_room_state(
            peer.server_name, room_id, "12", state_events, chain, join_ev))  # fmt: skip
    assert e.value.errcode == "M_FORBIDDEN"
    assert on_server(srv, lambda: srv.hs.store.get_room_version(room_id)) is None


def _local_join(srv, room_id, state, prev, depth, user_id):
    """A local user's join event on top of a remote room, signed by the server."""
    from bastion.core.auth_rules import auth_types_for_event

    probe = {"type": "m.room.member", "sender": user_id, "content": {"membership": "join"},
             "room_id": room_id, "state_key": user_id}  # fmt: skip
    auth = [state[k] for k in auth_types_for_event(probe, "12") if k in state]
    return sign_event({**probe, "origin_server_ts": 1_700_000_003_000, "depth": depth + 1,
                       "prev_events": [prev], "auth_events": auth}, "12",
                      srv.hs.server_name, srv.hs.signing_key.key_id, srv.hs.signing_key.key)  # fmt: skip


def test_process_room_state_ignores_events_of_another_room(world):
    """A send_join response naming, among the room's state, an event of another room that this
    server already holds: that event is not the joined room's state (S-S "Joining Rooms": the
    state is the room's; "Checks performed on receipt of a PDU" hold per room)."""
    srv, peer, outsider, admin = world
    bob = "@bob" + uuid.uuid4().hex[:6] + ":" + srv.hs.server_name
    ids = {}
    for name in ("a", "b"):
        room_id, state, prev, depth = _remote_room(peer)
        ids[name] = (room_id, state)
        state_events = [peer.events[e] for e in state.values()]
        if name == "b":  # room A's name event slipped into room B's state
            state_events.append(peer.events[ids["a"][1][("m.room.name", "")]])
        chain = peer._auth_chain({"auth_events": list(state.values())})  # noqa: SLF001
        join_ev = _local_join(srv, room_id, state, prev, depth, bob)
        run(srv, srv.hs.federation.events.process_room_state(
            peer.server_name, room_id, "12", state_events, chain, join_ev))  # fmt: skip
    room_b, state_b = ids["b"]
    head = on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_b))
    assert head.state[("m.room.name", "")] == state_b[("m.room.name", "")]
    assert ids["a"][1][("m.room.name", "")] not in head.state.values()
