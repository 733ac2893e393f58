"""State resolution v2 / v2.1 (rooms/fragments/v2-state-res; Room version 12: State resolution).

Hand-written histories with a known outcome, the spec's tie-breaks, the v2.1 change of starting
from an empty map, and the edge cases of the API. Rooms are built with the differential tests'
:class:`ForkedRoom` (plain event dicts, correct IDs, events added only when the auth rules allow
them; no Synapse involved).
"""

from __future__ import annotations

import pytest

from bastion.core.room_versions import get_room_version
from bastion.core.state_res import _Events, resolve_state
from bastion.errors import M_INVALID_PARAM, M_UNSUPPORTED_ROOM_VERSION, MatrixError
from tests.differential.synapse_state_oracle import ForkedRoom

ALICE, BOB, CAROL, DAVE = "@alice:a.test", "@bob:b.test", "@carol:c.test", "@dave:d.test"
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")
TOPIC = ("m.room.topic", "")


def member(u: str) -> tuple[str, str]:
    return ("m.room.member", u)


def levels(room: ForkedRoom, users: dict[str, int], **named: int) -> dict:
    """Power-levels content; the creator gets 100 unless v12 (creators are not listed)."""
    u = dict(users)
    if not room.rv.privileged_creators:
        u.setdefault(ALICE, 100)
    return {"users": u, **named}


def base_room(version: str, bob_level: int = 50) -> tuple[ForkedRoom, str]:
    """create → alice joins → PL (bob at ``bob_level``) → public join rule → bob, carol, dave
    join. Returns the room and its last event."""
    room = ForkedRoom(version, ALICE)
    e = room.try_add(room.create_id, "m.room.member", ALICE, ALICE, {"membership": "join"}, 10)
    e = room.try_add(e, "m.room.power_levels", "", ALICE, levels(room, {BOB: bob_level}), 11)
    e = room.try_add(e, "m.room.join_rules", "", ALICE, {"join_rule": "public"}, 12)
    for i, u in enumerate((BOB, CAROL, DAVE)):
        e = room.try_add(e, "m.room.member", u, u, {"membership": "join"}, 13 + i)
    assert e is not None
    return room, e


def add(room: ForkedRoom, parent: str, etype: str, skey: str, sender: str, content: dict, ts: int):
    eid = room.try_add(parent, etype, skey, sender, content, ts)
    assert eid is not None, f"{etype} by {sender} not allowed"
    return eid


V2_VERSIONS = ["2", "3", "10", "11"]
ALL_VERSIONS = [*V2_VERSIONS, "12"]


# --- the API's edges ----------------------------------------------------------------------------


def test_room_version_1_is_refused() -> None:
    with pytest.raises(MatrixError) as e:
        resolve_state("1", [{}, {}], {})
    assert e.value.errcode == M_UNSUPPORTED_ROOM_VERSION
    assert "state resolution v1" in e.value.message


def test_unknown_room_version_is_refused() -> None:
    with pytest.raises(MatrixError) as e:
        resolve_state("99", [{}], {})
    assert e.value.errcode == M_UNSUPPORTED_ROOM_VERSION


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_no_state_sets(version: str) -> None:
    assert resolve_state(version, [], {}) == {}


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_one_state_set_is_returned_as_a_copy(version: str) -> None:
    room, e = base_room(version)
    s = room.state_after[e]
    out = resolve_state(version, [s], room.events)
    assert out == s and out is not s


def test_identical_state_sets_need_no_events() -> None:
    s = {PL: "$a", member(ALICE): "$b"}
    assert resolve_state("11", [s, dict(s), dict(s)], {}) == s


