"""The inbound PDU pipeline against a scripted federation peer (tests/support/peer.py):
valid events reach local /sync; forged signatures are dropped; a wrong content hash keeps the
redacted event; events failing auth are rejected and never served; unknown prev events are
fetched with get_missing_events (or the PDU fails when they cannot be had); a fork trying to
undo a ban is soft-failed and state resolution keeps the ban; oversized transactions, bad
X-Matrix headers, floods, ACLs and the origin deny list are refused; retried transactions get
the first answer."""

from __future__ import annotations

import dataclasses
import logging
import uuid

import pytest

from bastion.core.rate_limit import TokenBuckets
from tests.support.federation import run
from tests.support.harness import Client
from tests.support.peer import V1, bastion_and_peer, on_server
from tests.support.rooms import create_room, send, sync

V3 = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def world(tmp_path_factory, test_ca):
    with bastion_and_peer(tmp_path_factory.mktemp("inbound"), test_ca) as world:
        yield world


def txn() -> str:
    return uuid.uuid4().hex


def joined_room(srv, peer, admin, *users: str, **create) -> str:
    room_id = create_room(admin, **create)
    for u in users or ("p1",):
        eid, ev = peer.build_on(srv, room_id, peer.user(u), "m.room.member",
                                {"membership": "join"}, peer.user(u))  # fmt: skip
        status, body = peer.send(srv, txn(), [ev])
        assert status == 200 and body["pdus"] == {eid: {}}, body
    return room_id


def meta(srv, eid):
    return on_server(srv, lambda: srv.hs.store.get_event_meta([eid]).get(eid))


def membership(srv, room_id, user_id):
    return on_server(srv, lambda: srv.hs.rooms.membership_of(room_id, user_id))


def timeline_ids(admin, room_id) -> list[str]:
    r = admin.request("GET", f"{V3}/rooms/{room_id}/messages", query={"dir": "b", "limit": "50"})
    assert r.status == 200, r.body
    return [e["event_id"] for e in r.body["chunk"]]


def test_valid_events_reach_local_sync(world):
    srv, peer, admin = world
    room_id = joined_room(srv, peer, admin)
    assert membership(srv, room_id, peer.user("p1")) == "join"
    since = sync(admin)["next_batch"]
    eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                            {"msgtype": "m.text", "body": "hello from afar"})  # fmt: skip
    status, body = peer.send(srv, "t-valid", [ev])
    assert (status, body) == (200, {"pdus": {eid: {}}})
    got = sync(admin, since)["rooms"]["join"][room_id]["timeline"]["events"]
    assert [(e["event_id"], e["content"]["body"]) for e in got] == [(eid, "hello from afar")]
    # A retried transaction gets the first answer and is not processed again.
    assert peer.send(srv, "t-valid", [ev]) == (200, {"pdus": {eid: {}}})
    # A local reply builds on the remote event.
    reply = send(admin, room_id, "welcome")
    row = on_server(srv, lambda: srv.hs.store.get_event(reply))
    assert row["prev_events"] == [eid]


def test_forged_signature_is_dropped(world, caplog):
    srv, peer, admin = world
    room_id = joined_room(srv, peer, admin)
    from nacl.signing import SigningKey

    eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                            {"msgtype": "m.text", "body": "forged"}, key=SigningKey.generate())  # fmt: skip
    with caplog.at_level(logging.INFO, logger="bastion.federation.pdu"):
        status, body = peer.send(srv, txn(), [ev])
    assert status == 200 and "signatures" in body["pdus"][eid]["error"]
    assert meta(srv, eid) is None
    assert any(eid in r.getMessage() and peer.server_name in r.getMessage()
               for r in caplog.records)  # fmt: skip
    # An event claiming a sender of another server, signed only by the peer: dropped too.
    eid2, ev2 = peer.build_on(srv, room_id, admin.user_id, "m.room.message",
                              {"msgtype": "m.text", "body": "impersonation"})  # fmt: skip
    status, body = peer.send(srv, txn(), [ev2])
    assert status == 200 and "error" in body["pdus"][eid2]
    assert meta(srv, eid2) is None


