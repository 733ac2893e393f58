"""Synapse's state resolution as a test oracle, and a builder of forked room DAGs (test-only).

:func:`synapse_resolve` runs ``synapse.state.v2.resolve_events_with_store`` on plain event dicts
with an in-memory :class:`FakeStore`. The store computes the auth chain difference (and, for
state res v2.1, the conflicted subgraph) the way Synapse's database does: over
``EventBase.auth_event_ids()`` (which in v12 includes the implied create event) and, like the chain
cover index, counting each state event as part of its own state set's chain
(``include_state_events=True``). ``include_state_events=False`` computes the spec's auth
difference instead (the union of the events' auth chains, which do not contain the events
themselves); the differential test uses it to classify a disagreement as that known divergence.

:class:`ForkedRoom` builds a room whose events form a tree (each event has one ``prev_event``),
so forks branch at arbitrary points; the state after each event is kept, computed by replaying
the path from the create event. Every event is authorised against the state before it (by
Bastion's auth rules) or not added.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bastion.core.auth_rules import auth_types_for_event, check_auth_against_state
from bastion.core.events import compute_event_id
from bastion.core.room_versions import get_room_version

StateKey = tuple[str, str]

# --- the oracle ----------------------------------------------------------------------------------


class _Clock:
    async def sleep(self, duration: Any) -> None:  # Synapse only ever sleeps 0 here
        return None


class FakeStore:
    """Synapse's ``StateResolutionStore`` protocol over an in-memory ``{event_id: EventBase}``."""

    def __init__(self, events: Mapping[str, Any], *, include_state_events: bool = True):
        self.events = events
        self.include_state_events = include_state_events

    async def get_events(self, event_ids: Iterable[str], allow_rejected: bool = False) -> dict:
        return {e: self.events[e] for e in event_ids if e in self.events}

    def _ancestors(self, starts: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = [a for s in starts for a in self.events[s].auth_event_ids()]
        while stack:
            e = stack.pop()
            if e in seen:
                continue
            seen.add(e)
            stack.extend(self.events[e].auth_event_ids())
        return seen

    async def get_auth_chain_difference(
        self,
        room_id: str,
        state_sets: list[set[str]],
        conflicted_state: set[str] | None,
        additional_backwards_reachable_conflicted_events: set[str] | None,
    ) -> Any:
        from synapse.storage.databases.main.event_federation import StateDifference

        chains = []
        for s in state_sets:
            c = self._ancestors(s)
            if self.include_state_events:
                c |= s
            chains.append(c)
        diff = set().union(*chains) - set.intersection(*chains)
        subgraph = None
        if conflicted_state is not None:
            # Backwards reachable from a conflicted event ∩ forwards reachable from one, both
            # including the conflicted events themselves (as Synapse's chain cover does).
            backwards = self._ancestors(conflicted_state) | conflicted_state
            children: dict[str, list[str]] = {}
            for e in backwards:
                for a in self.events[e].auth_event_ids():
                    children.setdefault(a, []).append(e)
            forwards: set[str] = set()
            stack = list(conflicted_state)
            while stack:
                e = stack.pop()
                if e in forwards:
                    continue
                forwards.add(e)
                stack.extend(children.get(e, ()))
            subgraph = backwards & forwards
        return StateDifference(auth_difference=diff, conflicted_subgraph=subgraph)


def to_synapse_events(room_version: str, events: Mapping[str, dict]) -> dict[str, Any]:
    """``{event_id: EventBase}`` for our event dicts (checks the IDs agree)."""
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
    from synapse.events import make_event_from_dict

    rv = KNOWN_ROOM_VERSIONS[room_version]
    out = {}
    for eid, ev in events.items():
        sev = make_event_from_dict(dict(ev), rv)
        assert sev.event_id == eid, f"event ID mismatch {sev.event_id} != {eid}"
        out[eid] = sev
    return out


def run_sync(coro: Any) -> Any:
    """Drive a coroutine that never really suspends (our store and clock return at once)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("Synapse's state resolution suspended unexpectedly")


def _spec_power_closure(syn_events: Mapping[str, Any]) -> Any:
    """A stand-in for ``synapse.state.v2._add_event_and_auth_chain_to_graph`` that follows the
    spec's step 1: the events of the power event's *whole* auth chain that are in the full
    conflicted set join the graph (Synapse only walks auth events inside the full conflicted
    set), each with edges to its nearest ancestors in the full conflicted set."""

    async def add(
        graph: dict, room_id: str, event_id: str, event_map: Any, store: Any, full: set
    ) -> None:
        stack = [event_id]
        while stack:
            eid = stack.pop()
            if eid in graph:
                continue
            edges = graph[eid] = set()
            seen: set[str] = set()
            todo = list(syn_events[eid].auth_event_ids())
            while todo:
                a = todo.pop()
                if a in seen:
                    continue
                seen.add(a)
                if a in full:
                    edges.add(a)
                    stack.append(a)
                else:
                    todo.extend(syn_events[a].auth_event_ids())

    return add


def synapse_resolve(
    room_version: str,
    state_sets: Sequence[Mapping[StateKey, str]],
    syn_events: Mapping[str, Any],
    *,
    include_state_events: bool = True,
    spec_power_closure: bool = False,
) -> dict[StateKey, str]:
    """Synapse's ``resolve_events_with_store`` on ``state_sets``; ``syn_events`` from
    :func:`to_synapse_events`.

    The keywords switch the two known departures of Synapse from the spec (DIVERGENCES.md, "State
    resolution") to the spec's behaviour: ``include_state_events=False`` computes the spec's auth
    difference, ``spec_power_closure=True`` the spec's set *X* of step 1."""
    import synapse.event_auth  # noqa: F401  (import first: synapse.state has a cycle with it)
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
    from synapse.state import v2

    some = syn_events[next(iter(next(s for s in state_sets if s).values()))]
    store = FakeStore(syn_events, include_state_events=include_state_events)
    original = v2._add_event_and_auth_chain_to_graph
    if spec_power_closure:
        v2._add_event_and_auth_chain_to_graph = _spec_power_closure(syn_events)
    try:
        result = run_sync(
            v2.resolve_events_with_store(
                _Clock(),
                some.room_id,
                KNOWN_ROOM_VERSIONS[room_version],
                [dict(s) for s in state_sets],
                None,
                store,
            )
        )
    finally:
        v2._add_event_and_auth_chain_to_graph = original
    return dict(result)


# --- the room builder ----------------------------------------------------------------------------


class ForkedRoom:
    """A room DAG shaped as a tree. ``events`` maps IDs to event dicts; ``state_after`` maps each
    event ID to the state map after it; ``order`` lists the event IDs as they were added."""

    def __init__(self, room_version: str, creator: str, *, ts: int = 1_000) -> None:
        self.version = room_version
        self.rv = get_room_version(room_version)
        self.creator = creator
        self.events: dict[str, dict] = {}
        self.state_after: dict[str, dict[StateKey, str]] = {}
        self.depth: dict[str, int] = {}
        self.order: list[str] = []
        content: dict[str, Any] = {"room_version": room_version}
        if not self.rv.implicit_room_creator:
            content["creator"] = creator
        create: dict[str, Any] = {
            "type": "m.room.create",
            "state_key": "",
            "sender": creator,
            "content": content,
            "origin_server_ts": ts,
            "depth": 1,
            "prev_events": [],
            "auth_events": [],
            "hashes": {"sha256": "AAAA"},
            "signatures": {},
        }
        if self.rv.room_id_is_create_hash:
            self.room_id = ""
        else:
            self.room_id = "!room:" + creator.split(":", 1)[1]
            create["room_id"] = self.room_id
        if self.rv.event_id_format.value == "v1":
            create["event_id"] = "$0:" + creator.split(":", 1)[1]
        cid = compute_event_id(create, room_version)
        if self.rv.room_id_is_create_hash:
            self.room_id = "!" + cid[1:]
        self.create_id = cid
        self.events[cid] = create
        self.state_after[cid] = {("m.room.create", ""): cid}
        self.depth[cid] = 1
        self.order.append(cid)

    def try_add(
        self,
        parent: str,
        etype: str,
        state_key: str | None,
        sender: str,
        content: dict,
        ts: int,
    ) -> str | None:
        """Add an event after ``parent`` if the auth rules allow it against the state there;
        returns its ID or None."""
        state = self.state_after[parent]
        event: dict[str, Any] = {
            "type": etype,
            "sender": sender,
            "room_id": self.room_id,
            "content": content,
            "origin_server_ts": ts,
            "depth": self.depth[parent] + 1,
            "prev_events": [parent],
            "hashes": {"sha256": "AAAA"},
            "signatures": {},
        }
        if state_key is not None:
            event["state_key"] = state_key
        auth_ids = [state[k] for k in auth_types_for_event(event, self.version) if k in state]
        event["auth_events"] = auth_ids
        if self.rv.event_id_format.value == "v1":
            event["event_id"] = f"${len(self.order)}:x"
            event["prev_events"] = [[parent, {"sha256": "AAAA"}]]
            event["auth_events"] = [[a, {"sha256": "AAAA"}] for a in auth_ids]
        auth_state = {k: self.events[v] for k, v in state.items()}
        if not check_auth_against_state(event, auth_state, self.version):
            return None
        eid = compute_event_id(event, self.version)
        self.events[eid] = event
        after = state
        if state_key is not None:
            after = dict(state)
            after[(etype, state_key)] = eid
        self.state_after[eid] = after
        self.depth[eid] = self.depth[parent] + 1
        self.order.append(eid)
        return eid