def test_a_key_missing_from_one_set_is_conflicted() -> None:
    room, e = base_room("11")
    t = add(room, e, "m.room.topic", "", ALICE, {"topic": "x"}, 20)
    out = resolve_state("11", [room.state_after[e], room.state_after[t]], room.events)
    assert out[TOPIC] == t


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_missing_conflicted_event_is_an_error(version: str) -> None:
    room, e = base_room(version)
    t1 = add(room, e, "m.room.topic", "", ALICE, {"topic": "1"}, 20)
    t2 = add(room, e, "m.room.topic", "", ALICE, {"topic": "2"}, 21)
    events = dict(room.events)
    del events[t2]
    with pytest.raises(MatrixError) as err:
        resolve_state(version, [room.state_after[t1], room.state_after[t2]], events)
    assert err.value.errcode == M_INVALID_PARAM
    assert t2[:20] in err.value.message


def test_missing_auth_event_is_an_error() -> None:
    room, e = base_room("12")
    t1 = add(room, e, "m.room.topic", "", ALICE, {"topic": "1"}, 20)
    t2 = add(room, e, "m.room.topic", "", ALICE, {"topic": "2"}, 21)
    events = dict(room.events)
    del events[room.state_after[e][PL]]  # an auth event of both topics
    with pytest.raises(MatrixError) as err:
        resolve_state("12", [room.state_after[t1], room.state_after[t2]], events)
    assert err.value.errcode == M_INVALID_PARAM


# --- conflicts with a known outcome ------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_demotion_beats_the_demoted_moderators_ban(version: str) -> None:
    """Fork A: alice demotes bob. Fork B: bob (50) bans carol. Power events are applied in
    reverse topological power order, alice's (greater power) first, so bob's ban then fails."""
    room, e = base_room(version)
    demote = add(room, e, "m.room.power_levels", "", ALICE, levels(room, {}), 20)
    ban = add(room, e, "m.room.member", CAROL, BOB, {"membership": "ban"}, 19)
    out = resolve_state(version, [room.state_after[demote], room.state_after[ban]], room.events)
    assert out[PL] == demote
    assert out[member(CAROL)] == room.state_after[e][member(CAROL)]  # still joined


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_ban_beats_a_concurrent_membership_update(version: str) -> None:
    """Fork A: bob bans carol. Fork B: carol updates her membership (a new join with a display
    name). The ban is a power event, applied in step 2; carol's join comes after in step 4 and
    fails against the ban."""
    room, e = base_room(version)
    ban = add(room, e, "m.room.member", CAROL, BOB, {"membership": "ban"}, 30)
    rename = add(
        room, e, "m.room.member", CAROL, CAROL, {"membership": "join", "displayname": "C"}, 40
    )
    for sets in ([ban, rename], [rename, ban]):
        out = resolve_state(version, [room.state_after[s] for s in sets], room.events)
        assert out[member(CAROL)] == ban


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_topics_by_mainline_then_timestamp(version: str) -> None:
    """Two topics on the same mainline position: the later origin_server_ts is applied last and
    wins, whatever the order of the state sets."""
    room, e = base_room(version)
    early = add(room, e, "m.room.topic", "", BOB, {"topic": "early"}, 50)
    late = add(room, e, "m.room.topic", "", ALICE, {"topic": "late"}, 60)
    for sets in ([early, late], [late, early]):
        out = resolve_state(version, [room.state_after[s] for s in sets], room.events)
        assert out[TOPIC] == late


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_topics_with_equal_timestamps_by_event_id(version: str) -> None:
    room, e = base_room(version)
    t1 = add(room, e, "m.room.topic", "", BOB, {"topic": "one"}, 50)
    t2 = add(room, e, "m.room.topic", "", ALICE, {"topic": "two"}, 50)
    out = resolve_state(version, [room.state_after[t1], room.state_after[t2]], room.events)
    assert out[TOPIC] == max(t1, t2)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_topic_after_a_newer_power_level_sorts_later(version: str) -> None:
    """Mainline ordering: a topic whose power levels are further along the resolved mainline is
    applied later even with an earlier timestamp (the spec's "topic" example)."""
    room, e = base_room(version)
    old_topic = add(room, e, "m.room.topic", "", BOB, {"topic": "old"}, 90)
    pl2 = add(room, e, "m.room.power_levels", "", ALICE, levels(room, {BOB: 50, DAVE: 50}), 20)
    new_topic = add(room, pl2, "m.room.topic", "", DAVE, {"topic": "new"}, 30)
    out = resolve_state(
        version, [room.state_after[old_topic], room.state_after[new_topic]], room.events
    )
    assert out[PL] == pl2
    assert out[TOPIC] == new_topic