def test_wrong_content_hash_keeps_the_redacted_event(world):
    srv, peer, admin = world
    room_id = joined_room(srv, peer, admin)
    eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                            {"msgtype": "m.text", "body": "original"})  # fmt: skip
    tampered = {**ev, "content": {"msgtype": "m.text", "body": "tampered"}}
    status, body = peer.send(srv, txn(), [tampered])
    assert (status, body["pdus"][eid]) == (200, {})
    stored = on_server(srv, lambda: srv.hs.store.get_event(eid))
    assert stored["content"] == {}
    assert eid in timeline_ids(admin, room_id)


def test_event_failing_auth_is_rejected_and_never_served(world):
    srv, peer, admin = world
    room_id = joined_room(srv, peer, admin)
    # p1 has power level 0 and may not change the power levels.
    pl = on_server(srv, lambda: srv.hs.rooms.current_state_event(room_id, "m.room.power_levels"))
    content = {**pl["content"], "users": {**pl["content"]["users"], peer.user("p1"): 100}}
    eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.power_levels", content, "")
    status, body = peer.send(srv, txn(), [ev])
    assert status == 200 and "rule" in body["pdus"][eid]["error"]
    m = meta(srv, eid)
    assert m is not None and m.rejected
    assert eid not in timeline_ids(admin, room_id)
    assert on_server(srv, lambda: srv.hs.store.get_event(eid)) is None
    s, b = peer.request(srv, "GET", f"{V1}/event/{eid}")
    assert (s, b["errcode"]) == (404, "M_NOT_FOUND")
    # Current state is unchanged, and the next event does not build on the rejected one.
    head = on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_id))
    assert head.state[("m.room.power_levels", "")] != eid
    nxt = send(admin, room_id, "after")
    assert eid not in on_server(srv, lambda: srv.hs.store.get_event(nxt))["prev_events"]
    # An event citing the rejected event as an auth event is rejected as well.
    eid2, ev2 = peer.build_on(srv, room_id, peer.user("p1"), "m.room.name", {"name": "x"}, "",
                              state={**on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_id).state),
                                     ("m.room.power_levels", ""): eid})  # fmt: skip
    status, body = peer.send(srv, txn(), [ev2])
    assert "error" in body["pdus"][eid2]
    assert meta(srv, eid2).rejected


def test_unknown_prev_events_are_fetched(world):
    srv, peer, admin = world
    room_id = joined_room(srv, peer, admin)
    a_id, a = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                            {"msgtype": "m.text", "body": "A"})  # fmt: skip
    a_depth = a["depth"]
    b_id, b = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                            {"msgtype": "m.text", "body": "B"}, prev_events=[a_id],
                            depth=a_depth + 1)  # fmt: skip
    peer.missing_events = [a]
    status, body = peer.send(srv, txn(), [b])
    assert (status, body["pdus"]) == (200, {b_id: {}})
    assert any(p.startswith(f"{V1}/get_missing_events/") for _, p in peer.requests)
    assert not meta(srv, a_id).outlier and not meta(srv, b_id).outlier
    ids = timeline_ids(admin, room_id)
    assert ids.index(b_id) < ids.index(a_id)  # newest first


def test_unfetchable_prev_events_fail_the_pdu_only(world):
    srv, peer, admin = world
    room_id = joined_room(srv, peer, admin)
    ghost = "$" + "g" * 43
    eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                            {"msgtype": "m.text", "body": "orphan"}, prev_events=[ghost], depth=50)  # fmt: skip
    peer.missing_events = []
    ok_id, ok = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                              {"msgtype": "m.text", "body": "fine"})  # fmt: skip
    status, body = peer.send(srv, txn(), [ev, ok])
    assert status == 200
    assert "error" in body["pdus"][eid] and body["pdus"][ok_id] == {}
    assert meta(srv, eid) is None
    assert admin.request("GET", "/_matrix/client/versions").status == 200


