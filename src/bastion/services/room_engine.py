"""The room engine (``hs.rooms.engine``): the one place where a room's history grows.

It owns, per room, the write lock and the cached *head* (current state, state group, forward
extremities and their depths), and offers one function per kind of append, each ending in one
database write:

* :meth:`RoomEngine.append_local_event` — an event of a local user in an existing room: built on
  the head, authorised against the current state, signed, persisted (C-S API "Room Events";
  S-S API "Auth events selection", "Signing Events"). An event that needs another server's
  countersignature first (a remote invite) is built under the lock, countersigned *outside*
  it, and persisted only if the head has not moved meanwhile (else rebuilt, a bounded number of
  times): no network call ever runs under a room lock.
* :meth:`RoomEngine.append_new_room` — createRoom's batch (a :class:`RoomBatch`), with the room
  row and alias written in the same transaction.
* :meth:`RoomEngine.accept_remote_event` — an event received over federation after PDU checks
  1–4: a pure ``decide(state_before, current_state)`` runs under the lock (checks 5 and 6), and
  the event is persisted accepted, soft-failed or rejected. Only an accepted, non-backfilled
  event moves the head (S-S API "Rejection", "Soft failure").
* :meth:`RoomEngine.store_outliers` — events held without their place in the DAG (fetched auth
  events, a rejected event whose state is unknown): never move a head.
* :meth:`RoomEngine.install_joined_room` — the state of a room joined over federation (a
  send_join response).
* :meth:`RoomEngine.membership_template` — the unsigned template a resident server answers to
  make_join / make_leave / make_knock (S-S API "Joining Rooms").

Depth (S-S API PDU ``depth``; Synapse's ``MAX_DEPTH``): a new event's depth is one more than the
deepest of its ``prev_events``, capped at 2^53−1, the largest integer canonical JSON allows
(:func:`next_depth`). The head keeps the depth of each forward extremity; rejected, soft-failed
and outlier events are never extremities, so they never raise it.

Nothing outside this module touches a room's lock or head: the rest of the server reads the head
through :meth:`RoomEngine.head` (read only) or :meth:`RoomEngine.snapshot` (a copy). This append
path is where a ledger of persisted events and a guard deciding before an event is accepted
attach: each append is one function ending in one write.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.core.auth_rules import JAUVS, auth_types_for_event, check_auth_against_state
from bastion.core.canonical_json import MAX_SAFE_INTEGER
from bastion.core.events import (
    MAX_PREV_EVENTS,
    check_event_size,
    compute_event_id,
    compute_room_id_v12,
    redact,
    sign_event,
)
from bastion.core.identifiers import server_name_of
from bastion.core.redactions import may_apply_redaction, redaction_target_id
from bastion.core.room_versions import get_room_version
from bastion.core.state_keys import CREATE_KEY, POWER_LEVELS_KEY
from bastion.core.state_res import resolve_state
from bastion.errors import M_UNKNOWN, MatrixError, forbidden, not_found
from bastion.services.remote import EventOutbox
from bastion.storage.interface import NewEvent, RemoteEvent, StateMap

if TYPE_CHECKING:
    from bastion.signing_key import ServerKey
    from bastion.storage.interface import Store

log = logging.getLogger("bastion.rooms")

#: The largest depth an event may carry: canonical JSON's largest integer (Synapse's
#: ``MAX_DEPTH``); room versions 1–5 would allow 2^63−1, but an event that deep cannot be sent
#: to a server speaking canonical JSON strictly.
MAX_DEPTH = MAX_SAFE_INTEGER
#: How many times an event needing a countersignature is rebuilt when the head moved meanwhile.
MAX_COUNTERSIGN_ATTEMPTS = 3

#: ``countersign(event, event_id, room_version)`` → the event with another server's signature.
Countersign = Callable[[dict, str, str], Awaitable[dict]]


def next_depth(prev_depths: Iterable[int]) -> int:
    """The depth of an event on top of events of these depths: the deepest plus one, capped at
    :data:`MAX_DEPTH` (S-S API "PDUs": ``depth``)."""
    return min(max(prev_depths, default=0) + 1, MAX_DEPTH)


@dataclass
class RoomHead:
    """The current state of a room and its forward extremities (with their depths). The engine
    replaces a room's head on each append; a head handed out is never changed by it."""

    room_id: str
    room_version: str
    state: StateMap = field(default_factory=dict)
    group: int | None = None
    chain_len: int = 0
    extremities: list[str] = field(default_factory=list)
    #: event ID → depth of each forward extremity.
    ext_depths: dict[str, int] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        """The deepest forward extremity."""
        return max(self.ext_depths.values(), default=0)

    def prev_events(self) -> list[str]:
        """The ``prev_events`` of a new event on this head (at most 20, the newest)."""
        return self.extremities[-MAX_PREV_EVENTS:]

    def next_depth(self) -> int:
        return next_depth(self.ext_depths.get(e, 0) for e in self.prev_events())

    def copy(self) -> RoomHead:
        return RoomHead(
            self.room_id, self.room_version, dict(self.state), self.group, self.chain_len,
            list(self.extremities), dict(self.ext_depths),
        )  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """The outcome of checks 5 and 6 on a received event (S-S API "Checks performed on receipt
    of a PDU"): ``accept``, ``reject`` (check 5) or ``soft_fail`` (check 6), with a reason."""

    outcome: str
    reason: str | None = None

    @classmethod
    def accept(cls) -> Verdict:
        return cls("accept")

    @classmethod
    def reject(cls, reason: str) -> Verdict:
        return cls("reject", reason)

    @classmethod
    def soft_fail(cls, reason: str) -> Verdict:
        return cls("soft_fail", reason)