# --- the orderings themselves --------------------------------------------------------------------


def _ev(room: ForkedRoom) -> _Events:
    return _Events(get_room_version(room.version), room.events, frozenset())


@pytest.mark.parametrize("version", ["11", "12"])
def test_reverse_topological_power_order_tie_breaks(version: str) -> None:
    """Greater sender power first; then smaller origin_server_ts; then smaller event ID; and an
    event never before its auth events."""
    room, e = base_room(version, bob_level=100)
    # carol (0) is banned by alice (100, or creator) and by bob (100): same power in v11.
    by_alice = add(room, e, "m.room.member", CAROL, ALICE, {"membership": "ban"}, 70)
    by_bob = add(room, e, "m.room.member", CAROL, BOB, {"membership": "ban"}, 70)
    kick_late = add(room, e, "m.room.member", DAVE, BOB, {"membership": "leave"}, 80)
    kick_early = add(room, e, "m.room.member", DAVE, ALICE, {"membership": "leave"}, 60)
    x = {by_alice, by_bob, kick_late, kick_early}
    order = _ev(room).reverse_topological_power_order(x, set(x), convex=True)
    if version == "12":  # alice is the creator: infinite power, sorts before bob
        assert order == [kick_early, by_alice, by_bob, kick_late]
    else:
        assert order == [kick_early, *sorted([by_alice, by_bob]), kick_late]
    # An auth event comes first even when it sorts later on its own.
    pl2 = add(room, e, "m.room.power_levels", "", BOB, levels(room, {BOB: 100}), 500)
    child = add(room, pl2, "m.room.member", DAVE, ALICE, {"membership": "ban"}, 1)
    order = _ev(room).reverse_topological_power_order({pl2, child}, {pl2, child}, convex=True)
    assert order == [pl2, child]


def test_mainline_order() -> None:
    room, e = base_room("11")
    p0 = room.state_after[e][PL]
    p1 = add(room, e, "m.room.power_levels", "", ALICE, levels(room, {BOB: 50, DAVE: 10}), 20)
    p2 = add(room, p1, "m.room.power_levels", "", ALICE, levels(room, {BOB: 50, DAVE: 20}), 21)
    on_p0 = add(room, e, "m.room.topic", "", BOB, {"topic": "a"}, 99)
    on_p2 = add(room, p2, "m.room.topic", "", BOB, {"topic": "b"}, 1)
    on_p1_a = add(room, p1, "m.room.topic", "", BOB, {"topic": "c"}, 5)
    on_p1_b = add(room, p1, "m.room.topic", "", ALICE, {"topic": "d"}, 5)
    ev = _ev(room)
    events = [on_p2, on_p1_b, on_p0, on_p1_a]
    assert ev.mainline_order(events, p2) == [on_p0, *sorted([on_p1_a, on_p1_b]), on_p2]
    # Based on p0, everything after p0 still meets the mainline at p0: timestamps decide.
    assert ev.mainline_order(events, p0)[0] == on_p2
    # No power levels at all: position ∞ for everyone, so timestamp then event ID.
    assert ev.mainline_order(events, None)[0] == on_p2
    assert ev.mainline_order([], p0) == []


# --- v2.1: iterative auth checks from an empty state map -----------------------------------------