def test_fork_cannot_undo_a_ban(world):
    srv, peer, admin = world
    room_id = joined_room(srv, peer, admin, "p1", "p2")
    p1, p2 = peer.user("p1"), peer.user("p2")
    old_state = on_server(srv, lambda: dict(srv.hs.rooms.engine.snapshot(room_id).state))
    old_ext = on_server(srv, lambda: list(srv.hs.rooms.engine.snapshot(room_id).extremities))
    r = admin.request("POST", f"{V3}/rooms/{room_id}/ban", {"user_id": p2, "reason": "spam"})
    assert r.status == 200, r.body
    assert membership(srv, room_id, p2) == "ban"
    since = sync(admin)["next_batch"]
    # p2, on the branch before the ban, sends a message and re-asserts its join.
    m_id, m = peer.build_on(srv, room_id, p2, "m.room.message", {"msgtype": "m.text",
                            "body": "still here"}, state=old_state, prev_events=old_ext)  # fmt: skip
    j_id, j = peer.build_on(srv, room_id, p2, "m.room.member", {"membership": "join",
                            "displayname": "back"}, p2, state=old_state, prev_events=[m_id])  # fmt: skip
    status, body = peer.send(srv, txn(), [m, j])
    assert body["pdus"] == {m_id: {}, j_id: {}}  # allowed by the state before them ...
    assert meta(srv, m_id).soft_failed and meta(srv, j_id).soft_failed  # ... not by the room now
    assert membership(srv, room_id, p2) == "ban"
    # p1 sends on the old branch: accepted, a fork; resolving the two extremities keeps the ban.
    f_id, f = peer.build_on(srv, room_id, p1, "m.room.message", {"msgtype": "m.text",
                            "body": "fork"}, state=old_state, prev_events=old_ext)  # fmt: skip
    status, body = peer.send(srv, txn(), [f])
    assert body["pdus"] == {f_id: {}}
    m_f = meta(srv, f_id)
    assert not m_f.soft_failed and not m_f.rejected
    head = on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_id))
    assert f_id in head.extremities and len(head.extremities) == 2
    assert membership(srv, room_id, p2) == "ban"
    ban_id = head.state[("m.room.member", p2)]
    assert on_server(srv, lambda: srv.hs.store.get_event(ban_id))["content"]["membership"] == "ban"
    got = [
        e["event_id"] for e in sync(admin, since)["rooms"]["join"][room_id]["timeline"]["events"]
    ]
    assert f_id in got and m_id not in got and j_id not in got
    # The next local event merges the fork, and the state stays resolved.
    nxt = send(admin, room_id, "merge")
    assert set(on_server(srv, lambda: srv.hs.store.get_event(nxt))["prev_events"]) == set(
        head.extremities
    )
    assert membership(srv, room_id, p2) == "ban"


def test_remote_ban_of_a_local_user_reaches_their_sync(world):
    srv, peer, admin = world
    room_id = create_room(admin)
    bob = Client(srv.base_url).register("bob" + uuid.uuid4().hex[:6])
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    # Give p1 the power to ban (admin raises p1 to 100).
    p1 = peer.user("p1")
    eid, ev = peer.build_on(srv, room_id, p1, "m.room.member", {"membership": "join"}, p1)
    assert peer.send(srv, txn(), [ev])[1]["pdus"] == {eid: {}}
    pl = on_server(srv, lambda: srv.hs.rooms.current_state_event(room_id, "m.room.power_levels"))
    content = {**pl["content"], "users": {**pl["content"]["users"], p1: 100}}
    r = admin.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.power_levels/", content)
    assert r.status == 200, r.body
    since = sync(bob)["next_batch"]
    ban_id, ban = peer.build_on(srv, room_id, p1, "m.room.member", {"membership": "ban"},
                                bob.user_id)  # fmt: skip
    assert peer.send(srv, txn(), [ban])[1]["pdus"] == {ban_id: {}}
    assert membership(srv, room_id, bob.user_id) == "ban"
    body = sync(bob, since)
    assert room_id in body["rooms"].get("leave", {}), body["rooms"]
    r = bob.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/x1", {"body": "no"})
    assert r.status == 403


