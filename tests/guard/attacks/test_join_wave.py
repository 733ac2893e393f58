"""Attack: a wave of joins into a public room (issue 9, "a join wave").

The join that makes the wave bigger than the limit closes the room: its join rule becomes
``knock`` (sent as the room's local admin), its admins get a server notice and an alert is
raised, the decision is recorded; newcomers are refused while members talk and sync, invited
users still get in; when the cooling period ends the rule is ``public`` again.

The limit is lowered to 8 joins (the default is 50 in an hour: the per-room join rate limit
would take most of a minute to let 50 through) and the cooling period to 2 s; the default
thresholds are tested in tests/guard/test_detectors.py and test_behaviour.py.
"""

from __future__ import annotations

import time

import pytest

from bastion.ledger import records
from tests.guard.attacks.victims import Told, victims_still_talk, wait_for
from tests.guard.core_support import V3, create_room, decisions, ledger_actions, q
from tests.support.accounts import call_on_server, make_user
from tests.support.harness import ServerThread

GUARD = {"detectors": {"join_wave": {"max_joins": 8, "cooling_seconds": 2}}}


@pytest.fixture
def srv(tmp_path):
    s = ServerThread(tmp_path / "data", guard=GUARD).start()
    yield s
    s.stop()


def join_rule(server: ServerThread, room_id: str) -> str:
    ev = call_on_server(server, server.hs.rooms.current_state_event, room_id, "m.room.join_rules")
    return ev["content"]["join_rule"]


def join(c, room_id: str):
    return c.request("POST", f"{V3}/join/{q(room_id)}", {})


def join_honouring_429(c, room_id: str):
    """Join as a client does: a 429 is retried after its ``retry_after_ms`` (the per-room join
    rate limit may still be refilling after the wave)."""
    for _ in range(10):
        r = join(c, room_id)
        if r.status != 429:
            return r
        time.sleep(r.body["retry_after_ms"] / 1000 + 0.05)
    return r


def test_join_wave_cools_the_room_then_reopens_it(srv):
    told = Told(srv)
    owner, member = make_user(srv), make_user(srv)
    room_id = create_room(owner, preset="public_chat")
    assert join(member, room_id).status == 200  # join 1
    wave = [make_user(srv) for _ in range(12)]
    statuses = [join(c, room_id).status for c in wave]
    # joins 2..8 pass; the 9th closes the room (and is itself refused by the new join rule);
    # the later ones are refused (403 by the cooling, or 429 by the per-room join rate limit)
    assert statuses[:8] == [200] * 7 + [403]
    assert set(statuses[8:]) <= {403, 429}
    r = join(wave[8], room_id)
    assert r.status in (403, 429)
    if r.status == 403:
        assert "closed to new joins" in r.body["error"]
    assert join_rule(srv, room_id) == "knock"

    cooled = [x for x in decisions(srv, room_id=room_id) if x["source"] == "detector.join_wave"]
    assert any("cool_room" in x["actions"] for x in cooled)
    throttles = ledger_actions(srv, records.ACTION_GUARD_THROTTLE)
    assert any(r["target"] == room_id for r in throttles)
    assert [u for u, _ in told.notices] == [owner.user_id]
    assert "Join wave" in told.notices[0][1] and "'knock'" in told.notices[0][1]
    assert any(k == "guard.room_cooling" for k, _ in told.alerts)

    # the victims: members talk and sync; an invited newcomer still gets in
    victims_still_talk(room_id, owner, member, wave[0])
    friend = make_user(srv)
    assert owner.request("POST", f"{V3}/rooms/{q(room_id)}/invite",
                         {"user_id": friend.user_id}).status == 200  # fmt: skip
    assert join_honouring_429(friend, room_id).status == 200
    # the period ends: public again, the admins told, newcomers welcome
    wait_for(lambda: join_rule(srv, room_id) == "public")
    wait_for(lambda: len(told.notices) == 2)
    assert join_honouring_429(wave[-1], room_id).status == 200
    assert any(r["target"] == room_id for r in
               ledger_actions(srv, records.ACTION_GUARD_THROTTLE_LIFT))  # fmt: skip


def test_a_wave_of_remote_joins_cools_the_room(tmp_path, test_ca):
    """Joins that another server sends through our send_join count towards the wave, once each
    (S-S API "Joining Rooms"): the join past the limit closes the room; later remote joins
    are refused at make_join (the room cools)."""
    import urllib.parse

    from tests.support.federation import start_fed_server
    from tests.support.peer import V1, FakePeer

    srv = start_fed_server(tmp_path, test_ca, "bastion", registration="open", guard=GUARD)
    peer = FakePeer(test_ca, "wave").start()
    try:
        owner = make_user(srv)
        room_id = create_room(owner, preset="public_chat")
        # joins 1..8 (the owner's own join is the room's creation, not part of the wave)
        for i in range(8):
            peer.join(srv, room_id, peer.user(f"w{i}"))
        assert join_rule(srv, room_id) == "public"
        # the 9th remote join is the wave: the room cools
        peer.join(srv, room_id, peer.user("w8"))
        wait_for(lambda: join_rule(srv, room_id) == "knock")
        # Each remote join is counted once (by the federated event's check, when send_join
        # stores it), not again by the send_join pre-check: one wave, at the 9th join.
        (wave,) = [x for x in decisions(srv, room_id=room_id)
                   if x["source"] == "detector.join_wave"]  # fmt: skip
        assert "cool_room" in wave["actions"]
        assert wave["signals"][0]["evidence"]["joins"] == 9
        # newcomers from that server are now refused at make_join
        q_room = urllib.parse.quote(room_id, safe="")
        q_user = urllib.parse.quote(peer.user("late"), safe="")
        status, body = peer.request(srv, "GET", f"{V1}/make_join/{q_room}/{q_user}?ver=10")
        assert status == 403, body
    finally:
        peer.stop()
        srv.stop()
