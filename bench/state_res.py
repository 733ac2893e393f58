"""Benchmark: state resolution of a 10,000-event room with conflicting forks, Bastion vs Synapse.

:func:`build_forked_room` builds the room deterministically (a seeded PRNG): a common history
(create, the creator's join, power levels, join rules, members joining, moderators promoted,
topics), then ``forks`` forks from the same point, each a long run of joins, leaves, kicks, bans,
unbans, invites, power-level changes (moderators promoted and demoted, kick/ban levels moved),
join-rule and topic changes. Every event is authorised against the state of its fork before it is
added, so the forks are real histories. It returns ``(state_sets, event_map)``: the state after
each fork's last event and every event by ID, ready for
``bastion.core.state_res.resolve_state(room_version, state_sets, event_map)``.

:func:`main` times Bastion's ``resolve_state`` against Synapse's
``synapse.state.v2.resolve_events_with_store`` on that input (median of several runs each) and
prints the figures as JSON on its last line. Synapse's store is in memory and returns the auth
chain difference (and v2.1 conflicted subgraph) precomputed, so Synapse's time is its algorithm
alone, while Bastion's time includes computing the auth difference and subgraph itself.

Run: python bench/state_res.py [--quick] [--events N] [--forks K] [--room-version V]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bastion.core.auth_rules import auth_types_for_event, check_auth_against_state  # noqa: E402
from bastion.core.events import compute_event_id  # noqa: E402
from bastion.core.room_versions import EventIdFormat, get_room_version  # noqa: E402

StateKey = tuple[str, str]

CREATE_KEY = ("m.room.create", "")


class _Builder:
    """A room under construction; one state map per fork."""

    def __init__(self, room_version: str, creator: str) -> None:
        self.version = room_version
        self.rv = get_room_version(room_version)
        self.v1_ids = self.rv.event_id_format is EventIdFormat.V1_OPAQUE
        self.creator = creator
        self.events: dict[str, dict] = {}
        self.ts = 1_700_000_000_000
        content: dict[str, Any] = {"room_version": room_version}
        if not self.rv.implicit_room_creator:
            content["creator"] = creator
        create: dict[str, Any] = {
            "type": "m.room.create",
            "state_key": "",
            "sender": creator,
            "content": content,
            "origin_server_ts": self.ts,
            "depth": 1,
            "prev_events": [],
            "auth_events": [],
            "hashes": {"sha256": "AAAA"},
            "signatures": {},
        }
        if not self.rv.room_id_is_create_hash:
            self.room_id = "!bench:" + creator.split(":", 1)[1]
            create["room_id"] = self.room_id
        if self.v1_ids:
            create["event_id"] = "$0:bench"
        cid = compute_event_id(create, room_version)
        if self.rv.room_id_is_create_hash:
            self.room_id = "!" + cid[1:]
        self.create_id = cid
        self.events[cid] = create

    def add(
        self,
        state: dict[StateKey, str],
        last: list,
        etype: str,
        state_key: str,
        sender: str,
        content: dict,
        ts: int,
    ) -> str | None:
        """Append a state event to the fork whose state is ``state`` and last event ``last[0]``
        if the auth rules allow it; update both; return its ID."""
        event: dict[str, Any] = {
            "type": etype,
            "state_key": state_key,
            "sender": sender,
            "room_id": self.room_id,
            "content": content,
            "origin_server_ts": ts,
            "depth": len(self.events) + 1,
            "prev_events": [last[0]],
            "hashes": {"sha256": "AAAA"},
            "signatures": {},
        }
        keys = auth_types_for_event(event, self.version)
        auth_ids = [state[k] for k in keys if k in state]
        auth_state = {k: self.events[state[k]] for k in keys if k in state}
        auth_state[CREATE_KEY] = self.events[self.create_id]
        event["auth_events"] = auth_ids
        if self.v1_ids:
            event["event_id"] = f"${len(self.events)}:bench"
            event["prev_events"] = [[last[0], {"sha256": "AAAA"}]]
            event["auth_events"] = [[a, {"sha256": "AAAA"}] for a in auth_ids]
        if not check_auth_against_state(
            event, auth_state, self.version, create_event_id=self.create_id
        ):
            return None
        eid = compute_event_id(event, self.version)
        self.events[eid] = event
        state[(etype, state_key)] = eid
        last[0] = eid
        return eid


def build_forked_room(
    n_events: int = 10000,
    forks: int = 4,
    room_version: str = "12",
    *,
    seed: int = 1,
    n_users: int = 400,
) -> tuple[list[dict[StateKey, str]], dict[str, dict]]:
    """A deterministic room of about ``n_events`` state events: a common history of about a
    fifth of them, then ``forks`` conflicting forks sharing the rest. Returns ``(state_sets,
    event_map)``: the state after each fork and every event by ID."""
    rnd = random.Random(seed)
    servers = [f"s{i}.bench" for i in range(8)]
    users = [f"@u{i}:{servers[i % len(servers)]}" for i in range(n_users)]
    creator = users[0]
    b = _Builder(room_version, creator)
    v12 = b.rv.privileged_creators
    state: dict[StateKey, str] = {CREATE_KEY: b.create_id}
    last = [b.create_id]
    ts = b.ts

    def tick() -> int:
        nonlocal ts
        ts += rnd.randint(0, 3)  # ties on origin_server_ts happen
        return ts

    b.add(state, last, "m.room.member", creator, creator, {"membership": "join"}, tick())
    mods = users[1:9]
    levels: dict[str, int] = {} if v12 else {creator: 100}
    levels.update({m: 100 if i < 2 else 50 for i, m in enumerate(mods)})
    pl_content = {"users": dict(levels), "kick": 50, "ban": 50, "state_default": 50}
    b.add(state, last, "m.room.power_levels", "", creator, pl_content, tick())
    b.add(state, last, "m.room.join_rules", "", creator, {"join_rule": "public"}, tick())

    common = max(n_events // 5, 50)
    order = users[1:]
    rnd.shuffle(order)
    for u in order[: n_users * 3 // 4]:
        b.add(state, last, "m.room.member", u, u, {"membership": "join"}, tick())
    while len(b.events) < common:
        _random_action(b, rnd, state, last, users, mods, tick(), v12, creator)

    per_fork = (n_events - len(b.events)) // forks
    fork_states: list[dict[StateKey, str]] = []
    fork_point = last[0]
    for _ in range(forks):
        fstate = dict(state)
        flast = [fork_point]
        target = len(b.events) + per_fork
        while len(b.events) < target:
            _random_action(b, rnd, fstate, flast, users, mods, tick(), v12, creator)
        fork_states.append(fstate)
    return fork_states, b.events


def _random_action(
    b: _Builder,
    rnd: random.Random,
    state: dict[StateKey, str],
    last: list,
    users: list[str],
    mods: list[str],
    ts: int,
    v12: bool,
    creator: str,
) -> str | None:
    r = rnd.random()
    user = rnd.choice(users)
    mod = rnd.choice(mods) if rnd.random() < 0.9 else creator
    if r < 0.30:
        return b.add(state, last, "m.room.member", user, user, {"membership": "join"}, ts)
    if r < 0.42:
        return b.add(state, last, "m.room.member", user, user, {"membership": "leave"}, ts)
    if r < 0.52:
        return b.add(state, last, "m.room.member", user, mod, {"membership": "leave"}, ts)
    if r < 0.60:
        return b.add(state, last, "m.room.member", user, mod, {"membership": "ban"}, ts)
    if r < 0.64:
        return b.add(state, last, "m.room.member", user, mod, {"membership": "invite"}, ts)
    if r < 0.74:
        pl = b.events[state[("m.room.power_levels", "")]]["content"]
        users_map = dict(pl.get("users", {}))
        for _ in range(rnd.randint(1, 3)):
            who = rnd.choice(mods + users[:40])
            if v12 and who == creator:
                continue
            users_map[who] = rnd.choice([0, 10, 50, 75, 100])
        content = dict(pl)
        content["users"] = users_map
        content[rnd.choice(["kick", "ban", "state_default"])] = rnd.choice([25, 50, 75])
        if not v12:
            users_map[creator] = 100
        sender = creator if rnd.random() < 0.5 else mod
        return b.add(state, last, "m.room.power_levels", "", sender, content, ts)
    if r < 0.77:
        rule = rnd.choice(["public", "public", "invite"])
        return b.add(state, last, "m.room.join_rules", "", mod, {"join_rule": rule}, ts)
    if r < 0.92:
        sender = rnd.choice(users)
        return b.add(state, last, "m.room.topic", "", sender, {"topic": f"topic {ts}"}, ts)
    return b.add(state, last, "m.room.name", "", mod, {"name": f"name {ts}"}, ts)


# --- timing ------------------------------------------------------------------------------------


def _median_time(fn: Any, repeats: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed runs")
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--forks", type=int, default=4)
    parser.add_argument("--room-version", default="12")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 5

    import synapse.event_auth  # noqa: F401  (before synapse.state: import cycle)
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
    from synapse.state.v2 import resolve_events_with_store

    from bastion.core.state_res import resolve_state
    from tests.differential.synapse_state_oracle import (  # test-only (Synapse) dependency
        FakeStore,
        run_sync,
        to_synapse_events,
    )

    t0 = time.perf_counter()
    state_sets, event_map = build_forked_room(args.events, args.forks, args.room_version)
    build_s = time.perf_counter() - t0
    rv = args.room_version
    keys = set().union(*state_sets)
    conflicted_keys = [k for k in keys if len({s.get(k) for s in state_sets}) > 1]
    conflicted_events = {s[k] for s in state_sets for k in conflicted_keys if k in s}

    ours_s, ours = _median_time(lambda: resolve_state(rv, state_sets, event_map), repeats)

    syn_events = to_synapse_events(rv, event_map)
    room_id = syn_events[next(iter(state_sets[0].values()))].room_id

    class PrecomputedStore(FakeStore):
        """Returns the auth chain difference computed once, outside the timed runs."""

        cached: Any = None

        async def get_auth_chain_difference(self, *a: Any) -> Any:
            if self.cached is None:
                PrecomputedStore.cached = await super().get_auth_chain_difference(*a)
            return self.cached

    class _Clock:
        async def sleep(self, duration: Any) -> None:
            return None

    def synapse_once() -> Mapping:
        return run_sync(
            resolve_events_with_store(
                _Clock(),
                room_id,
                KNOWN_ROOM_VERSIONS[rv],
                state_sets,
                None,
                PrecomputedStore(syn_events),
            )
        )

    synapse_once()  # fills the store's cache
    syn_s, theirs = _median_time(synapse_once, repeats)
    theirs = dict(theirs)
    differing = sum(1 for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))

    figures = {
        "state_res_10k_events": len(event_map),
        "state_res_10k_forks": args.forks,
        "state_res_10k_room_version": rv,
        "state_res_10k_conflicted_keys": len(conflicted_keys),
        "state_res_10k_conflicted_events": len(conflicted_events),
        "state_res_10k_state_size": len(ours),
        "state_res_10k_build_s": round(build_s, 3),
        "state_res_10k_bastion_s": round(ours_s, 4),
        "state_res_10k_synapse_s": round(syn_s, 4),
        "ratio": round(syn_s / ours_s, 2),
        "state_res_10k_keys_differing_from_synapse": differing,
    }
    print(f"room: {len(event_map)} events, {args.forks} forks, room version {rv}")
    print(f"conflicted: {len(conflicted_keys)} keys, {len(conflicted_events)} events")
    print(f"bastion resolve_state:             {ours_s * 1000:9.1f} ms (median of {repeats})")
    print(f"synapse resolve_events_with_store: {syn_s * 1000:9.1f} ms (median of {repeats})")
    print(f"speed-up: {syn_s / ours_s:.2f}x; keys differing: {differing}")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