def test_transaction_limits_and_body_shape(world):
    srv, peer, admin = world
    s, b = peer.send(srv, txn(), [{}] * 51)
    assert (s, b["errcode"]) == (400, "M_TOO_LARGE")
    s, b = peer.send(srv, txn(), [], edus=[{}] * 101)
    assert (s, b["errcode"]) == (400, "M_TOO_LARGE")
    s, b = peer.request(srv, "PUT", f"{V1}/send/{txn()}",
                        {"origin": "evil.example", "origin_server_ts": 1, "pdus": []})  # fmt: skip
    assert (s, b["errcode"]) == (403, "M_FORBIDDEN")
    s, b = peer.request(srv, "PUT", f"{V1}/send/{txn()}",
                        {"origin": peer.server_name, "origin_server_ts": 1, "pdus": {}})  # fmt: skip
    assert (s, b["errcode"]) == (400, "M_BAD_JSON")
    # Junk PDUs, unknown rooms and junk EDUs: 200, nothing stored.
    s, b = peer.send(srv, txn(), [7, {"room_id": "!nope:x", "type": "m.room.message"}],
                     edus=[3, {"edu_type": "m.unknown", "content": {}}])  # fmt: skip
    assert s == 200 and all("error" in v for v in b["pdus"].values())
    # A body above the /send cap (but the route accepts more than the 1 MiB global cap).
    big = {"origin": peer.server_name, "origin_server_ts": 1, "pdus": [],
           "edus": [{"edu_type": "m.unknown", "content": {"x": "y" * 60000}}] * 30}  # fmt: skip
    s, _ = peer.request(srv, "PUT", f"{V1}/send/{txn()}", big)
    assert s == 200
    huge = {**big, "edus": [{"edu_type": "m.unknown", "content": {"x": "y" * 200_000}}] * 60}
    s, b = peer.request(srv, "PUT", f"{V1}/send/{txn()}", huge)
    assert (s, b["errcode"]) == (413, "M_TOO_LARGE")


def test_bad_x_matrix_headers_are_401(world):
    srv, peer, admin = world
    body = {"origin": peer.server_name, "origin_server_ts": 1, "pdus": []}
    path = f"{V1}/send/{txn()}"
    assert peer.request(srv, "PUT", path, body, sign=False)[0] == 401
    s, _ = peer.request(srv, "PUT", path, body, sign=False,
                        headers={"Authorization": f'X-Matrix origin="{peer.server_name}",'
                                 f'key="{peer.key_id}",sig="AAAA"'})  # fmt: skip
    assert s == 401
    # Signed over another body.
    from bastion.core.x_matrix import authorization_header

    auth = authorization_header("PUT", path, peer.server_name, srv.hs.server_name, peer.key_id,
                                peer.key, {"other": 1})  # fmt: skip
    assert (
        peer.request(srv, "PUT", path, body, sign=False, headers={"Authorization": auth})[0] == 401
    )


def test_flood_is_rate_limited_and_server_stays_responsive(world):
    srv, peer, admin = world
    limits = srv.hs.guard.limits  # the per-origin /send bucket is the guard's federation_send
    buckets = limits._buckets["federation_send"]  # noqa: SLF001
    limits._buckets["federation_send"] = TokenBuckets(0.5, 3)  # noqa: SLF001
    try:
        statuses = [peer.send(srv, txn(), [])[0] for _ in range(8)]
        assert statuses[:3] == [200, 200, 200] and 429 in statuses
        s, b = peer.send(srv, txn(), [])
        assert (s, b["errcode"]) == (429, "M_LIMIT_EXCEEDED") and b["retry_after_ms"] > 0
        assert admin.request("GET", "/_matrix/client/versions").status == 200
    finally:
        limits._buckets["federation_send"] = buckets  # noqa: SLF001