def _stale_kick(version: str) -> tuple[ForkedRoom, list[dict], str, str, str]:
    """Bob (75 under PL1) kicks carol on a branch from before PL2, which demotes bob to 0 and
    is in both state sets (unconflicted); carol's membership is the only conflict."""
    room, e = base_room(version, bob_level=75)
    pl1 = room.state_after[e][PL]
    pl2 = add(room, e, "m.room.power_levels", "", ALICE, levels(room, {BOB: 0}), 30)
    kick = add(room, e, "m.room.member", CAROL, BOB, {"membership": "leave"}, 31)
    joined = room.state_after[pl2]
    kicked = dict(room.state_after[kick])
    kicked[PL] = pl2
    return room, [joined, kicked], joined[member(CAROL)], kick, pl1


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_v2_checks_start_from_the_unconflicted_state(version: str) -> None:
    """v2: the kick is checked against the unconflicted PL2, under which bob cannot kick."""
    room, sets, join, kick, _ = _stale_kick(version)
    assert resolve_state(version, sets, room.events)[member(CAROL)] == join


def test_v2_1_checks_start_from_an_empty_map() -> None:
    """v2.1 (Room version 12, "State resolution", change 1): the partial state starts empty, so
    the kick is checked against its own auth events (PL1, where bob has 75) and stands."""
    room, sets, join, kick, _ = _stale_kick("12")
    out = resolve_state("12", sets, room.events)
    assert out[member(CAROL)] == kick
    assert out[PL] == sets[0][PL]  # the unconflicted state is laid over the result


def test_rejected_auth_events_are_not_used() -> None:
    """v2-state-res, "Rejected events": a rejected auth event is not a fallback in the iterative
    auth checks. Without PL1 the kick has no power levels to draw on, and fails."""
    room, sets, join, kick, pl1 = _stale_kick("12")
    out = resolve_state("12", sets, room.events, rejected_events={pl1})
    assert out[member(CAROL)] == join


def test_v2_1_conflicted_subgraph_joins_the_full_conflicted_set() -> None:
    """Room version 12, "Conflicted state subgraph": an event on an auth path between two
    conflicted events belongs to the full conflicted set even when every auth chain has it."""
    room, e = base_room("12", bob_level=100)
    t1 = add(room, e, "m.room.topic", "", BOB, {"topic": "1"}, 20)
    # dave's new membership cites bob's join; bob then changes his own membership citing...
    pl2 = add(room, t1, "m.room.power_levels", "", ALICE, levels(room, {BOB: 100, DAVE: 50}), 21)
    t2 = add(room, pl2, "m.room.topic", "", DAVE, {"topic": "2"}, 22)
    pl1 = room.state_after[e][PL]
    ev = _ev(room)
    # t2 → pl2 → pl1 and pl1 is conflicted with pl2? Use {t2, pl1} as the conflicted set:
    sub = ev.conflicted_subgraph({t2, pl1})
    assert {t2, pl2, pl1} <= sub
    assert t1 not in sub  # t1 is not on a path from t2 to pl1


@pytest.mark.parametrize("version", ["11", "12"])
def test_auth_chain_lookup_gives_the_same_result(version: str) -> None:
    room, sets, *_ = _stale_kick(version)
    calls: list[str] = []

    def lookup(eid: str) -> set[str]:
        calls.append(eid)
        out: set[str] = set()
        stack = list(room.events[eid]["auth_events"])
        while stack:
            a = stack.pop()
            if a not in out:
                out.add(a)
                stack.extend(room.events[a]["auth_events"])
        return out

    assert resolve_state(version, sets, room.events, lookup) == resolve_state(
        version, sets, room.events
    )
    assert calls and len(calls) == len(set(calls))  # memoised


def test_three_forks() -> None:
    room, e = base_room("12")
    a = add(room, e, "m.room.topic", "", ALICE, {"topic": "a"}, 30)
    b = add(room, e, "m.room.member", DAVE, BOB, {"membership": "ban"}, 31)
    c = add(room, e, "m.room.member", DAVE, DAVE, {"membership": "leave"}, 32)
    out = resolve_state("12", [room.state_after[x] for x in (a, b, c)], room.events)
    assert out[TOPIC] == a
    assert out[member(DAVE)] == b  # the ban (a power event) before dave's own leave, which fails
