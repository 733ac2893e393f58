"""Inbound federation: received transactions, and events that arrive from other servers (S-S API
"Transactions", "Checks performed on receipt of a PDU", "Room State Resolution").

Remote events live in the rooms tables (``events``, ``event_edges``, ``event_auth``, state
groups, ``current_state``, memberships). Their flags in ``events``:

* ``rejected = 1``: failed PDU check 4 or 5. Kept in the DAG, never served (every read filters it
  out), never an auth event, prev event or forward extremity.
* ``soft_failed = 1``: failed check 6. Never served to clients, never a forward extremity.
* ``soft_failed = 2``: an *outlier* — an event we hold without knowing the state before it
  (fetched auth events, state received on join). Not in any timeline (the timeline reads ask for
  ``soft_failed = 0``), usable as an auth event and in state.

Every row inserted into ``events`` gets its ledger leaf in the same transaction, with the
decision its flags say (:func:`bastion.storage.sqlite.ledger.append_event_leaf`); an outlier
stored again de-outliered gets a second leaf with its new decision.

A received transaction's response is kept per (origin, txnId) so a retry gets the same answer.
``room_state_history`` records, at the stream position of each inbound write that sets a room's
current state, the state group equal to it (current state may be a resolution of several forward
extremities, not the state after the event written); the rooms store takes the room's state as
of a stream position from it when it is newer than the room's last local event there
(``RoomsStore.room_group_at``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable

import orjson

from bastion.storage.interface import EventMeta, RemoteEvent
from bastion.storage.sqlite.base import StoreBase
from bastion.storage.sqlite.ledger import append_event_leaf
from bastion.storage.sqlite.relations import index_relation_in
from bastion.storage.sqlite.rooms import SNAPSHOT_EVERY, StateMap
from bastion.storage.sqlite.search import index_search_in

STREAMS: list[tuple[str, str]] = []

OUTLIER = 2

#: Guards the backfill position floor (taken on the event loop and on the writer thread).
_BACKFILL_LOCK = threading.Lock()


class FederationInboundStore(StoreBase):
    #: The lowest stream position handed out to backfilled events so far (None: not read yet).
    _backfill_floor: int | None = None

    # -- transactions ---------------------------------------------------------------------------
    def get_federation_txn(self, origin: str, txn_id: str) -> dict | None:
        row = self.db.read_one(
            "SELECT response_json FROM federation_inbound_txns WHERE origin = ? AND txn_id = ?",
            (origin, txn_id),
        )
        return orjson.loads(row[0]) if row else None

    def store_federation_txn_in(
        self, conn: sqlite3.Connection, origin: str, txn_id: str, response: dict, now_ms: int
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO federation_inbound_txns (origin, txn_id, response_json,"
            " received_ts) VALUES (?,?,?,?)",
            (origin, txn_id, orjson.dumps(response), now_ms),
        )

    # -- events, whatever their flags -------------------------------------------------------
    def get_event_meta(self, event_ids: Iterable[str]) -> dict[str, EventMeta]:
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, EventMeta] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.db.read(
                "SELECT event_id, room_id, depth, rejected, soft_failed, sg_before, sg_after,"
                f" stream_pos FROM events WHERE event_id IN ({marks})",  # noqa: S608
                chunk,
            ):
                out[r[0]] = EventMeta(
                    r[1], r[2], bool(r[3]), r[4] == 1, r[4] == OUTLIER, r[5], r[6], r[7]
                )
        return out

    def get_pdus(self, event_ids: Iterable[str], *, with_rejected: bool = False) -> dict[str, dict]:
        """id → stored PDU (redacted if redacted); rejected events only when asked."""
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, dict] = {}
        extra = "" if with_rejected else " AND rejected = 0"
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.db.read(
                f"SELECT event_id, json FROM events WHERE event_id IN ({marks}){extra}",  # noqa: S608
                chunk,
            ):
                out[r[0]] = orjson.loads(r[1])
        return out

    def _linked_ids(
        self, table: str, column: str, event_ids: Iterable[str]
    ) -> dict[str, list[str]]:
        """id → the ids in `column` of `table`'s rows for that event (every asked id is a key)."""
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, list[str]] = {e: [] for e in ids}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.db.read(
                f"SELECT event_id, {column} FROM {table} WHERE event_id IN ({marks})",  # noqa: S608
                chunk,
            ):
                out[r[0]].append(r[1])
        return out

    def get_auth_ids(self, event_ids: Iterable[str]) -> dict[str, list[str]]:
        return self._linked_ids("event_auth", "auth_event_id", event_ids)

    def get_auth_chain_ids(self, event_ids: Iterable[str], limit: int = 200_000) -> set[str]:
        """The auth chain of the events (their auth events, recursively; not the events)."""
        seen: set[str] = set()
        frontier = list(dict.fromkeys(event_ids))
        while frontier and len(seen) < limit:
            nxt: list[str] = []
            for auths in self.get_auth_ids(frontier).values():
                for a in auths:
                    if a not in seen:
                        seen.add(a)
                        nxt.append(a)
            frontier = nxt
        return seen

    def get_prev_ids(self, event_ids: Iterable[str]) -> dict[str, list[str]]:
        return self._linked_ids("event_edges", "prev_event_id", event_ids)

    def get_forward_extremities(self, room_id: str) -> list[str]:
        return [
            r[0]
            for r in self.db.read(
                "SELECT event_id FROM forward_extremities WHERE room_id = ?", (room_id,)
            )
        ]

    # -- writes ---------------------------------------------------------------------------------
    @staticmethod
    def _snapshot_group(conn: sqlite3.Connection, room_id: str, state: StateMap) -> int:
        cur = conn.execute(
            "INSERT INTO state_groups (room_id, prev_group, chain_len) VALUES (?,?,0)",
            (room_id, None),
        )
        gid = cur.lastrowid
        if gid is None:  # never after an INSERT
            raise RuntimeError("the state group was not stored")
        conn.executemany(
            "INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES (?,?,?,?)",
            [(gid, t, k, e) for (t, k), e in state.items()],
        )
        return gid

    @staticmethod
    def _chain_len(conn: sqlite3.Connection, group: int | None) -> int:
        if group is None:
            return 0
        row = conn.execute("SELECT chain_len FROM state_groups WHERE id = ?", (group,)).fetchone()
        return row[0] if row else 0

    def _insert_event(
        self, conn: sqlite3.Connection, eid: str, room_id: str, ev: dict, pos: int,
        sg_before: int | None, sg_after: int | None, rejected: bool, soft: int,
    ) -> None:  # fmt: skip
        state_key = ev.get("state_key") if isinstance(ev.get("state_key"), str) else None
        depth = ev.get("depth") if type(ev.get("depth")) is int else 0
        leaf = append_event_leaf(
            self,
            conn,
            eid,
            room_id,
            ev,
            pos,
            rejected=rejected,
            soft=soft,
            outlier=OUTLIER,
            received=True,
        )
        conn.execute(
            "INSERT INTO events (event_id, room_id, stream_pos, depth, type, state_key, sender,"
            " origin_server_ts, json, sg_before, sg_after, rejected, soft_failed, ledger_idx)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (eid, room_id, pos, depth, ev["type"], state_key, ev["sender"],
             ev["origin_server_ts"], orjson.dumps(ev), sg_before, sg_after, int(rejected), soft,
             leaf),
        )  # fmt: skip
        if not rejected and soft == 0:
            index_relation_in(conn, eid, room_id, ev, pos)
            index_search_in(conn, room_id, ev, pos)
        prevs = [p[0] if isinstance(p, list) else p for p in ev.get("prev_events", [])]
        auths = [a[0] if isinstance(a, list) else a for a in ev.get("auth_events", [])]
        conn.executemany(
            "INSERT OR IGNORE INTO event_edges (event_id, prev_event_id) VALUES (?,?)",
            [(eid, p) for p in prevs],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO event_auth (event_id, auth_event_id) VALUES (?,?)",
            [(eid, a) for a in auths],
        )

    def persist_outliers_sync(
        self, conn: sqlite3.Connection, events: list[tuple[str, str, dict, bool]]
    ) -> None:
        """Store events as outliers: (event_id, room_id, pdu, rejected). Known events are left
        as they are."""
        known: set[str] = set()
        ids = [e[0] for e in events]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            known.update(
                r[0]
                for r in conn.execute(
                    f"SELECT event_id FROM events WHERE event_id IN ({marks})",  # noqa: S608
                    chunk,
                )
            )
        for eid, room_id, ev, rejected in events:
            if eid in known:
                continue
            known.add(eid)
            pos = self.next_stream_pos(conn)
            self._insert_event(conn, eid, room_id, ev, pos, None, None, rejected, OUTLIER)

    def _take_backfill_positions(self, n: int, lowest: Callable[[], sqlite3.Row | None]) -> int:
        """Backfilled events take stream positions below every event's, so /messages (which
        pages backwards by position) returns them after the history it already had. Takes
        ``n`` positions below the lowest stored or handed out so far; returns the lowest of
        them. ``lowest()`` reads the lowest stored position (on the caller's connection)."""
        with _BACKFILL_LOCK:
            floor = self._backfill_floor
            if floor is None:
                row = lowest()
                floor = min(row[0] if row and row[0] is not None else 0, 0)
            floor -= n
            self._backfill_floor = floor
            return floor

    def reserve_backfill_positions(self, n: int) -> int:
        """``n`` positions for a backfilled batch (on the event loop thread): the batch's events,
        checked oldest first, take them in that order, from the returned lowest one up, so the
        newest lands just below the room's earliest event."""
        return self._take_backfill_positions(
            n,
            lambda: self.db.read_one("SELECT MIN(stream_pos) FROM events"),
        )

    def _backfill_pos(self, conn: sqlite3.Connection) -> int:
        return self._take_backfill_positions(
            1, lambda: conn.execute("SELECT MIN(stream_pos) FROM events").fetchone()
        )

    def pending_redactions_of(self, target_id: str) -> list[str]:
        """The accepted redactions received before ``target_id`` that name it (oldest
        first)."""
        return [
            r[0]
            for r in self.db.read(
                "SELECT p.redaction_id FROM pending_redactions p"
                " JOIN events e ON e.event_id = p.redaction_id"
                " WHERE p.target_id = ? ORDER BY e.stream_pos",
                (target_id,),
            )
        ]

    def persist_remote_event_sync(self, conn: sqlite3.Connection, p: RemoteEvent) -> None:
        """Persist one received (non-outlier) event with its state groups, forward extremities,
        current state and membership changes (inside a write function)."""
        ev = p.event
        existing = conn.execute(
            "SELECT soft_failed FROM events WHERE event_id = ?", (p.event_id,)
        ).fetchone()
        if existing is not None:
            if existing[0] != OUTLIER:
                return
            # An outlier now arrives with its place in the DAG: store it again, de-outliered.
            conn.execute("DELETE FROM events WHERE event_id = ?", (p.event_id,))
            self.events_rewritten_in(conn)  # type: ignore[attr-defined]
        if p.backfilled:
            pos = p.backfill_pos if p.backfill_pos is not None else self._backfill_pos(conn)
        else:
            pos = self.next_stream_pos(conn)
        p.stream_pos = pos
        sg_before = p.sg_before
        if sg_before is None and p.state_before is not None:
            sg_before = self._snapshot_group(conn, p.room_id, p.state_before)
        state_key = ev.get("state_key")
        sg_after = sg_before
        state_after = p.state_before
        if isinstance(state_key, str) and not p.rejected and p.state_before is not None:
            state_after = dict(p.state_before)
            state_after[(ev["type"], state_key)] = p.event_id
            chain = self._chain_len(conn, sg_before)
            if sg_before is None or chain + 1 >= SNAPSHOT_EVERY:
                sg_after = self._snapshot_group(conn, p.room_id, state_after)
            else:
                cur = conn.execute(
                    "INSERT INTO state_groups (room_id, prev_group, chain_len) VALUES (?,?,?)",
                    (p.room_id, sg_before, chain + 1),
                )
                sg_after = cur.lastrowid
                conn.execute(
                    "INSERT INTO state_group_entries (group_id, type, state_key, event_id)"
                    " VALUES (?,?,?,?)",
                    (sg_after, ev["type"], state_key, p.event_id),
                )
        p.sg_after = sg_after
        soft = 1 if p.soft_failed else 0
        self._insert_event(
            conn, p.event_id, p.room_id, ev, pos, sg_before, sg_after, p.rejected, soft
        )
        if p.redaction_target is not None:
            self.apply_redaction_in(conn, p.event_id, *p.redaction_target)  # type: ignore[attr-defined]
        if p.pending_redaction is not None:
            conn.execute(
                "INSERT OR IGNORE INTO pending_redactions (target_id, redaction_id, room_id)"
                " VALUES (?,?,?)",
                (p.pending_redaction, p.event_id, p.room_id),
            )
        if p.redacted_on_arrival is not None:
            redaction_id, redacted = p.redacted_on_arrival
            self.apply_redaction_in(conn, redaction_id, p.event_id, redacted)  # type: ignore[attr-defined]
            conn.execute("DELETE FROM pending_redactions WHERE target_id = ?", (p.event_id,))
        if p.extremities is not None:
            conn.execute("DELETE FROM forward_extremities WHERE room_id = ?", (p.room_id,))
            conn.executemany(
                "INSERT OR IGNORE INTO forward_extremities (room_id, event_id) VALUES (?,?)",
                [(p.room_id, e) for e in p.extremities],
            )
        wake: set[str] = {p.room_id}
        if p.new_current is not None:
            old = p.old_current or {}
            if p.new_current == state_after and sg_after is not None:
                head_group = sg_after
            else:
                head_group = self._snapshot_group(conn, p.room_id, p.new_current)
            wake |= self.apply_current_state_sync(
                conn, p.room_id, old, p.new_current, pos, p.state_events
            )
            p.head_group, p.head_chain = head_group, self._chain_len(conn, head_group)
            conn.execute(
                "INSERT OR REPLACE INTO room_state_history (room_id, stream_pos, group_id)"
                " VALUES (?,?,?)",
                (p.room_id, pos, head_group),
            )
        self.wake(*wake)

    def apply_current_state_sync(
        self, conn: sqlite3.Connection, room_id: str, old: StateMap, new: StateMap, pos: int,
        events: dict,
    ) -> set[str]:  # fmt: skip
        """Replace a room's current state by ``new`` (``old`` is the current state now): the
        changed rows of ``current_state``, and for changed memberships ``current_membership``
        and a ``membership_events`` row at ``pos`` (what /sync reads). ``events`` maps the IDs
        of changed member events to their PDUs. Returns the user IDs whose membership changed."""
        changed: set[str] = set()
        for key in old.keys() - new.keys():
            conn.execute(
                "DELETE FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
                (room_id, *key),
            )
        rows = []
        for key, eid in new.items():
            if old.get(key) == eid:
                continue
            rows.append((room_id, key[0], key[1], eid))
            if key[0] != "m.room.member":
                continue
            ev = events.get(eid)
            if ev is None:
                r = conn.execute("SELECT json FROM events WHERE event_id = ?", (eid,)).fetchone()
                ev = orjson.loads(r[0]) if r else None
            if ev is None:
                continue
            membership = ev.get("content", {}).get("membership")
            if not isinstance(membership, str):
                continue
            user_id = key[1]
            conn.execute(
                "INSERT INTO membership_events (room_id, user_id, membership, event_id,"
                " stream_pos, sender) VALUES (?,?,?,?,?,?)",
                (room_id, user_id, membership, eid, pos, ev.get("sender", "")),
            )
            conn.execute(
                "INSERT OR REPLACE INTO current_membership (room_id, user_id, membership,"
                " event_id, stream_pos, forgotten) VALUES (?,?,?,?,?,0)",
                (room_id, user_id, membership, eid, pos),
            )
            changed.add(user_id)
        conn.executemany(
            "INSERT OR REPLACE INTO current_state (room_id, type, state_key, event_id)"
            " VALUES (?,?,?,?)",
            rows,
        )
        return changed

    def persist_joined_room_sync(
        self, conn: sqlite3.Connection, room_id: str, room_version: str, creator: str,
        now_ms: int, outliers: list[tuple[str, str, dict, bool]], state: StateMap,
        join: RemoteEvent,
    ) -> None:  # fmt: skip
        """A room joined over federation (send_join response): the room row, the state and auth
        chain as outliers, the join event on top of the state, current state and memberships."""
        conn.execute(
            "INSERT OR IGNORE INTO rooms (room_id, room_version, creator, created_ts, is_public)"
            " VALUES (?,?,?,?,0)",
            (room_id, room_version, creator, now_ms),
        )
        self.persist_outliers_sync(conn, outliers)
        old = {
            (r[0], r[1]): r[2]
            for r in conn.execute(
                "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?", (room_id,)
            )
        }
        join.state_before = state
        join.old_current = old
        join.new_current = {**state, ("m.room.member", join.event["state_key"]): join.event_id}
        join.extremities = [join.event_id]
        self.persist_remote_event_sync(conn, join)