def test_room_acl_and_origin_deny_list(world, test_ca):
    srv, peer, admin = world
    room_id = joined_room(srv, peer, admin)
    head_event = on_server(srv, lambda: srv.hs.rooms.engine.snapshot(room_id).extremities[-1])
    r = admin.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.server_acl/",
                      {"allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": True})  # fmt: skip
    assert r.status == 200, r.body
    eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                            {"msgtype": "m.text", "body": "denied"})  # fmt: skip
    s, b = peer.send(srv, txn(), [ev])
    assert s == 200 and "ACL" in b["pdus"][eid]["error"]
    assert meta(srv, eid) is None
    for method, path, body in (
        ("GET", f"{V1}/state_ids/{room_id}?event_id={head_event}", None),
        ("GET", f"{V1}/event_auth/{room_id}/{head_event}", None),
        ("GET", f"{V1}/backfill/{room_id}?v={head_event}&limit=5", None),
        ("POST", f"{V1}/get_missing_events/{room_id}",
         {"earliest_events": [], "latest_events": [head_event]}),
    ):  # fmt: skip
        s, b = peer.request(srv, method, path, body)
        assert (s, b["errcode"]) == (403, "M_FORBIDDEN"), path
    # Typing EDUs for a denied room never reach the handler.
    seen = []

    async def on_typing(origin, content):
        seen.append(content)

    srv.hs.federation.edu_handlers["m.typing"] = on_typing
    try:
        edu = {"edu_type": "m.typing",
               "content": {"room_id": room_id, "user_id": peer.user("p1"), "typing": True}}  # fmt: skip
        assert peer.send(srv, txn(), [], edus=[edu])[0] == 200
        assert seen == []
    finally:
        srv.hs.federation.edu_handlers.pop("m.typing", None)
    # The server-wide deny list refuses every request of the origin.
    cfg = srv.hs.config
    denied = dataclasses.replace(cfg, federation_domain_deny=("127.0.0.*",))
    srv.hs.config = srv.hs.federation.events.config = srv.hs.federation.acl.config = denied
    try:
        s, b = peer.send(srv, txn(), [])
        assert (s, b["errcode"]) == (403, "M_FORBIDDEN")
        # ... and outbound requests to it.
        from bastion.federation.client import EgressDenied

        with pytest.raises(EgressDenied):
            run(srv, srv.hs.federation.client.request("GET", peer.server_name, f"{V1}/version"))
    finally:
        srv.hs.config = srv.hs.federation.events.config = srv.hs.federation.acl.config = cfg
    assert peer.send(srv, txn(), [])[0] == 200


def test_edus_reach_registered_handlers(world):
    srv, peer, admin = world
    room_id = joined_room(srv, peer, admin)
    seen = []

    async def handler(origin, content):
        seen.append((origin, content))

    srv.hs.federation.edu_handlers["m.typing"] = handler
    try:
        edu = {"edu_type": "m.typing",
               "content": {"room_id": room_id, "user_id": peer.user("p1"), "typing": True}}  # fmt: skip
        assert peer.send(srv, txn(), [], edus=[edu])[0] == 200
        assert seen == [(peer.server_name, edu["content"])]
    finally:
        srv.hs.federation.edu_handlers.pop("m.typing", None)