#: ``decide(state_before, current_state)``: checks 5 and 6 of a received event; current_state
#: is None for a backfilled event (check 6 does not apply) or a room without a head.
Decide = Callable[[StateMap, "StateMap | None"], Verdict]


class _LazyEvents(Mapping):
    """Events for state resolution, read from the store on demand (rejected ones included)."""

    def __init__(self, store: Store, extra: dict[str, dict]) -> None:
        self.store = store
        self.cache: dict[str, dict] = dict(extra)

    def __getitem__(self, eid: str) -> dict:
        ev = self.cache.get(eid)
        if ev is None:
            ev = self.store.get_pdus([eid], with_rejected=True).get(eid)
            if ev is None:
                raise KeyError(eid)
            self.cache[eid] = ev
        return ev

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache)

    def __len__(self) -> int:
        return len(self.cache)


class RoomBatch:
    """createRoom's events, built one after the other on a new room's head
    (:meth:`RoomEngine.new_room`), persisted together by :meth:`RoomEngine.append_new_room`."""

    def __init__(self, engine: RoomEngine, room_id: str, version: str) -> None:
        self._engine = engine
        self.head = RoomHead(room_id, version)
        self.pending: dict[str, dict] = {}
        self.events: list[NewEvent] = []

    @property
    def room_id(self) -> str:
        return self.head.room_id

    def add(
        self, sender: str, etype: str, content: dict, state_key: str | None = "",
        *, authoriser: str | None = None,
    ) -> NewEvent:  # fmt: skip
        ne = self._engine._build(self.head, self.pending, sender, etype, content, state_key,
                                 authoriser=authoriser)  # fmt: skip
        self.events.append(ne)
        return ne


class PersistedEvents:
    """Events of one commit, ``(event, event_id, room_id, stream_pos)`` each, for the
    after-commit hook (hashable by identity, as the store's after-commit calls must be)."""

    __slots__ = ("events",)

    def __init__(self, events: list[tuple[dict, str, str, int]]) -> None:
        self.events = events


