"""State resolution v2 (room versions 2–11) and v2.1 (room version 12).

Spec: Server-Server API, "Room State Resolution"; ``rooms/fragments/v2-state-res`` ("State
resolution" in room versions 2–11); "Room version 12: State resolution" (v2.1).

One public function, :func:`resolve_state`, pure and synchronous: it reads the events it needs
from the ``event_map`` it is given and never performs I/O. The authorisation rules themselves come
from :mod:`bastion.core.auth_rules`, power levels from :mod:`bastion.core.power_levels`.

Implementation notes (all in the spec's terms):

* Per-event fields (type, state key, sender, ``origin_server_ts``, ``auth_events`` IDs) are read
  once per call into a small tuple; event IDs are never recomputed (the ``event_map`` key is the
  ID).
* Without an ``auth_chain_lookup`` the *full auth chains* of the state sets are computed by walks of
  the auth DAG rather than per-event auth chains: the chain of the unconflicted state (shared by
  every state set) is walked once, and each state set's conflicted events are walked only until
  they meet it. ``∪Cᵢ − ∩Cᵢ`` equals ``∪Dᵢ − ∩Dᵢ`` for ``Dᵢ = Cᵢ − U`` where ``U`` is the auth
  chain of the unconflicted state, because ``U ⊆ Cᵢ`` for every ``i`` and ``U`` is closed under
  auth events.
* The reverse topological power ordering is Kahn's algorithm with a binary heap keyed by
  ``(−power level, origin_server_ts, event_id)``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias

from bastion.core.json_types import JsonDict, JsonMapping, StateKey
from bastion.core.room_versions import RoomVersion, StateResAlgorithm, get_room_version
from bastion.errors import M_UNSUPPORTED_ROOM_VERSION, MatrixError, bad_json, invalid_param

__all__ = ["resolve_state"]

StateMap: TypeAlias = Mapping[StateKey, str]

_CREATE = "m.room.create"
_PL = "m.room.power_levels"
_JOIN_RULES = "m.room.join_rules"
_MEMBER = "m.room.member"
_PL_KEY: StateKey = (_PL, "")
_CREATE_KEY: StateKey = (_CREATE, "")

# The per-event info tuple built by _Events.info(), and the indices into it:
# (type, state_key, sender, origin_server_ts, auth_event_ids, event).
_Info: TypeAlias = tuple[str, str | None, str, int, tuple[str, ...], JsonDict]
_TYPE: Final = 0
_SKEY: Final = 1
_SENDER: Final = 2
_TS: Final = 3
_AUTH: Final = 4
_EVENT: Final = 5


def resolve_state(
    room_version: str,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, JsonDict],
    auth_chain_lookup: Callable[[str], Iterable[str]] | None = None,
    *,
    rejected_events: Collection[str] = (),
) -> dict[StateKey, str]:
    """Resolve ``state_sets`` into one state map (rooms/fragments/v2-state-res, "Algorithm";
    Room version 12: State resolution, for v2.1).

    ``state_sets`` are maps ``{(type, state_key): event_id}``; ``event_map`` maps event IDs to
    the events (PDU dicts; from v3 on they carry no ``event_id``, the key is the ID) and must hold
    every event the algorithm looks at: the conflicted events and their auth chains (the events of
    the unconflicted state are only needed as far as they are auth events of those).
    ``auth_chain_lookup(event_id)``, when given, returns the IDs of the event's auth chain (its
    auth events, their auth events, …, not the event itself); otherwise the chains are computed
    from ``event_map``. ``rejected_events`` names events that were rejected: per
    v2-state-res, "Rejected events", they are not used as auth events in the iterative auth checks
    (events rejected on the state before them are otherwise handled as usual).

    Steps (v2-state-res, "Algorithm"): split into unconflicted state map and conflicted state
    set; full conflicted set = conflicted state set ∪ auth difference (v2.1: ∪ conflicted state
    subgraph); (1) the power events of the full conflicted set with their auth chains within it,
    in reverse topological power ordering; (2) iterative auth checks starting from the
    unconflicted state map (v2.1: from an empty map); (3) the remaining events in mainline order
    based on the resolved power levels; (4) iterative auth checks on those; (5) the unconflicted
    state map laid over the result.

    Raises :class:`~bastion.errors.MatrixError`: ``M_UNSUPPORTED_ROOM_VERSION`` for an unknown
    room version or room version 1 (state resolution v1 is not implemented), ``M_INVALID_PARAM``
    when a needed event is missing from ``event_map``, ``M_BAD_JSON`` for a malformed event.
    """
    rv = get_room_version(room_version)
    if rv.state_res is StateResAlgorithm.V1:
        raise MatrixError(
            M_UNSUPPORTED_ROOM_VERSION,
            f"room version {rv.identifier} uses state resolution v1, which Bastion does not "
            "implement; only room versions 2-12 (state resolution v2 and v2.1) are supported",
        )
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])

    unconflicted, conflicted_keys = _separate(state_sets)
    if not conflicted_keys:
        return unconflicted
    # The conflicted state set: every value any state map has at a conflicted key.
    conflicted: set[str] = set()
    for s in state_sets:
        get = s.get
        for k in conflicted_keys:
            v = get(k)
            if v is not None:
                conflicted.add(v)

    ev = _Events(rv, event_map, frozenset(rejected_events) if rejected_events else frozenset())
    v2_1 = rv.state_res is StateResAlgorithm.V2_1

    full = ev.auth_difference(state_sets, unconflicted, conflicted, auth_chain_lookup)
    full |= conflicted
    if v2_1:
        full |= ev.conflicted_subgraph(conflicted)

    # Step 1: power events of the full conflicted set, enlarged by their auth chains within it.
    info = ev.info
    power = [e for e in full if _is_power_event(info(e))]
    x = ev.power_closure(power, full, auth_chain_lookup, convex=v2_1)
    sorted_power = ev.reverse_topological_power_order(x, full, convex=v2_1)

    # Step 2: iterative auth checks from the unconflicted state (v2.1: from an empty map).
    partial: dict[StateKey, str] = {} if v2_1 else dict(unconflicted)
    ev.iterative_auth_checks(sorted_power, partial)

    # Step 3: the remaining events in mainline order based on the resolved power levels.
    remaining = [e for e in full if e not in x]
    remaining = ev.mainline_order(remaining, partial.get(_PL_KEY))

    # Step 4: iterative auth checks on the partially resolved state.
    ev.iterative_auth_checks(remaining, partial)

    # Step 5: the unconflicted state map wins.
    partial.update(unconflicted)
    return partial


def _separate(state_sets: Sequence[StateMap]) -> tuple[dict[StateKey, str], set[StateKey]]:
    """The unconflicted state map and the conflicted keys (v2-state-res, "Unconflicted state
    map and conflicted state set"): a key is unconflicted when every state map has it with the
    same value."""
    for s in state_sets:
        if not isinstance(s, Mapping):
            raise bad_json("each state set must be a mapping of (type, state_key) to event ID")
    first, others = state_sets[0], state_sets[1:]
    unconflicted: dict[StateKey, str] = {}
    conflicted_keys: set[StateKey] = set()
    missing = object()
    for k, v in first.items():
        for s in others:
            if s.get(k, missing) != v:
                conflicted_keys.add(k)
                break
        else:
            unconflicted[k] = v
    for s in others:
        for k in s:
            if k not in unconflicted:
                conflicted_keys.add(k)
    return unconflicted, conflicted_keys


def _is_power_event(i: _Info) -> bool:
    """v2-state-res, "Power events": ``m.room.power_levels``, ``m.room.join_rules``, or an
    ``m.room.member`` leave/ban whose sender is not its target (state events only)."""
    t = i[_TYPE]
    if i[_SKEY] is None:
        return False
    if t in (_PL, _JOIN_RULES):  # any state key: the spec names the types only
        return True
    if t == _MEMBER:
        if i[_SENDER] == i[_SKEY]:
            return False
        content = i[_EVENT].get("content")
        membership = content.get("membership") if isinstance(content, Mapping) else None
        return membership in ("leave", "ban")
    return False


class _Events:
    """The events of one resolution: parsed fields, walks of the auth DAG and the spec's orderings.

    Holds nothing beyond the call; every method is deterministic in its inputs.
    """

    __slots__ = ("rv", "room_version", "event_map", "rejected", "_info", "_chains", "_auth")

    def __init__(
        self, rv: RoomVersion, event_map: Mapping[str, JsonDict], rejected: frozenset[str]
    ) -> None:
        self.rv = rv
        self.room_version = rv.identifier
        self.event_map = event_map
        self.rejected = rejected
        self._info: dict[str, _Info] = {}
        self._chains: dict[str, frozenset[str]] = {}
        self._auth: dict[str, tuple[str, ...]] = {}

    # --- per-event fields -----------------------------------------------------------------

    def info(self, eid: str) -> _Info:
        """``(type, state_key, sender, origin_server_ts, auth_event_ids, event)`` of ``eid``."""
        i = self._info.get(eid)
        if i is not None:
            return i
        event = self.event_map.get(eid)
        if event is None:
            raise invalid_param(
                f"state resolution needs event {eid[:100]!r}, which is not in the event map"
            )
        if not isinstance(event, Mapping):
            raise bad_json(f"event {eid[:100]!r} is not a JSON object")
        etype = event.get("type")
        skey = event.get("state_key")
        sender = event.get("sender")
        ts = event.get("origin_server_ts")
        refs = event.get("auth_events")
        if not isinstance(etype, str) or not isinstance(sender, str):
            raise bad_json(f"event {eid[:100]!r} has no string 'type' and 'sender'")
        if skey is not None and not isinstance(skey, str):
            raise bad_json(f"event {eid[:100]!r} has a non-string 'state_key'")
        if type(ts) is not int:
            raise bad_json(f"event {eid[:100]!r} has no integer 'origin_server_ts'")
        if not isinstance(refs, list):
            raise bad_json(f"event {eid[:100]!r} has no 'auth_events' list")
        auth: list[str] = []
        for r in refs:
            # v1/v2 event format: [event_id, {hashes}] pairs; v3+: bare event IDs.
            a = r[0] if isinstance(r, list) and r else r
            if not isinstance(a, str):
                raise bad_json(f"event {eid[:100]!r} has a malformed 'auth_events' entry")
            auth.append(a)
        i = (etype, skey, sender, ts, tuple(auth), event)
        self._info[eid] = i
        self._auth[eid] = i[_AUTH]
        return i

    def auth_ids(self, eid: str) -> tuple[str, ...]:
        """The IDs ``eid``'s ``auth_events`` lists (parsed once)."""
        a = self._auth.get(eid)
        return a if a is not None else self.info(eid)[_AUTH]

    def _implied_create(self, i: _Info) -> str | None:
        """v12: the create event is never listed in ``auth_events``; its ID is the room ID with
        ``$`` for ``!`` (Room version 12, "Event format"). Returns it, or None before v12."""
        if not self.rv.room_id_is_create_hash or i[_TYPE] == _CREATE:
            return None
        room_id = i[_EVENT].get("room_id")
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise bad_json("a v12 event must have a room_id starting with '!'")
        return "$" + room_id[1:]

    # --- auth chains ------------------------------------------------------------------------

    def _ancestors(self, starts: Iterable[str], stop: Collection[str] = ()) -> set[str]:
        """The union of the auth chains of ``starts`` (not ``starts`` themselves unless reached
        through auth events), not walking into ``stop`` (which must be closed under auth events)."""
        auth_map, auth_ids = self._auth, self.auth_ids
        seen: set[str] = set()
        stack: list[str] = []
        for s in starts:
            stack.extend(auth_map.get(s) or auth_ids(s))
        add = seen.add
        push = stack.append
        while stack:
            e = stack.pop()
            if e in seen or e in stop:
                continue
            add(e)
            for a in auth_map.get(e) or auth_ids(e):
                if a not in seen:
                    push(a)
        return seen

    def _chain_memo(
        self, lookup: Callable[[str], Iterable[str]]
    ) -> Callable[[str], frozenset[str]]:
        """``lookup`` memoised for the call (one call per event at most)."""
        memo = self._chains

        def chain(e: str) -> frozenset[str]:
            c = memo.get(e)
            if c is None:
                c = memo[e] = frozenset(lookup(e))
            return c

        return chain

    def auth_difference(
        self,
        state_sets: Sequence[StateMap],
        unconflicted: Mapping[StateKey, str],
        conflicted: set[str],
        lookup: Callable[[str], Iterable[str]] | None,
    ) -> set[str]:
        """v2-state-res, "Auth difference": ``∪Cᵢ − ∩Cᵢ`` where ``Cᵢ`` is the union of the auth
        chains of the events of ``Sᵢ``."""
        per_set_conflicted = [[v for v in s.values() if v in conflicted] for s in state_sets]
        if lookup is not None:
            chain = self._chain_memo(lookup)
            common: set[str] = set()
            for e in unconflicted.values():
                common |= chain(e)
            diffs = []
            for evs in per_set_conflicted:
                d: set[str] = set()
                for e in evs:
                    d |= chain(e)
                diffs.append(d - common)
        else:
            common = self._ancestors(unconflicted.values())
            diffs = [self._ancestors(evs, common) for evs in per_set_conflicted]
        union: set[str] = set().union(*diffs)
        return union - diffs[0].intersection(*diffs[1:]) if union else union

    def conflicted_subgraph(self, conflicted: set[str]) -> set[str]:
        """Room version 12, "Conflicted state subgraph": every event on an ``auth_events`` path
        between two events of the conflicted state set, endpoints included.

        An event is on such a path when it is an auth ancestor of a conflicted event and has a
        conflicted event among its own auth ancestors (or is conflicted itself)."""
        auth_map, auth_ids = self._auth, self.auth_ids
        below = self._ancestors(conflicted)  # strict ancestors of the conflicted events
        # reaches[e]: a conflicted event is among e's strict ancestors. Iterative post-order DFS
        # over `below`, which is closed under auth events.
        reaches: dict[str, bool] = {}
        for root in below:
            if root in reaches:
                continue
            stack: list[tuple[str, bool]] = [(root, False)]
            while stack:
                e, expanded = stack.pop()
                if expanded:
                    r = False
                    for a in auth_map.get(e) or auth_ids(e):
                        if a in conflicted or reaches[a]:
                            r = True
                            break
                    reaches[e] = r
                    continue
                if e in reaches:
                    continue
                stack.append((e, True))
                for a in auth_map.get(e) or auth_ids(e):
                    if a not in reaches:
                        stack.append((a, False))
        out = {e for e, r in reaches.items() if r}
        out |= conflicted
        return out

    # --- step 1: power events and their ordering ------------------------------------------

    def power_closure(
        self,
        power: list[str],
        full: set[str],
        lookup: Callable[[str], Iterable[str]] | None,
        convex: bool,
    ) -> set[str]:
        """v2-state-res, "Algorithm" step 1: the power events of the full conflicted set and the
        events of their auth chains that belong to the full conflicted set.

        In v2.1 a walk within the full conflicted set suffices: an event of the full conflicted
        set reached through an event outside it would put that event on a path between
        conflicted events, i.e. in the conflicted state subgraph. In v2 the whole auth chain is
        walked."""
        x = set(power)
        if lookup is not None and not convex:
            chain = self._chain_memo(lookup)
            for p in power:
                x.update(full.intersection(chain(p)))
            return x
        auth_map, auth_ids = self._auth, self.auth_ids
        stack = list(power)
        seen = set(power)
        while stack:
            e = stack.pop()
            for a in auth_map.get(e) or auth_ids(e):
                if a in seen:
                    continue
                if a in full:
                    seen.add(a)
                    x.add(a)
                    stack.append(a)
                elif not convex:
                    seen.add(a)
                    stack.append(a)
        return x

    def _sender_power(self, i: _Info) -> int | float:
        """The sender's power level "when looking at [the event's] auth_events"
        (v2-state-res, "Reverse topological power ordering")."""
        from bastion.core.power_levels import get_user_power_level

        state: dict[StateKey, JsonMapping] = {}
        em = self.event_map
        auth = i[_AUTH]
        implied = self._implied_create(i)
        if implied is not None:
            auth = (*auth, implied)
        for a in auth:
            ae = em.get(a)
            if ae is None:
                continue
            ai = self.info(a)
            if ai[_SKEY] == "" and (ai[_TYPE] == _PL or ai[_TYPE] == _CREATE):
                state[(ai[_TYPE], "")] = ae
        return get_user_power_level(i[_SENDER], state, self.room_version)

    def reverse_topological_power_order(
        self, x: set[str], full: set[str], convex: bool
    ) -> list[str]:
        """v2-state-res, "Reverse topological power ordering": Kahn's algorithm on the auth DAG
        restricted to ``x``, taking at each step the smallest ready event by (greater sender power
        level, smaller ``origin_server_ts``, smaller event ID)."""
        info = self.info
        auth_map, auth_ids = self._auth, self.auth_ids
        parents: dict[str, set[str]] = {}
        children: dict[str, list[str]] = {e: [] for e in x}
        near_memo: dict[str, frozenset[str]] = {}
        for e in x:
            ps: set[str] = set()
            for a in auth_map.get(e) or auth_ids(e):
                if a in x:
                    ps.add(a)
                elif not convex and a not in full:
                    ps |= self._nearest_in(a, x, near_memo)
            parents[e] = ps
            for p in ps:
                children[p].append(e)

        power_memo: dict[tuple[str, ...], int | float] = {}
        heap: list[tuple[Any, int, str]] = []

        def key(e: str) -> tuple[Any, int, str]:
            i = info(e)
            pk = (i[_SENDER], *i[_AUTH])
            pl = power_memo.get(pk)
            if pl is None:
                pl = power_memo[pk] = self._sender_power(i)
            return (-pl, i[_TS], e)

        remaining = {e: len(ps) for e, ps in parents.items()}
        for e, n in remaining.items():
            if n == 0:
                heap.append(key(e))
        heapq.heapify(heap)
        out: list[str] = []
        while heap:
            e = heapq.heappop(heap)[2]
            out.append(e)
            for c in children[e]:
                n = remaining[c] - 1
                remaining[c] = n
                if n == 0:
                    heapq.heappush(heap, key(c))
        if len(out) != len(x):
            raise bad_json("the auth events of the conflicted events contain a cycle")
        return out

    def _nearest_in(
        self, start: str, x: set[str], memo: dict[str, frozenset[str]]
    ) -> frozenset[str]:
        """The events of ``x`` reachable from ``start`` through auth events outside ``x``
        (memoised), so that the ordering respects ancestry through events outside ``x``."""
        if start in memo:
            return memo[start]
        auth_map, auth_ids = self._auth, self.auth_ids
        empty: frozenset[str] = frozenset()
        stack: list[tuple[str, bool]] = [(start, False)]
        while stack:
            e, expanded = stack.pop()
            if expanded:
                acc: set[str] = set()
                for a in auth_map.get(e) or auth_ids(e):
                    if a in x:
                        acc.add(a)
                    else:
                        acc |= memo[a]
                memo[e] = frozenset(acc) if acc else empty
                continue
            if e in memo:
                continue
            stack.append((e, True))
            for a in auth_map.get(e) or auth_ids(e):
                if a not in x and a not in memo:
                    stack.append((a, False))
        return memo[start]

    # --- iterative auth checks ------------------------------------------------------------

    def iterative_auth_checks(self, events: list[str], state: dict[StateKey, str]) -> None:
        """v2-state-res, "Iterative auth checks": apply each event in turn to ``state`` (in
        place) if the authorisation rules allow it against ``state``; a key the rules need that
        ``state`` lacks is taken from the event's own (non-rejected) auth events."""
        from bastion.core.auth_rules import auth_types_for_event, check_auth_against_state

        info = self.info
        em = self.event_map
        rejected = self.rejected
        rvid = self.room_version
        for eid in events:
            i = info(eid)
            skey = i[_SKEY]
            if skey is None:
                continue  # not a state event: it has no place in the state
            event = i[_EVENT]
            needed = auth_types_for_event(event, rvid)
            implied = self._implied_create(i)
            if implied is not None:
                # v12: the create event is needed by the rules though never an auth event.
                needed = [*needed, _CREATE_KEY]
            auth_state: dict[StateKey, JsonDict] = {}
            for k in needed:
                v = state.get(k)
                if v is not None:
                    info(v)  # raises if missing
                    auth_state[k] = em[v]
            if len(auth_state) < len(needed):
                auth = i[_AUTH] if implied is None else (*i[_AUTH], implied)
                for a in auth:
                    if a in rejected:
                        continue
                    ai = info(a)
                    a_skey = ai[_SKEY]
                    if a_skey is None:
                        continue  # not a state event: never one of the needed keys
                    k = (ai[_TYPE], a_skey)
                    if k not in auth_state and k in needed:
                        auth_state[k] = ai[_EVENT]
            create_id = None
            if implied is not None:
                create_id = state.get(_CREATE_KEY, implied)
            if check_auth_against_state(event, auth_state, rvid, create_event_id=create_id):
                state[(i[_TYPE], skey)] = eid

    # --- step 3: mainline ordering ----------------------------------------------------------

    def _pl_of(self, e: str) -> str | None:
        """The ``m.room.power_levels`` event among ``e``'s auth events, if any."""
        info = self.info
        auth_map, auth_ids = self._auth, self.auth_ids
        for a in auth_map.get(e) or auth_ids(e):
            ai = info(a)
            if ai[_TYPE] == _PL and ai[_SKEY] == "":
                return a
        return None

    def mainline_order(self, events: list[str], pl: str | None) -> list[str]:
        """v2-state-res, "Mainline ordering" based on the power-levels event ``pl``: by greater
        mainline position first (∞ when the event's power-levels chain never meets the mainline),
        then smaller ``origin_server_ts``, then smaller event ID."""
        if not events:
            return events
        mainline: list[str] = []
        p = pl
        while p is not None:
            mainline.append(p)
            p = self._pl_of(p)
        n = len(mainline)
        # depth = n − position, so a greater position sorts first; 0 stands for position ∞.
        depth: dict[str, int] = {m: n - idx for idx, m in enumerate(mainline)}
        info = self.info

        def depth_of_pl(p: str | None) -> int:
            path: list[str] = []
            d = 0
            while p is not None:
                got = depth.get(p)
                if got is not None:
                    d = got
                    break
                path.append(p)
                p = self._pl_of(p)
            for q in path:
                depth[q] = d  # every PL event on the walk has the same first mainline hit
            return d

        keyed = []
        for e in events:
            i = info(e)
            keyed.append((depth_of_pl(self._pl_of(e)), i[_TS], e))
        keyed.sort()
        return [k[2] for k in keyed]