def test_create_events_for_a_known_room_are_duplicates_or_refused(world):
    """A room's m.room.create arriving over /send (or to process_incoming_pdu, as backfill and
    get_missing_events use it): the room's own create event is a duplicate; another create
    event (a v12 one has no room_id) is refused with a logged reason and never stored."""
    srv, peer, admin = world
    room_id = joined_room(srv, peer, admin)  # room version 12, the default
    version = on_server(srv, lambda: srv.hs.store.get_room_version(room_id))
    assert version == "12"
    create_id = on_server(srv, lambda: srv.hs.store.get_current_state_ids(room_id))[
        ("m.room.create", "")
    ]
    create = on_server(srv, lambda: srv.hs.store.get_pdus([create_id])[create_id])
    assert "room_id" not in create
    s, b = peer.send(srv, txn(), [create])
    assert (s, b["pdus"]) == (200, {create_id: {}})
    got = run(srv, srv.hs.federation.events.process_incoming_pdu(peer.server_name, create, "12"))
    assert got == (create_id, None)
    # A v12 create event of another room, made by the peer.
    other_id, other = peer.build("12", room_id, peer.user("p1"), "m.room.create",
                                 {"room_version": "12"}, "", prev_events=[], auth_events=[],
                                 depth=1)  # fmt: skip
    other = {k: v for k, v in other.items() if k != "room_id"}
    from bastion.core.events import compute_event_id, sign_event

    other = sign_event({k: v for k, v in other.items() if k not in ("signatures", "hashes")},
                       "12", peer.server_name, peer.key_id, peer.key)  # fmt: skip
    other_id = compute_event_id(other, "12")
    eid, error = run(
        srv, srv.hs.federation.events.process_incoming_pdu(peer.server_name, other, "12")
    )
    assert eid == other_id and "m.room.create" in error
    assert meta(srv, other_id) is None
    s, b = peer.send(srv, txn(), [other])  # its room is unknown here
    assert s == 200 and "error" in b["pdus"][other_id]
    # In a v10 room a second create event naming the room passes the create rule on its own
    # (no prev events): it is refused all the same, and the room's state is untouched.
    room10 = joined_room(srv, peer, admin, room_version="10")
    before = on_server(srv, lambda: srv.hs.store.get_current_state_ids(room10))
    second_id, second = peer.build("10", room10, peer.user("p1"), "m.room.create",
                                   {"creator": peer.user("p1"), "room_version": "10"}, "",
                                   prev_events=[], auth_events=[], depth=1)  # fmt: skip
    s, b = peer.send(srv, txn(), [second])
    assert s == 200 and "m.room.create" in b["pdus"][second_id]["error"]
    assert meta(srv, second_id) is None
    assert on_server(srv, lambda: srv.hs.store.get_current_state_ids(room10)) == before
    assert admin.request("GET", "/_matrix/client/versions").status == 200


def test_missing_state_beyond_the_fetch_budget_is_not_fetched(world):
    """A PDU whose unknown prev event comes with an enormous state (/state_ids naming thousands
    of events we lack): the PDU fails within its fetch budget, no event is fetched one by one,
    the rest of the transaction is processed and the room is unchanged."""
    srv, peer, admin = world
    room_id = joined_room(srv, peer, admin)
    before = on_server(srv, lambda: srv.hs.store.get_current_state_ids(room_id))
    ghost = "$" + "h" * 43
    eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                            {"msgtype": "m.text", "body": "heavy"}, prev_events=[ghost], depth=60)  # fmt: skip
    peer.missing_events = []
    peer.state_ids[ghost] = ([f"$junk{i:05d}" + "x" * 38 for i in range(5000)], [])
    ok_id, ok = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                              {"msgtype": "m.text", "body": "light"})  # fmt: skip
    n_before = len(peer.requests)
    try:
        status, body = peer.send(srv, txn(), [ev, ok])
    finally:
        peer.state_ids.pop(ghost, None)
    assert status == 200 and "fetch budget" in body["pdus"][eid]["error"], body
    assert body["pdus"][ok_id] == {}
    asked = [p for _, p in peer.requests[n_before:]]
    assert not any(p.startswith(f"{V1}/event/") for p in asked), asked
    assert meta(srv, eid) is None
    after = on_server(srv, lambda: srv.hs.store.get_current_state_ids(room_id))
    assert after == before