class RoomEngine:
    def __init__(
        self,
        store: Store,
        server_name: str,
        signing_key: ServerKey,
        now_ms: Callable[[], int],
    ) -> None:
        self.store = store
        self.server_name = server_name
        self.signing_key = signing_key
        self.now_ms = now_ms
        #: Queues our new events for the other servers (handed in by the homeserver; None when
        #: federation is off). Called inside the write that persists them.
        self.outbox: EventOutbox | None = None
        #: Called on the event loop after the commit of new timeline events (not backfilled,
        #: rejected or soft-failed) with one hashable argument holding ``(event, event_id,
        #: room_id, stream_pos)`` tuples (``.events``): push rule evaluation
        #: (services/push.py). Handed in by the homeserver; None: nobody listens.
        self.on_persisted: Callable[[Any], None] | None = None
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._heads: dict[str, RoomHead] = {}
        self._last_create_ts = 0

    # ------------------------------------------------------------------------------------------
    # Reading the head
    # ------------------------------------------------------------------------------------------
    def head(self, room_id: str) -> RoomHead | None:
        """The room's head (read only: never change it), loaded from the store on first use;
        None for a room we do not hold."""
        head = self._heads.get(room_id)
        if head is None:
            row = self.store.load_room_head(room_id)
            if row is None:
                return None
            head = RoomHead(
                room_id, row.room_version, row.state, row.group, row.chain_len,
                row.extremities, dict(row.ext_depths),
            )  # fmt: skip
            self._heads[room_id] = head
        return head

    def require_room(self, room_id: str) -> RoomHead:
        head = self.head(room_id)
        if head is None:
            raise not_found("unknown room")
        return head

    def current_state_event(self, room_id: str, etype: str, state_key: str = "") -> dict | None:
        """The event of the room's current state at (etype, state_key), or None."""
        head = self.head(room_id)
        if head is None:
            return None
        eid = head.state.get((etype, state_key))
        return self.store.get_event(eid) if eid else None

    def snapshot(self, room_id: str) -> RoomHead | None:
        """A copy of the room's head."""
        head = self.head(room_id)
        return head.copy() if head is not None else None

    def forget_head(self, room_id: str) -> None:
        """Drop the cached head: the next read loads it from the store."""
        self._heads.pop(room_id, None)

    def room_lock(self, room_id: str) -> asyncio.Lock:
        """The lock every append to the room holds (a room purge holds it too)."""
        return self._locks[room_id]

    # ------------------------------------------------------------------------------------------
    # Building a local event
    # ------------------------------------------------------------------------------------------
    def _build(
        self, head: RoomHead, pending: dict[str, dict], sender: str, etype: str, content: dict,
        state_key: str | None = None, *, redacts: str | None = None,
        authoriser: str | None = None,
    ) -> NewEvent:  # fmt: skip
        """Build, authorise and sign one event on top of ``head`` (a copy, which it advances).

        ``authoriser``: the user this server chose, after checking the room's restricted join
        rule itself, to authorise a join (``join_authorised_via_users_server``). Only then does
        our own signature count as the authorising server's (auth rule 5.2 of v8+); any other
        ``join_authorised_via_users_server`` in ``content`` fails rule 5.2."""
        version = head.room_version
        rv = get_room_version(version)
        ts = self.now_ms()
        if etype == "m.room.create":
            # v12: the room ID is the create event's hash. Two creates by one user with the same
            # content within one millisecond would collide: their timestamps always differ.
            ts = max(ts, self._last_create_ts + 1)
            self._last_create_ts = ts
        ev: dict = {
            "type": etype,
            "sender": sender,
            "content": content,
            "origin_server_ts": ts,
            "depth": head.next_depth(),
            "prev_events": head.prev_events(),
            "auth_events": [],
        }
        if not (rv.room_id_is_create_hash and etype == "m.room.create"):
            ev["room_id"] = head.room_id
        if state_key is not None:
            ev["state_key"] = state_key
        if redacts is not None and not rv.redacts_in_content:
            ev["redacts"] = redacts
        keys = auth_types_for_event(ev, version)
        ev["auth_events"] = [head.state[k] for k in keys if k in head.state]

        def lookup(eid: str) -> dict | None:
            # The room's auth events recur in every build: the store's parsed rows, cached
            # (shared, read only; the auth rules never change an event).
            if eid in pending:
                return pending[eid]
            row = self.store.get_event_rows_cached([eid]).get(eid)
            return row.event if row is not None else None

        auth_state: dict = {}
        for k in [*keys, CREATE_KEY]:
            eid = head.state.get(k)
            if eid is not None:
                e = lookup(eid)
                if e is not None:
                    auth_state[k] = e
        check_event_size(ev)
        chosen = authoriser
        own = self.server_name

        def verify_signature(event: dict, server: str) -> bool:
            # Rule 5.2: our signature (added below) stands for the authoriser's server only
            # when this server chose that authoriser.
            via = event.get("content", {}).get(JAUVS)
            return chosen is not None and via == chosen and server == own == server_name_of(chosen)

        # v12: the room ID is the create event's ID; our own room's create event is trusted, so
        # pass its ID instead of hashing it on every check.
        create_id = (
            "$" + ev["room_id"][1:] if rv.room_id_is_create_hash and "room_id" in ev else None
        )
        result = check_auth_against_state(
            ev, auth_state, version, verify_signature=verify_signature, create_event_id=create_id
        )
        if not result:
            raise forbidden(result.reason or "not allowed by the auth rules")
        signed = sign_event(ev, version, own, self.signing_key.key_id, self.signing_key.key)
        check_event_size(signed)
        event_id = compute_event_id(signed, version)
        if etype == "m.room.create" and rv.room_id_is_create_hash:
            head.room_id = compute_room_id_v12(signed)
        replaces = None
        state_after = None
        if state_key is not None:
            replaces = head.state.get((etype, state_key))
            head.state[(etype, state_key)] = event_id
            state_after = dict(head.state)
        head.extremities = [event_id]
        head.ext_depths = {event_id: ev["depth"]}
        pending[event_id] = signed
        wake: tuple[str, ...] = ()
        if etype == "m.room.member" and state_key is not None:
            wake = (state_key,)
        return NewEvent(
            signed, event_id, head.room_id, ev["depth"],
            state_after=state_after, replaces_state=replaces, wake=wake,
        )  # fmt: skip

    async def _write_local(
        self, head: RoomHead, events: list[NewEvent], base: RoomHead | None, extra=None
    ) -> None:
        """Persist events built on ``head`` in one write (queued for the other servers in the
        same transaction); then ``head`` becomes the room's. Called under the room's lock."""
        group = base.group if base else None
        chain = base.chain_len if base else 0
        outbox = self.outbox

        def fn(conn):
            if extra is not None:
                extra(conn)
            result = self.store.persist_events_sync(conn, events, group, chain)
            if outbox is not None:
                outbox.enqueue_events_in(conn, events)
            if self.on_persisted is not None:
                self.store.run_after_commit(self.on_persisted, PersistedEvents(
                    [(ne.event, ne.event_id, ne.room_id, ne.stream_pos) for ne in events]
                ))  # fmt: skip
            return result

        head.group, head.chain_len = await self.store.transaction(fn)
        self._heads[head.room_id] = head

    def _remote_redaction_target(
        self, pdu: dict, room_id: str, version: str, state_before: StateMap
    ) -> tuple[str, dict] | None:
        """Rooms v3+ "Handling redactions": an accepted redaction from another server redacts
        the stored event it names when it may (core/redactions.py: the same server as the
        target's sender, or the power to redact, by the state before the redaction). A target
        not stored yet is redacted when it arrives (:meth:`_redacted_on_arrival`)."""
        rv = get_room_version(version)
        target_id = redaction_target_id(pdu, rv)
        if target_id is None:
            return None
        row = self.store.get_event_row(target_id)
        if row is None or row.room_id != room_id or row.redacted_because:
            return None
        wanted = [
            e for e in (state_before.get(CREATE_KEY), state_before.get(POWER_LEVELS_KEY)) if e
        ]
        pdus = self.store.get_pdus(wanted)
        create = pdus.get(state_before.get(CREATE_KEY) or "")
        pl = pdus.get(state_before.get(POWER_LEVELS_KEY) or "")
        if not may_apply_redaction(
            pdu, row.event,
            create.get("content") if create else None, pl.get("content") if pl else None, rv,
        ):  # fmt: skip
            return None
        return (target_id, redact(row.event, version))

    def _unseen_redaction_target(self, pdu: dict, version: str) -> str | None:
        """The event an accepted redaction names when this server has not stored it: kept
        (the store's ``pending_redactions``) until it arrives."""
        target_id = redaction_target_id(pdu, get_room_version(version))
        if target_id is None or self.store.get_event_meta([target_id]):
            return None
        return target_id

    def _redacted_on_arrival(
        self, pdu: dict, event_id: str, room_id: str, version: str
    ) -> tuple[str, dict] | None:
        """Rooms v3+ "Handling redactions" for an event received after its redaction: the
        first redaction kept for it that may apply (the same rule as when the target comes
        first, by the state before the redaction), and the event's redacted form. An outlier
        stored again keeps the redaction it already had."""
        stored = self.store.get_event_row(event_id)
        if stored is not None and stored.redacted_because:
            return (stored.redacted_because, redact(pdu, version))
        pending = self.store.pending_redactions_of(event_id)
        if not pending:
            return None
        rv = get_room_version(version)
        rows = self.store.get_event_rows(pending)
        for redaction_id in pending:
            row = rows.get(redaction_id)
            if row is None or row.room_id != room_id:
                continue
            state = self.store.get_state_group(row.sg_before)
            pdus = self.store.get_pdus(
                [e for e in (state.get(CREATE_KEY), state.get(POWER_LEVELS_KEY)) if e]
            )
            create = pdus.get(state.get(CREATE_KEY) or "")
            pl = pdus.get(state.get(POWER_LEVELS_KEY) or "")
            if may_apply_redaction(
                row.event, pdu,
                create.get("content") if create else None, pl.get("content") if pl else None, rv,
            ):  # fmt: skip
                return (redaction_id, redact(pdu, version))
        return None

    def _redaction_target(self, head: RoomHead, target_id: str):
        """C-S "Redactions" / rooms v3+ "Handling redactions": the target, redacted (the
        sender's right to redact it is checked before building)."""
        row = self.store.get_event_row(target_id)
        if row is None or row.room_id != head.room_id or row.redacted_because:
            return None
        return (target_id, redact(row.event, head.room_version))

    # ------------------------------------------------------------------------------------------
    # Append: a local event
    # ------------------------------------------------------------------------------------------
    async def append_local_event(
        self, room_id: str, sender: str, etype: str, content: dict,
        state_key: str | None = None, *, txn: tuple[str, str, str, str] | None = None,
        redacts: str | None = None, check: Callable[[RoomHead], None] | None = None,
        authoriser: str | None = None, countersign: Countersign | None = None,
    ) -> str:  # fmt: skip
        """Build, authorise, sign and persist one event of a local user in an existing room;
        return its ID. Idempotent per ``txn`` (C-S "Transaction identifiers"). ``check(head)``
        runs under the lock before building (403/404 to refuse). ``countersign``: the event
        needs another server's signature before it is persisted (S-S API "Inviting to a room");
        it is asked for outside the lock, then the event is persisted if the head has not
        moved, else rebuilt on the new head (at most ``MAX_COUNTERSIGN_ATTEMPTS`` times)."""
        lock = self._locks[room_id]
        for _ in range(MAX_COUNTERSIGN_ATTEMPTS):
            async with lock:
                if txn is not None:
                    existing = self.store.get_txn_event(*txn)
                    if existing is not None:
                        return existing
                base = self.require_room(room_id)
                if check is not None:
                    check(base)
                head = base.copy()
                ne = self._build(head, {}, sender, etype, content, state_key, redacts=redacts,
                                 authoriser=authoriser)  # fmt: skip
                ne.txn = txn
                if redacts is not None:
                    ne.redaction_target = self._redaction_target(base, redacts)
                if countersign is None:
                    await self._write_local(head, [ne], base)
                    return ne.event_id
            # The network call, outside the lock.
            ne.event = await countersign(ne.event, ne.event_id, base.room_version)
            async with lock:
                now = self.require_room(room_id)
                if now.extremities == base.extremities and now.state == base.state:
                    await self._write_local(head, [ne], now)
                    return ne.event_id
            log.info("%s: the room moved while %s was countersigned; rebuilding",
                     room_id, ne.event_id)  # fmt: skip
        raise MatrixError(
            M_UNKNOWN, "the room changed while the event was countersigned; try again", 503
        )

    # ------------------------------------------------------------------------------------------
    # Append: a new room (createRoom)
    # ------------------------------------------------------------------------------------------
    def new_room(self, room_id: str, version: str) -> RoomBatch:
        """A batch building a new room's first events (``room_id`` is "" for v12, where the
        create event names the room)."""
        return RoomBatch(self, room_id, version)

    async def append_new_room(self, batch: RoomBatch, extra: Callable | None = None) -> None:
        """Persist a new room's events in one write; ``extra(conn)`` runs first in the same
        transaction (the room row, its alias)."""
        room_id = batch.room_id
        for ne in batch.events:
            ne.room_id = room_id
        async with self._locks[room_id]:
            await self._write_local(batch.head, batch.events, None, extra)

    # ------------------------------------------------------------------------------------------
    # Append: a remote event
    # ------------------------------------------------------------------------------------------
    def resolve_states(self, version: str, states: list[Mapping], extra: dict[str, dict]) -> dict:
        """S-S API "Room State Resolution" of ``states`` (events read from the store, plus
        ``extra`` not stored yet)."""
        event_map = _LazyEvents(self.store, extra)
        conflicted_ids = set()
        keys = set().union(*(s.keys() for s in states))
        for k in keys:
            vals = {s.get(k) for s in states}
            if len(vals) > 1:
                conflicted_ids |= {v for v in vals if v is not None}
        rejected = {e for e, m in self.store.get_event_meta(conflicted_ids).items() if m.rejected}
        return resolve_state(version, states, event_map, rejected_events=rejected)

    async def accept_remote_event(
        self, pdu: dict, event_id: str, room_id: str, version: str, *,
        state_before: StateMap, sg_before: int | None, decide: Decide,
        backfilled: bool = False, backfill_pos: int | None = None,
    ) -> Verdict:  # fmt: skip
        """Persist a received event that passed checks 1–4, as ``decide(state_before,
        current_state)`` (checks 5–6, run under the lock) says: rejected, soft-failed or
        accepted. An accepted event that is not backfilled becomes a forward extremity and the
        room's current state is the resolution of the extremities' states; nothing else moves
        the head. One write."""
        async with self._locks[room_id]:
            head = self.head(room_id)
            current = head.state if head is not None and not backfilled else None
            verdict = decide(state_before, current)
            rec = RemoteEvent(
                pdu, event_id, room_id, rejected=verdict.outcome == "reject",
                soft_failed=verdict.outcome == "soft_fail", backfilled=backfilled,
                state_before=state_before, sg_before=sg_before, backfill_pos=backfill_pos,
            )  # fmt: skip
            new_head = None
            if verdict.outcome == "accept" and current is not None and head is not None:
                prev_ids = {p[0] if isinstance(p, list) else p for p in pdu.get("prev_events", [])}
                new_ext = [e for e in head.extremities if e not in prev_ids] + [event_id]
                state_after = dict(state_before)
                if isinstance(pdu.get("state_key"), str):
                    state_after[(pdu["type"], pdu["state_key"])] = event_id
                if new_ext == [event_id]:
                    new_current = state_after
                else:
                    others = self.store.get_event_meta(new_ext[:-1])
                    ext_states = [self.store.get_state_group(others[e].sg_after)
                                  for e in new_ext[:-1] if e in others]  # fmt: skip
                    new_current = self.resolve_states(
                        version, [*ext_states, state_after], {event_id: pdu}
                    )
                rec.old_current = dict(head.state)
                rec.new_current = new_current
                rec.extremities = new_ext
                changed = [v for k, v in new_current.items() if rec.old_current.get(k) != v]
                rec.state_events = {event_id: pdu, **self.store.get_pdus(changed)}
                depth = pdu.get("depth")
                new_head = RoomHead(
                    room_id, head.room_version, dict(new_current), None, 0, new_ext,
                    {**{e: d for e, d in head.ext_depths.items() if e in new_ext},
                     event_id: depth if type(depth) is int else 0},
                )  # fmt: skip
            if verdict.outcome == "accept" and pdu.get("type") == "m.room.redaction":
                rec.redaction_target = self._remote_redaction_target(pdu, room_id, version,
                                                                     state_before)  # fmt: skip
                if rec.redaction_target is None:
                    rec.pending_redaction = self._unseen_redaction_target(pdu, version)
            if verdict.outcome != "reject":
                rec.redacted_on_arrival = self._redacted_on_arrival(pdu, event_id, room_id,
                                                                    version)  # fmt: skip
            served = rec.redacted_on_arrival[1] if rec.redacted_on_arrival else pdu
            live = verdict.outcome == "accept" and not backfilled and self.on_persisted is not None

            def write(conn) -> None:
                self.store.persist_remote_event_sync(conn, rec)
                if live and self.on_persisted is not None:
                    self.store.run_after_commit(self.on_persisted, PersistedEvents(
                        [(served, event_id, room_id, rec.stream_pos)]
                    ))  # fmt: skip

            await self.store.transaction(write)
            if new_head is not None:
                new_head.group, new_head.chain_len = rec.head_group, rec.head_chain
                self._heads[room_id] = new_head
            return verdict

    async def store_outliers(self, rows: list[tuple[str, str, dict, bool]]) -> None:
        """Store events as outliers — (event_id, room_id, pdu, rejected): held without their
        place in the DAG, they never move a head. One write."""
        if rows:
            await self.store.transaction(lambda conn: self.store.persist_outliers_sync(conn, rows))

    # ------------------------------------------------------------------------------------------
    # Append: a room joined over federation
    # ------------------------------------------------------------------------------------------
    async def install_joined_room(
        self, room_id: str, version: str, creator: str,
        outliers: list[tuple[str, str, dict, bool]], state: StateMap, join: RemoteEvent,
    ) -> None:  # fmt: skip
        """Store a send_join response (S-S API "Joining Rooms"): the room, its state and auth
        chain as outliers, and the join on top of the state as the only forward extremity and
        the current state. One write; the head is then reloaded from the store."""
        now = self.now_ms()
        async with self._locks[room_id]:
            await self.store.transaction(
                lambda conn: self.store.persist_joined_room_sync(
                    conn, room_id, version, creator, now, outliers, state, join
                )
            )
            self._heads.pop(room_id, None)

    # ------------------------------------------------------------------------------------------
    # Templates for remote joins, leaves and knocks
    # ------------------------------------------------------------------------------------------
    def membership_template(
        self, room_id: str, user_id: str, membership: str, authoriser: str | None = None
    ) -> dict:
        """The unsigned membership event of a remote user on the room's head (S-S API
        "Joining Rooms" make_join, "Leaving Rooms" make_leave, "Knocking upon a room"
        make_knock), checked against the current state (403 ``M_FORBIDDEN``). ``authoriser``:
        the local user this server chose to authorise a restricted join (its signature is added
        by send_join, so it counts here as given)."""
        head = self.require_room(room_id)
        version = head.room_version
        rv = get_room_version(version)
        content: dict = {"membership": membership}
        if authoriser is not None:
            content[JAUVS] = authoriser
        ev: dict = {
            "type": "m.room.member",
            "room_id": room_id,
            "sender": user_id,
            "state_key": user_id,
            "content": content,
            "origin": self.server_name,
            "origin_server_ts": self.now_ms(),
            "depth": head.next_depth(),
            "prev_events": head.prev_events(),
            "auth_events": [],
        }
        keys = auth_types_for_event(ev, version)
        ev["auth_events"] = [head.state[k] for k in keys if k in head.state]
        auth_state = {}
        for k in [*keys, CREATE_KEY]:
            eid = head.state.get(k)
            e = self.store.get_event(eid) if eid else None
            if e is not None:
                auth_state[k] = e
        create_id = "$" + room_id[1:] if rv.room_id_is_create_hash else None
        own = self.server_name
        result = check_auth_against_state(
            ev, auth_state, version,
            verify_signature=lambda _ev, server: authoriser is not None
            and server == own == server_name_of(authoriser),
            create_event_id=create_id,
        )  # fmt: skip
        if not result:
            raise forbidden(result.reason or "not allowed by the auth rules")
        return ev
