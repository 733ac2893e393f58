"""Rooms: the event graph, state, memberships, transaction IDs, aliases and the room directory
(C-S API "Rooms", "Room Events", "Room aliases", "Room directory"; S-S API "Room State
Resolution" for the shape of the data).

The storage holds a DAG: every event keeps its ``prev_events`` (``event_edges``) and
``auth_events`` (``event_auth``), rooms keep their forward extremities, and every event points to
the *state group* before and after it. A state group is a delta over a previous group (a chain
compacted into a full snapshot every ``SNAPSHOT_EVERY`` groups), so the state at any event can be
found later — what federation and history visibility need. ``current_state`` and
``current_membership`` are the materialised current views.

Every event has a global stream position (``events.stream_pos``) shared with the other streams;
/sync and /messages order room events by it.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from dataclasses import dataclass, field

import orjson

from bastion.storage.interface import EventRow, NewEvent, RoomHeadRow, RoomMembers, StateMap
from bastion.storage.sqlite.base import StoreBase
from bastion.storage.sqlite.ledger import append_event_leaf
from bastion.storage.sqlite.relations import index_relation_in, unindex_relations_in
from bastion.storage.sqlite.search import index_search_in, unindex_search_in

STREAMS: list[tuple[str, str]] = [("events", "stream_pos")]

#: A delta chain longer than this is compacted into a full snapshot.
SNAPSHOT_EVERY = 32

_COLS = (
    "event_id, room_id, stream_pos, depth, json, sg_before, sg_after, replaces_state,"
    " redacted_because, txn_user, txn_device, txn_id"
)


def short_range(after: int, upto: int, rooms: int) -> bool:
    """Whether reading every row of a stream in ``(after, upto]`` is cheaper than one probe
    for each of ``rooms`` rooms."""
    return upto - after <= 4 * rooms + 64


def rooms_with_rows(db, table: str, room_ids, after: int, upto: int) -> set[str]:
    """Those of ``room_ids`` with a row of ``table`` (``events``, ``receipts``: each has an
    index on ``(room_id, stream_pos)`` and one on ``stream_pos``) at a stream position in
    ``(after, upto]``. A short range (positions are shared by every stream, so a range holds at
    most that many rows) is read whole through the ``stream_pos`` index; a long one with one
    indexed probe per room."""
    ids = room_ids if isinstance(room_ids, (set, frozenset)) else set(room_ids)
    if not ids or upto <= after:
        return set()
    if short_range(after, upto, len(ids)):
        rows = db.read(
            f"SELECT DISTINCT room_id FROM {table} WHERE stream_pos > ? AND stream_pos <= ?",  # noqa: S608
            (after, upto),
        )
        return {r[0] for r in rows if r[0] in ids}
    rows = db.read(
        f"SELECT value FROM json_each(?) WHERE EXISTS (SELECT 1 FROM {table}"  # noqa: S608
        " WHERE room_id = value AND stream_pos > ? AND stream_pos <= ?)",
        (orjson.dumps(sorted(ids)).decode(), after, upto),
    )
    return {r[0] for r in rows}


def _row(r: sqlite3.Row) -> EventRow:
    return EventRow(
        orjson.loads(r["json"]), r["event_id"], r["room_id"], r["stream_pos"], r["depth"],
        r["sg_before"], r["sg_after"], r["replaces_state"], r["redacted_because"],
        r["txn_user"], r["txn_device"], r["txn_id"],
    )  # fmt: skip


@dataclass
class RoomReadCaches:
    """The rooms store's bounded read caches, one store's worth (each is described by the
    method that keeps it). Read on the event loop's thread; ``events_rewritten`` is set inside
    a write batch and turned into a new ``event_rewrites`` count right after its commit."""

    events_rewritten: bool = False
    event_rewrites: int = 0
    event_rows: OrderedDict = field(default_factory=OrderedDict)
    event_rows_gen: int = 0
    slices: OrderedDict = field(default_factory=OrderedDict)
    group_at: OrderedDict = field(default_factory=OrderedDict)
    groups: OrderedDict = field(default_factory=OrderedDict)
    members: OrderedDict = field(default_factory=OrderedDict)
    members_size: int = 0
    sharing: OrderedDict = field(default_factory=OrderedDict)
    sharing_size: int = 0
    memberships_at: OrderedDict = field(default_factory=OrderedDict)
    memberships_at_size: int = 0


class RoomsStore(StoreBase):
    room_caches: RoomReadCaches

    # -- rooms --------------------------------------------------------------------------------
    def get_room_version(self, room_id: str) -> str | None:
        row = self.db.read_one("SELECT room_version FROM rooms WHERE room_id = ?", (room_id,))
        return row[0] if row else None

    def room_exists(self, room_id: str) -> bool:
        return self.get_room_version(room_id) is not None

    def get_room_row(self, room_id: str) -> sqlite3.Row | None:
        return self.db.read_one("SELECT * FROM rooms WHERE room_id = ?", (room_id,))

    def load_room_head(self, room_id: str) -> RoomHeadRow | None:
        """The current state, state group, forward extremities and their depths of a room.
        The depths are the extremities' own: a rejected, soft-failed or outlier event, whatever
        its depth, is never an extremity and so never raises the depth of the next event."""
        room = self.get_room_row(room_id)
        if room is None:
            return None
        state = {
            (r[0], r[1]): r[2]
            for r in self.db.read(
                "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?", (room_id,)
            )
        }
        group = self.room_group_at(room_id)
        chain = (
            self.db.read_one("SELECT chain_len FROM state_groups WHERE id = ?", (group,))
            if group is not None
            else None
        )
        rows = self.db.read(
            "SELECT f.event_id, e.depth FROM forward_extremities f JOIN events e USING (event_id)"
            " WHERE f.room_id = ? ORDER BY e.stream_pos",
            (room_id,),
        )
        return RoomHeadRow(
            room["room_version"], state, group, (chain[0] or 0) if chain else 0,
            [r[0] for r in rows], {r[0]: r[1] for r in rows},
        )  # fmt: skip

    def set_room_public_sync(self, conn: sqlite3.Connection, room_id: str, public: bool) -> None:
        conn.execute("UPDATE rooms SET is_public = ? WHERE room_id = ?", (int(public), room_id))

    async def set_room_public(self, room_id: str, public: bool) -> None:
        await self.db.write(lambda conn: self.set_room_public_sync(conn, room_id, public))

    def is_room_public(self, room_id: str) -> bool:
        row = self.db.read_one("SELECT is_public FROM rooms WHERE room_id = ?", (room_id,))
        return bool(row and row[0])

    def get_public_room_ids(self) -> list[str]:
        return [
            r[0]
            for r in self.db.read("SELECT room_id FROM rooms WHERE is_public = 1 ORDER BY room_id")
        ]

    # -- events -------------------------------------------------------------------------------
    def get_event(self, event_id: str) -> dict | None:
        """The PDU of a stored event (its redacted form once redacted), or None."""
        row = self.db.read_one(
            "SELECT json FROM events WHERE event_id = ? AND rejected = 0", (event_id,)
        )
        return orjson.loads(row[0]) if row else None

    def get_event_row(self, event_id: str, *, served: bool = False) -> EventRow | None:
        """A stored event (never a rejected one). ``served``: an event a client asked for by
        ID, so not a soft-failed one either (S-S API "Soft failure": not relayed to clients; a
        soft-failed event that made it into the room's state is still read as state)."""
        extra = " AND soft_failed != 1" if served else ""
        row = self.db.read_one(
            f"SELECT {_COLS} FROM events WHERE event_id = ? AND rejected = 0{extra}",  # noqa: S608
            (event_id,),
        )
        return _row(row) if row else None

    def get_event_rows(self, event_ids: list[str]) -> dict[str, EventRow]:
        out: dict[str, EventRow] = {}
        ids = list(dict.fromkeys(event_ids))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.db.read(
                f"SELECT {_COLS} FROM events WHERE event_id IN ({marks}) AND rejected = 0",  # noqa: S608
                chunk,
            ):
                out[r["event_id"]] = _row(r)
        return out

    #: Parsed event rows kept by :meth:`get_event_rows_cached`.
    EVENT_ROWS_CACHED = 10_000

    def events_rewritten_in(self, conn: sqlite3.Connection) -> None:
        """Inside a write function that changes or deletes a stored event row (a redaction
        rewrites its target; an outlier is stored again): once the batch commits, the parsed
        rows kept by :meth:`get_event_rows_cached` are dropped. Every such write must call it.
        """
        self.room_caches.events_rewritten = True

    def get_event_rows_cached(self, event_ids) -> dict[str, EventRow]:
        """:meth:`get_event_rows`, from a bounded cache of parsed rows: the rows are shared,
        so a caller must never change them (nor their ``event``). The cache is emptied after
        every committed batch that rewrote an event row (:meth:`events_rewritten_in`; the
        count moves on the writer thread right after the commit, before the new position is
        published); rows are read on the event loop's thread only."""
        caches = self.room_caches
        if caches.event_rows_gen != caches.event_rewrites:
            caches.event_rows = OrderedDict()
            caches.event_rows_gen = caches.event_rewrites
        cache = caches.event_rows
        out: dict[str, EventRow] = {}
        missing: list[str] = []
        for eid in event_ids:
            row = cache.get(eid)
            if row is None:
                missing.append(eid)
            else:
                out[eid] = row
        if missing:
            fetched = self.get_event_rows(missing)
            out.update(fetched)
            cache.update(fetched)
            while len(cache) > self.EVENT_ROWS_CACHED:
                cache.popitem(last=False)
        return out

    def get_room_events(
        self, room_id: str, *, after: int | None = None, upto: int | None = None,
        limit: int = 10, backwards: bool = True,
    ) -> list[EventRow]:  # fmt: skip
        """Events of a room with ``after < stream_pos <= upto``, newest first when ``backwards``
        (else oldest first), at most ``limit``; rejected and soft-failed events never."""
        sql = f"SELECT {_COLS} FROM events WHERE room_id = ? AND rejected = 0 AND soft_failed = 0"  # noqa: S608
        args: list = [room_id]
        if after is not None:
            sql += " AND stream_pos > ?"
            args.append(after)
        if upto is not None:
            sql += " AND stream_pos <= ?"
            args.append(upto)
        sql += " ORDER BY stream_pos " + ("DESC" if backwards else "ASC") + " LIMIT ?"
        args.append(limit)
        return [_row(r) for r in self.db.read(sql, args)]

    def get_room_events_by_ts(
        self, room_id: str, ts: int, *, forwards: bool, after: tuple[int, int] | None = None,
        limit: int = 50,
    ) -> list[EventRow]:  # fmt: skip
        """Events of a room ordered by (``origin_server_ts``, ``stream_pos``): ascending from
        ``ts`` (at or after it) when ``forwards``, else descending from ``ts`` (at or before
        it); strictly beyond the key ``after`` when given; at most ``limit``; rejected and
        soft-failed events never. Uses the ``events_room_ts`` index."""
        sql = f"SELECT {_COLS} FROM events WHERE room_id = ? AND rejected = 0 AND soft_failed = 0"  # noqa: S608
        op = ">" if forwards else "<"
        sql += f" AND origin_server_ts {op}= ?"
        args: list = [room_id, ts]
        if after is not None:
            sql += f" AND (origin_server_ts, stream_pos) {op} (?, ?)"
            args += [after[0], after[1]]
        order = "ASC" if forwards else "DESC"
        sql += f" ORDER BY origin_server_ts {order}, stream_pos {order} LIMIT ?"
        args.append(limit)
        return [_row(r) for r in self.db.read(sql, args)]

    def rooms_with_events_between(self, room_ids, after: int, upto: int) -> set[str]:
        """Those of ``room_ids`` with an event row (of any kind: rejected, soft-failed and
        outliers too — a superset of what changes a room) at a stream position in
        ``(after, upto]``. Every change of a room's timeline or state has one: an inbound
        write that sets the current state (``room_state_history``) is at the position of the
        event it persists."""
        return rooms_with_rows(self.db, "events", room_ids, after, upto)

    #: Timeline slices and state groups at a position kept for incremental syncs.
    SLICES_CACHED = 4096

    def get_room_events_cached(
        self, room_id: str, *, after: int, upto: int, limit: int
    ) -> tuple[EventRow, ...]:
        """:meth:`get_room_events` (newest first) of ``(after, upto]`` with ``upto`` a committed
        position, from a bounded cache: every syncing member of a room asks for the same slice
        after a send. Rows at committed positions do not change, but for a rewrite
        (:meth:`events_rewritten_in`), whose count is part of the entry. Shared rows: never
        change them."""
        gen = self.room_caches.event_rewrites
        cache = self.room_caches.slices
        key = (room_id, after, upto, limit)
        hit = cache.get(key)
        if hit is not None and hit[0] == gen:
            return hit[1]
        rows = tuple(self.get_room_events(room_id, after=after, upto=upto, limit=limit))
        cache[key] = (gen, rows)
        while len(cache) > self.SLICES_CACHED:
            cache.popitem(last=False)
        return rows

    def room_group_at_cached(self, room_id: str, pos: int) -> int | None:
        """:meth:`room_group_at` of a committed position, from a bounded cache (what decides
        it — the room's events and recorded states at or before ``pos`` — never changes)."""
        cache = self.room_caches.group_at
        key = (room_id, pos)
        if key in cache:
            return cache[key]
        group = self.room_group_at(room_id, pos)
        cache[key] = group
        while len(cache) > 4 * self.SLICES_CACHED:
            cache.popitem(last=False)
        return group

    def last_room_pos(self, room_id: str, upto: int | None = None) -> int | None:
        if upto is None:
            row = self.db.read_one(
                "SELECT MAX(stream_pos) FROM events WHERE room_id = ?", (room_id,)
            )
        else:
            row = self.db.read_one(
                "SELECT MAX(stream_pos) FROM events WHERE room_id = ? AND stream_pos <= ?",
                (room_id, upto),
            )
        return row[0] if row and row[0] is not None else None

    def room_group_at(self, room_id: str, pos: int | None = None) -> int | None:
        """The state group holding the room's current state as it was at stream position
        ``pos`` (None: now); None when the room has no event at or before ``pos``.

        That is the state after the room's last event at or before ``pos`` that is neither
        rejected, soft-failed nor an outlier (local events are built on the current state), or,
        when an inbound federation write set the current state at or after that event, the
        group it recorded (``room_state_history``, storage/sqlite/federation_inbound.py): after
        a fork the current state is the resolution of the forward extremities, not the state
        after the newest event."""
        cond, args = ("", (room_id,)) if pos is None else (" AND stream_pos <= ?", (room_id, pos))
        ev = self.db.read_one(
            f"SELECT sg_after, stream_pos FROM events WHERE room_id = ?{cond}"  # noqa: S608
            " AND rejected = 0 AND soft_failed = 0 ORDER BY stream_pos DESC LIMIT 1",
            args,
        )
        fed = self.db.read_one(
            f"SELECT group_id, stream_pos FROM room_state_history WHERE room_id = ?{cond}"  # noqa: S608
            " ORDER BY stream_pos DESC LIMIT 1",
            args,
        )
        if fed is not None and (ev is None or fed[1] >= ev[1]):
            return fed[0]
        return ev[0] if ev else None

    def get_txn_event(self, user_id: str, device_id: str, scope: str, txn_id: str) -> str | None:
        """The event a (user, device, scope, txnId) already created (C-S "Transaction
        identifiers"); the scope names the endpoint and room."""
        row = self.db.read_one(
            "SELECT event_id FROM event_txns WHERE user_id = ? AND device_id = ? AND scope = ?"
            " AND txn_id = ?",
            (user_id, device_id, scope, txn_id),
        )
        return row[0] if row else None

    # -- state --------------------------------------------------------------------------------
    def get_state_group(self, group: int | None) -> StateMap:
        """The full state of a state group (cached: groups never change)."""
        if group is None:
            return {}
        cache = self.room_caches.groups
        hit = cache.get(group)
        if hit is not None:
            cache.move_to_end(group)
            return hit
        chain: list[int] = []
        base: StateMap | None = None
        g: int | None = group
        while g is not None:
            cached = cache.get(g)
            if cached is not None:
                base = cached
                break
            chain.append(g)
            row = self.db.read_one("SELECT prev_group FROM state_groups WHERE id = ?", (g,))
            g = row[0] if row else None
        state: StateMap = dict(base) if base else {}
        for gid in reversed(chain):
            for r in self.db.read(
                "SELECT type, state_key, event_id FROM state_group_entries WHERE group_id = ?",
                (gid,),
            ):
                state[(r[0], r[1])] = r[2]
        cache[group] = state
        while len(cache) > 2048:
            cache.popitem(last=False)
        return state

    def get_current_state_ids(self, room_id: str) -> StateMap:
        return {
            (r[0], r[1]): r[2]
            for r in self.db.read(
                "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?", (room_id,)
            )
        }

    def get_current_state_event(self, room_id: str, type: str, state_key: str) -> dict | None:  # noqa: A002
        row = self.db.read_one(
            "SELECT e.json FROM current_state c JOIN events e USING (event_id)"
            " WHERE c.room_id = ? AND c.type = ? AND c.state_key = ?",
            (room_id, type, state_key),
        )
        return orjson.loads(row[0]) if row else None

    # -- memberships --------------------------------------------------------------------------
    #: Rooms whose member lists are kept in memory, and the members they may hold in all.
    MEMBERS_CACHE_ROOMS = 4096
    MEMBERS_CACHE_ENTRIES = 200_000

    def _membership_generation(self) -> int:
        """A number that grows with every membership change: the highest rowid of the
        append-only ``membership_events`` (every write of ``current_membership`` adds a row
        there in the same transaction; neither table has rows deleted)."""
        row = self.db.read_one("SELECT MAX(rowid) FROM membership_events")
        return row[0] if row and row[0] is not None else 0

    def room_members_cached(self, room_id: str, gen: int | None = None) -> RoomMembers:
        """The current members of a room (as ``current_membership`` has them), from a bounded
        in-memory cache. An entry is valid at the membership generation it was read at (read
        *before* the rows, so an entry is never older than its generation); when the generation
        has moved, a look at the rows added since tells whether this room changed. ``gen``: the
        generation, when the caller read it already (one read for many rooms)."""
        if gen is None:
            gen = self._membership_generation()
        cache = self.room_caches.members
        hit: RoomMembers | None = cache.get(room_id)
        if hit is not None:
            if hit.gen != gen:
                changed = self.db.read_one(
                    "SELECT 1 FROM membership_events NOT INDEXED WHERE rowid > ? AND room_id = ?"
                    " LIMIT 1",
                    (hit.gen, room_id),
                )
                if changed is None and hit.gen < gen:
                    hit.gen = gen
                else:
                    hit = None
            if hit is not None:
                cache.move_to_end(room_id)
                return hit
        members = {
            r[0]: r[1]
            for r in self.db.read(
                "SELECT user_id, membership FROM current_membership WHERE room_id = ?", (room_id,)
            )
        }
        entry = RoomMembers(gen, members)
        old = cache.pop(room_id, None)
        size = self.room_caches.members_size - (len(old.members) if old else 0)
        while cache and (
            len(cache) >= self.MEMBERS_CACHE_ROOMS
            or size + len(members) > self.MEMBERS_CACHE_ENTRIES
        ):
            _, evicted = cache.popitem(last=False)
            size -= len(evicted.members)
        cache[room_id] = entry
        size += len(members)
        self.room_caches.members_size = size
        return entry

    def get_joined_users(self, room_id: str) -> set[str]:
        return set(self.room_members_cached(room_id).joined)

    def get_room_members(self, room_id: str) -> dict[str, str]:
        """user_id → current membership, for every user with a membership in the room."""
        return dict(self.room_members_cached(room_id).members)

    def get_rooms_for_user(self, user_id: str, membership: str = "join") -> set[str]:
        return {
            r[0]
            for r in self.db.read(
                "SELECT room_id FROM current_membership WHERE user_id = ? AND membership = ?",
                (user_id, membership),
            )
        }

    def get_users_sharing_room_with(self, user_id: str) -> set[str]:
        """Every user joined to a room the user is joined to (the user too, when joined to
        any room); a new set. The union over several rooms is cached per user at the
        membership generation (bounded like the member lists)."""
        gen = self._membership_generation()
        cache = self.room_caches.sharing
        hit = cache.get(user_id)
        if hit is not None and hit[0] == gen:
            cache.move_to_end(user_id)
            return set(hit[1])
        rooms = self.get_rooms_for_user(user_id)
        if len(rooms) == 1:
            return set(self.room_members_cached(next(iter(rooms)), gen).joined)
        out: set[str] = set()
        for room_id in rooms:
            out |= self.room_members_cached(room_id, gen).joined
        frozen = frozenset(out)
        old = cache.pop(user_id, None)
        size = self.room_caches.sharing_size - (len(old[1]) if old else 0)
        while cache and (
            len(cache) >= self.MEMBERS_CACHE_ROOMS
            or size + len(frozen) > self.MEMBERS_CACHE_ENTRIES
        ):
            _, evicted = cache.popitem(last=False)
            size -= len(evicted[1])
        cache[user_id] = (gen, frozen)
        self.room_caches.sharing_size = size + len(frozen)
        return out

    def get_local_memberships(self, user_id: str) -> dict[str, str]:
        return {
            r[0]: r[1]
            for r in self.db.read(
                "SELECT room_id, membership FROM current_membership WHERE user_id = ?", (user_id,)
            )
        }

    def get_membership(self, room_id: str, user_id: str) -> sqlite3.Row | None:
        return self.db.read_one(
            "SELECT * FROM current_membership WHERE room_id = ? AND user_id = ?",
            (room_id, user_id),
        )

    #: Positions kept per user by :meth:`get_memberships_at` (a few devices syncing).
    MEMBERSHIPS_AT_KEPT = 3

    def get_memberships_at(self, user_id: str, pos: int) -> dict[str, tuple[str, str, int]]:
        """room_id → (membership, event_id, stream_pos) of the user's last membership event at
        or before stream position ``pos`` (a committed position); a new dict.

        The answers for the user's last few positions are kept (bounded): a sync asks for the
        position the previous one ended at, and then for a later one, which is a kept answer
        and the user's membership rows in between. A kept answer is used only when no row has
        been added at or before its position since (membership rows are appended, normally at
        new positions; see :meth:`_membership_generation`)."""
        gen = self._membership_generation()
        cache = self.room_caches.memberships_at
        kept: list = cache.get(user_id) or []
        base: dict[str, tuple[str, str, int]] | None = None
        usable = [k for k in kept if k[1] <= pos]
        if usable:
            hit_gen, hit_pos, hit_map = max(usable, key=lambda k: k[1])
            if hit_gen == gen or (
                hit_gen < gen
                and self.db.read_one(
                    "SELECT 1 FROM membership_events NOT INDEXED WHERE rowid > ?"
                    " AND user_id = ? AND stream_pos <= ? LIMIT 1",
                    (hit_gen, user_id, hit_pos),
                )
                is None
            ):
                base = dict(hit_map)
                if hit_pos < pos:
                    for r in self.db.read(
                        "SELECT room_id, membership, event_id, stream_pos FROM membership_events"
                        " WHERE user_id = ? AND stream_pos > ? AND stream_pos <= ?"
                        " ORDER BY stream_pos",
                        (user_id, hit_pos, pos),
                    ):
                        base[r[0]] = (r[1], r[2], r[3])
        if base is None:
            rows = self.db.read(
                "SELECT room_id, membership, event_id, MAX(stream_pos) AS p FROM membership_events"
                " WHERE user_id = ? AND stream_pos <= ? GROUP BY room_id",
                (user_id, pos),
            )
            base = {r[0]: (r[1], r[2], r[3]) for r in rows}
        if not any(k[1] == pos and k[0] == gen for k in kept):
            new_kept = [k for k in kept if k[1] != pos][-(self.MEMBERSHIPS_AT_KEPT - 1) :]
            new_kept.append((gen, pos, dict(base)))
            old = cache.pop(user_id, None)
            size = self.room_caches.memberships_at_size
            size -= sum(len(k[2]) for k in old) if old else 0
            added = sum(len(k[2]) for k in new_kept)
            while cache and (
                len(cache) >= self.MEMBERS_CACHE_ROOMS or size + added > self.MEMBERS_CACHE_ENTRIES
            ):
                _, evicted = cache.popitem(last=False)
                size -= sum(len(k[2]) for k in evicted)
            cache[user_id] = new_kept
            self.room_caches.memberships_at_size = size + added
        else:
            cache.move_to_end(user_id)
        return base

    def get_user_membership_history(self, user_id: str, room_id: str) -> list[tuple[str, int]]:
        """The user's memberships in a room as (membership, stream_pos), oldest first."""
        return [
            (r[0], r[1])
            for r in self.db.read(
                # ``+room_id``: through the user's index (a few rows), never the room's (every
                # member of a big room).
                "SELECT membership, stream_pos FROM membership_events WHERE user_id = ?"
                " AND +room_id = ? ORDER BY stream_pos",
                (user_id, room_id),
            )
        ]

    def get_membership_changes_in_rooms(
        self, room_ids, since_pos: int, upto_pos: int
    ) -> list[tuple[str, str, str, int]]:
        """(room_id, user_id, membership, stream_pos) of every membership change in
        ``room_ids`` in ``(since_pos, upto_pos]``."""
        ids = list(room_ids)
        out: list[tuple[str, str, str, int]] = []
        if not ids or upto_pos <= since_pos:
            return out
        if short_range(since_pos, upto_pos, len(ids)):
            wanted = set(ids)
            return [
                (r[0], r[1], r[2], r[3])
                for r in self.db.read(
                    "SELECT room_id, user_id, membership, stream_pos FROM membership_events"
                    " WHERE stream_pos > ? AND stream_pos <= ? ORDER BY stream_pos",
                    (since_pos, upto_pos),
                )
                if r[0] in wanted
            ]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out.extend(
                (r[0], r[1], r[2], r[3])
                for r in self.db.read(
                    "SELECT room_id, user_id, membership, stream_pos FROM membership_events"
                    f" WHERE room_id IN ({marks}) AND stream_pos > ? AND stream_pos <= ?"  # noqa: S608
                    " ORDER BY stream_pos",
                    [*chunk, since_pos, upto_pos],
                )
            )
        return out

    def is_forgotten(self, room_id: str, user_id: str) -> bool:
        row = self.get_membership(room_id, user_id)
        return bool(row and row["forgotten"])

    async def forget_room(self, room_id: str, user_id: str) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE current_membership SET forgotten = 1 WHERE room_id = ? AND user_id = ?",
                (room_id, user_id),
            )

        await self.db.write(fn)

    # -- aliases ------------------------------------------------------------------------------
    def get_alias(self, alias: str) -> sqlite3.Row | None:
        return self.db.read_one("SELECT * FROM room_aliases WHERE alias = ?", (alias,))

    def get_aliases_for_room(self, room_id: str) -> list[str]:
        return [
            r[0]
            for r in self.db.read(
                "SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias", (room_id,)
            )
        ]

    def add_alias_sync(
        self, conn: sqlite3.Connection, alias: str, room_id: str, creator: str, now_ms: int
    ) -> bool:
        """Insert an alias; False if it is taken."""
        cur = conn.execute(
            "INSERT OR IGNORE INTO room_aliases (alias, room_id, creator, created_ts)"
            " VALUES (?,?,?,?)",
            (alias, room_id, creator, now_ms),
        )
        return cur.rowcount == 1

    async def add_alias(self, alias: str, room_id: str, creator: str, now_ms: int) -> bool:
        return await self.db.write(
            lambda conn: self.add_alias_sync(conn, alias, room_id, creator, now_ms)
        )

    @staticmethod
    def delete_alias_in(conn: sqlite3.Connection, alias: str) -> bool:
        return conn.execute("DELETE FROM room_aliases WHERE alias = ?", (alias,)).rowcount > 0

    async def delete_alias(self, alias: str) -> bool:
        return await self.db.write(lambda conn: self.delete_alias_in(conn, alias))

    # -- writes -------------------------------------------------------------------------------
    def create_room_sync(
        self, conn: sqlite3.Connection, room_id: str, room_version: str, creator: str,
        now_ms: int, public: bool,
    ) -> None:  # fmt: skip
        conn.execute(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts, is_public)"
            " VALUES (?,?,?,?,?)",
            (room_id, room_version, creator, now_ms, int(public)),
        )

    def apply_redaction_in(
        self, conn: sqlite3.Connection, redaction_id: str, target_id: str, redacted: dict
    ) -> None:
        """Store ``target_id`` in its redacted form ``redacted``, redacted because of
        ``redaction_id`` (once: an event already redacted keeps its first redaction); its
        relation row and search-index text go with the content."""
        conn.execute(
            "UPDATE events SET json = ?, redacted_because = ? WHERE event_id = ?"
            " AND redacted_because IS NULL",
            (orjson.dumps(redacted), redaction_id, target_id),
        )
        unindex_relations_in(conn, [target_id])  # (redaction drops m.relates_to)
        unindex_search_in(conn, [target_id])  # (and the text)
        self.events_rewritten_in(conn)

    def persist_events_sync(
        self, conn: sqlite3.Connection, events: list[NewEvent], group: int | None, chain_len: int
    ) -> tuple[int | None, int]:
        """Persist events of one room in order (inside a write function): each gets a stream
        position, its state groups, DAG edges, forward extremities, current state, membership
        rows and transaction mapping, its ledger leaf (decision accepted), its relation row
        when it carries one and its search index row when it carries searchable text; a
        redaction rewrites its target (dropping its relation and search rows).
        Returns the room's state group and chain length after the last event."""
        for ne in events:
            ev = ne.event
            pos = self.next_stream_pos(conn)
            ne.stream_pos = pos
            ne.sg_before = group
            state_key = ev.get("state_key")
            is_state = isinstance(state_key, str)
            if is_state:
                if group is None or chain_len + 1 >= SNAPSHOT_EVERY:
                    cur = conn.execute(
                        "INSERT INTO state_groups (room_id, prev_group, chain_len) VALUES (?,?,0)",
                        (ne.room_id, None),
                    )
                    new_group = cur.lastrowid
                    assert ne.state_after is not None
                    conn.executemany(
                        "INSERT INTO state_group_entries (group_id, type, state_key, event_id)"
                        " VALUES (?,?,?,?)",
                        [(new_group, t, k, e) for (t, k), e in ne.state_after.items()],
                    )
                    chain_len = 0
                else:
                    chain_len += 1
                    cur = conn.execute(
                        "INSERT INTO state_groups (room_id, prev_group, chain_len) VALUES (?,?,?)",
                        (ne.room_id, group, chain_len),
                    )
                    new_group = cur.lastrowid
                    conn.execute(
                        "INSERT INTO state_group_entries (group_id, type, state_key, event_id)"
                        " VALUES (?,?,?,?)",
                        (new_group, ev["type"], state_key, ne.event_id),
                    )
                group = new_group
                conn.execute(
                    "INSERT OR REPLACE INTO current_state (room_id, type, state_key, event_id)"
                    " VALUES (?,?,?,?)",
                    (ne.room_id, ev["type"], state_key, ne.event_id),
                )
            ne.sg_after = group
            txn_user, txn_device, _, txn_id = ne.txn if ne.txn else (None, None, None, None)
            leaf = append_event_leaf(self, conn, ne.event_id, ne.room_id, ev, pos)
            conn.execute(
                "INSERT INTO events (event_id, room_id, stream_pos, depth, type, state_key, sender,"
                " origin_server_ts, json, sg_before, sg_after, replaces_state, txn_user,"
                " txn_device, txn_id, ledger_idx) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    ne.event_id, ne.room_id, pos, ne.depth, ev["type"], state_key, ev["sender"],
                    ev["origin_server_ts"], orjson.dumps(ev), ne.sg_before, ne.sg_after,
                    ne.replaces_state, txn_user, txn_device, txn_id, leaf,
                ),
            )  # fmt: skip
            index_relation_in(conn, ne.event_id, ne.room_id, ev, pos)
            index_search_in(conn, ne.room_id, ev, pos)
            prevs = [p[0] if isinstance(p, list) else p for p in ev.get("prev_events", [])]
            auths = [a[0] if isinstance(a, list) else a for a in ev.get("auth_events", [])]
            conn.executemany(
                "INSERT OR IGNORE INTO event_edges (event_id, prev_event_id) VALUES (?,?)",
                [(ne.event_id, p) for p in prevs],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO event_auth (event_id, auth_event_id) VALUES (?,?)",
                [(ne.event_id, a) for a in auths],
            )
            conn.executemany(
                "DELETE FROM forward_extremities WHERE room_id = ? AND event_id = ?",
                [(ne.room_id, p) for p in prevs],
            )
            conn.execute(
                "INSERT OR IGNORE INTO forward_extremities (room_id, event_id) VALUES (?,?)",
                (ne.room_id, ne.event_id),
            )
            if ev["type"] == "m.room.member" and is_state:
                membership = ev["content"].get("membership")
                conn.execute(
                    "INSERT INTO membership_events (room_id, user_id, membership, event_id,"
                    " stream_pos, sender) VALUES (?,?,?,?,?,?)",
                    (ne.room_id, state_key, membership, ne.event_id, pos, ev["sender"]),
                )
                conn.execute(
                    "INSERT OR REPLACE INTO current_membership (room_id, user_id, membership,"
                    " event_id, stream_pos, forgotten) VALUES (?,?,?,?,?,0)",
                    (ne.room_id, state_key, membership, ne.event_id, pos),
                )
            if ne.txn:
                conn.execute(
                    "INSERT INTO event_txns (user_id, device_id, scope, txn_id, event_id)"
                    " VALUES (?,?,?,?,?)",
                    (*ne.txn, ne.event_id),
                )
            if ne.redaction_target is not None:
                self.apply_redaction_in(conn, ne.event_id, *ne.redaction_target)
            self.wake(ne.room_id, *ne.wake)
        return group, chain_len