def test_flood_of_bad_events_keeps_state_and_clients_served(world):
    """Several connections at once send transactions of 50 PDUs each — forged signatures and
    events of a user who is not in the room (valid signatures, failing auth): every one is
    refused, the room's state is unchanged, and local clients are answered promptly during the
    flood (each client request within a few seconds on a loaded machine)."""
    import threading
    import time

    from nacl.signing import SigningKey

    srv, peer, admin = world
    room_id = joined_room(srv, peer, admin)
    state_before = on_server(srv, lambda: srv.hs.store.get_current_state_ids(room_id))
    forged_key = SigningKey.generate()
    batches = []
    for t in range(12):
        pdus = []
        for i in range(50):
            if i % 2:
                _, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                                      {"body": f"forged {t}-{i}"}, key=forged_key)  # fmt: skip
            else:
                _, ev = peer.build_on(srv, room_id, peer.user("outsider"), "m.room.message",
                                      {"body": f"outsider {t}-{i}"})  # fmt: skip
            pdus.append(ev)
        batches.append(pdus)
    results: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def flood(mine):
        for pdus in mine:
            r = peer.send(srv, txn(), pdus)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=flood, args=(batches[i::4],)) for i in range(4)]
    for th in threads:
        th.start()
    latencies = []
    sent = []
    while any(th.is_alive() for th in threads) or not latencies:
        t0 = time.monotonic()
        assert admin.request("GET", "/_matrix/client/versions").status == 200
        sent.append(send(admin, room_id, f"during the flood {len(sent)}"))
        latencies.append(time.monotonic() - t0)
    for th in threads:
        th.join(120)
    assert max(latencies) < 5.0, latencies
    assert len(results) == 12
    for status, body in results:
        assert status in (200, 429), (status, body)
        if status == 200:
            assert len(body["pdus"]) == 50 and all("error" in v for v in body["pdus"].values())
    assert any(status == 200 for status, _ in results)
    # Nothing of the flood reached the room: same state, our messages all there.
    assert on_server(srv, lambda: srv.hs.store.get_current_state_ids(room_id)) == state_before
    ids = timeline_ids(admin, room_id)
    assert all(eid in ids for eid in sent[-10:])
    r = admin.request("GET", f"{V3}/rooms/{room_id}/messages", query={"dir": "b", "limit": "50"})
    assert not any(e["sender"] == peer.user("outsider") for e in r.body["chunk"])


def test_fetched_events_are_not_rate_limited_pushed_ones_are(world):
    """Catching up (events this server fetches with get_missing_events) does not count against
    the origin's event rate limits — after a netsplit a busy room's history is not soft-failed;
    the events the origin pushes in its /send transactions still do. The detectors see both."""
    from tests.guard.core_support import Scripted

    srv, peer, admin = world
    room_id = joined_room(srv, peer, admin)
    limits, guard = srv.hs.guard.limits, srv.hs.guard
    saved = {n: limits._buckets[n] for n in ("federation_event_room", "federation_event")}  # noqa: SLF001
    seen = Scripted()
    detectors = guard.detectors.signals
    guard.detectors.signals = seen  # type: ignore[method-assign]
    for name in saved:
        limits._buckets[name] = TokenBuckets(0.001, 2)  # noqa: SLF001
    try:
        chain: list[tuple[str, dict]] = []
        prev = None
        for i in range(8):
            extra = (
                {} if prev is None else {"prev_events": [prev[0]], "depth": prev[1]["depth"] + 1}
            )
            eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                                    {"msgtype": "m.text", "body": f"catch-up {i}"}, **extra)  # fmt: skip
            chain.append((eid, ev))
            prev = (eid, ev)
        # The origin pushes the newest; the seven before it are fetched (get_missing_events).
        peer.missing_events = [ev for _, ev in chain[:-1]]
        status, body = peer.send(srv, txn(), [chain[-1][1]])
        assert (status, body["pdus"]) == (200, {chain[-1][0]: {}})
        for eid, _ in chain:
            m = meta(srv, eid)
            assert m is not None and not m.outlier and not m.soft_failed, eid
        assert {c.event_id for c in seen.seen} >= {eid for eid, _ in chain}
        # Pushed events still count: the bucket (2) had one taken by the pushed event above.
        peer.missing_events = []
        last = chain[-1]
        pushed = []
        for i in range(3):
            eid, ev = peer.build_on(srv, room_id, peer.user("p1"), "m.room.message",
                                    {"msgtype": "m.text", "body": f"pushed {i}"},
                                    prev_events=[last[0]], depth=last[1]["depth"] + 1)  # fmt: skip
            pushed.append(eid)
            last = (eid, ev)
            status, body = peer.send(srv, txn(), [ev])
            assert (status, body["pdus"]) == (200, {eid: {}})
        assert [meta(srv, e).soft_failed for e in pushed] == [False, True, True]
    finally:
        limits._buckets.update(saved)  # noqa: SLF001
        guard.detectors.signals = detectors  # type: ignore[method-assign]
        peer.missing_events = []
