"""State resolution v2/v2.1 against Synapse's ``synapse.state.v2.resolve_events_with_store``.

Hypothesis builds room DAGs with forks (room versions 10, 11, 12): a create event, the creator's
join, power levels, join rules, some joins, then random joins, leaves, kicks, bans, unbans,
invites, power-level, join-rule and topic changes by several users, each added after a random
earlier event (so forks branch anywhere) and only when the auth rules allow it there. The states
after several fork tips are resolved by Bastion and by Synapse and must agree.

The oracle is Synapse with its two known departures from the spec switched to the spec's
behaviour (``tests/differential/DIVERGENCES.md``, "State resolution"): Synapse counts each state
event in its own state set's auth chain when taking the auth difference, and in step 1 it only
walks auth events inside the full conflicted set. Bastion must equal that oracle exactly; how
often it also equals Synapse as shipped, and which divergence explains each difference, is
counted with ``hypothesis.event`` (``--hypothesis-show-statistics``).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from bastion.core.state_res import resolve_state
from tests.differential.synapse_state_oracle import (
    ForkedRoom,
    synapse_resolve,
    to_synapse_events,
)

pytest.importorskip("synapse")

ALICE, BOB, CAROL, DAVE, EVE = (
    "@alice:a.test",
    "@bob:b.test",
    "@carol:c.test",
    "@dave:a.test",
    "@eve:d.test",
)
USERS = [ALICE, BOB, CAROL, DAVE, EVE]
LEVELS = [0, 0, 25, 50, 50, 75, 100]
KINDS = [
    "join", "join", "leave", "kick", "ban", "unban", "invite",
    "power_levels", "power_levels", "topic", "topic", "join_rules",
]  # fmt: skip


@st.composite
def forked_rooms(draw: Any, version: str) -> tuple[ForkedRoom, list[list[str]]]:
    """A room tree and a few lists of fork tips whose states to resolve."""
    room = ForkedRoom(version, ALICE)
    v12 = room.rv.privileged_creators
    ts = 10
    e = room.try_add(room.create_id, "m.room.member", ALICE, ALICE, {"membership": "join"}, ts)
    users = {u: draw(st.sampled_from(LEVELS)) for u in USERS[1:]}
    users = {u: lv for u, lv in users.items() if lv}
    if not v12:
        users[ALICE] = 100
    e = room.try_add(e, "m.room.power_levels", "", ALICE, {"users": users}, ts + 1)
    e = room.try_add(e, "m.room.join_rules", "", ALICE, {"join_rule": "public"}, ts + 2)
    assert e is not None
    for u in USERS[1:]:
        if draw(st.integers(0, 3)):
            e = room.try_add(e, "m.room.member", u, u, {"membership": "join"}, ts + 3) or e
    nodes = [e]
    n_actions = draw(st.integers(4, 30))
    for _ in range(n_actions):
        parent = nodes[draw(st.integers(0, len(nodes) - 1))]
        kind = draw(st.sampled_from(KINDS))
        sender = draw(st.sampled_from(USERS))
        target = draw(st.sampled_from(USERS))
        when = ts + draw(st.integers(0, 40))
        if kind == "join":
            args = ("m.room.member", sender, sender, {"membership": "join"})
        elif kind == "leave":
            args = ("m.room.member", sender, sender, {"membership": "leave"})
        elif kind in ("kick", "unban"):
            args = ("m.room.member", target, sender, {"membership": "leave"})
        elif kind == "ban":
            args = ("m.room.member", target, sender, {"membership": "ban"})
        elif kind == "invite":
            args = ("m.room.member", target, sender, {"membership": "invite"})
        elif kind == "power_levels":
            new_users = {
                u: draw(st.sampled_from(LEVELS))
                for u in draw(st.lists(st.sampled_from(USERS[1:]), max_size=4, unique=True))
            }
            if not v12:
                new_users[ALICE] = 100
            content: dict[str, Any] = {"users": new_users}
            for name in ("ban", "kick", "state_default"):
                if draw(st.booleans()):
                    content[name] = draw(st.sampled_from(LEVELS))
            args = ("m.room.power_levels", "", sender, content)
        elif kind == "topic":
            args = ("m.room.topic", "", sender, {"topic": f"t{len(room.order)}"})
        else:
            rule = draw(st.sampled_from(["public", "invite"]))
            args = ("m.room.join_rules", "", sender, {"join_rule": rule})
        eid = room.try_add(parent, args[0], args[1], args[2], args[3], when)
        if eid is not None:
            nodes.append(eid)
    # Resolve the leaves pairwise and all together, plus one random pick of 2–3 nodes.
    children = {room.events[n]["prev_events"][0] for n in nodes[1:]}
    leaves = [n for n in nodes if n not in children]
    tip_sets = [list(p) for p in itertools.combinations(leaves[:4], 2)]
    if len(leaves) > 2:
        tip_sets.append(leaves[:5])
    if len(nodes) >= 2:
        tip_sets.append(draw(st.lists(st.sampled_from(nodes), min_size=2, max_size=3, unique=True)))
    return room, tip_sets


def _diff(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}


def _check(version: str, room: ForkedRoom, tip_sets: list[list[str]]) -> None:
    syn_events = to_synapse_events(version, room.events)
    chains: dict[str, frozenset[str]] = {}

    def lookup(eid: str) -> frozenset[str]:
        if eid not in chains:
            acc: set[str] = set()
            for a in room.events[eid]["auth_events"]:
                acc.add(a)
                acc |= lookup(a)
            chains[eid] = frozenset(acc)
        return chains[eid]

    for tips in tip_sets:
        state_sets = [room.state_after[t] for t in tips]
        ours = resolve_state(version, state_sets, room.events)
        assert resolve_state(version, state_sets, room.events, lookup) == ours
        # The oracle: Synapse with its known departures from the spec switched to the spec.
        spec = synapse_resolve(
            version, state_sets, syn_events, include_state_events=False, spec_power_closure=True
        )
        if ours != spec:
            note(f"events (in order added): {[(e, room.events[e]) for e in room.order]}")
            note(f"state sets: {state_sets}")
            raise AssertionError(
                f"room v{version}: Bastion and Synapse (spec-corrected) resolve fork tips {tips} "
                f"differently: {{key: (bastion, synapse)}} = {_diff(ours, spec)}"
            )
        # Synapse as shipped: agreement, or which known divergence explains the difference.
        n_conflicted = sum(
            1 for k in set().union(*state_sets) if len({s.get(k) for s in state_sets}) > 1
        )
        event(
            f"conflicted keys: {'0' if not n_conflicted else '1-2' if n_conflicted < 3 else '3+'}"
        )
        if synapse_resolve(version, state_sets, syn_events) == ours:
            event(f"v{version}: agrees with Synapse as shipped")
            continue
        causes = []
        if synapse_resolve(version, state_sets, syn_events, include_state_events=False) == ours:
            causes.append("auth difference")
        if synapse_resolve(version, state_sets, syn_events, spec_power_closure=True) == ours:
            causes.append("power-event closure")
        event(f"v{version}: known divergence ({' or '.join(causes) or 'both together'})")


SETTINGS = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("version", ["10", "11", "12"])
@SETTINGS
@given(data=st.data())
def test_resolve_state_matches_synapse(version: str, data: st.DataObject) -> None:
    room, tip_sets = data.draw(forked_rooms(version))
    _check(version, room, tip_sets)
