"""Retention and legal holds (issue 10): the purge job's reads and progress, and the holds.

The purge job (:mod:`bastion.services.retention`) reads a room's events in bounded pages, each
inside the write transaction that strips them, so a page is decided on the state it is
stripped in. Two range scans find what is new since the room's last run (its row in
``retention_rooms``: every event with ``origin_server_ts < done_ts`` and
``stream_pos <= done_pos`` was handled):

* events that have aged past the new cutoff: ``origin_server_ts`` in ``[done_ts, cutoff)`` and
  ``stream_pos <= done_pos`` — index ``events_room_ts (room_id, origin_server_ts,
  stream_pos)``;
* events stored since: ``stream_pos`` in ``(done_pos, upto]``, expired already — index
  ``events_room_pos (room_id, stream_pos)``.

So a run reads each event about once in its life, not the room's whole history every time.
Events kept although expired (current state, a held sender) wait in ``retention_deferred``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable

import orjson

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []

HOLD_KINDS = ("user", "room")

#: The columns of a candidate row: what the pure core needs to decide.
_CANDIDATE = (
    "e.event_id, e.sender, e.origin_server_ts, e.stream_pos,"
    " e.redacted_because IS NOT NULL AS stripped,"
    " (e.state_key IS NOT NULL AND EXISTS (SELECT 1 FROM current_state cs"
    "  WHERE cs.room_id = e.room_id AND cs.type = e.type AND cs.state_key = e.state_key"
    "  AND cs.event_id = e.event_id)) AS current_state"
)

_MXC_ID = re.compile(r"[A-Za-z0-9_-]+")


class RetentionStore(StoreBase):
    # -- legal holds --------------------------------------------------------------------------
    def list_legal_holds(self) -> list[dict]:
        """Every hold, oldest first."""
        rows = self.db.read(
            "SELECT kind, target, reason, set_by, set_ts FROM legal_holds"
            " ORDER BY set_ts, kind, target"
        )
        return [dict(r) for r in rows]

    def legal_holds_for(self, user_id: str | None, room_id: str | None) -> list[dict]:
        """The holds that cover ``user_id`` (a hold on the user) or ``room_id`` (a hold on the
        room): empty when neither is held. For erasure and retention alike."""
        rows = self.db.read(
            "SELECT kind, target, reason, set_by, set_ts FROM legal_holds"
            " WHERE (kind = 'user' AND target = ?) OR (kind = 'room' AND target = ?)"
            " ORDER BY kind, target",
            (user_id, room_id),
        )
        return [dict(r) for r in rows]

    @staticmethod
    def legal_hold_targets_in(conn: sqlite3.Connection) -> tuple[set[str], set[str]]:
        """Inside a write: (held users, held rooms)."""
        users: set[str] = set()
        rooms: set[str] = set()
        for kind, target in conn.execute("SELECT kind, target FROM legal_holds"):
            (users if kind == "user" else rooms).add(target)
        return users, rooms

    @staticmethod
    def set_legal_hold_in(
        conn: sqlite3.Connection, kind: str, target: str, reason: str | None, set_by: str,
        set_ts: int,
    ) -> bool:  # fmt: skip
        """Inside a write: hold ``target``; a hold already there gets the new reason. True when
        the hold is new."""
        if kind not in HOLD_KINDS:
            raise ValueError(f"unknown legal hold kind {kind!r}")
        existed = conn.execute(
            "SELECT 1 FROM legal_holds WHERE kind = ? AND target = ?", (kind, target)
        ).fetchone()
        conn.execute(
            "INSERT INTO legal_holds (kind, target, reason, set_by, set_ts) VALUES (?,?,?,?,?)"
            " ON CONFLICT (kind, target) DO UPDATE SET reason = excluded.reason,"
            " set_by = excluded.set_by, set_ts = excluded.set_ts",
            (kind, target, reason, set_by, set_ts),
        )
        return existed is None

    @staticmethod
    def lift_legal_hold_in(conn: sqlite3.Connection, kind: str, target: str) -> bool:
        """Inside a write: lift a hold; False when there was none."""
        cur = conn.execute("DELETE FROM legal_holds WHERE kind = ? AND target = ?", (kind, target))
        return cur.rowcount == 1

    # -- the purge job: rooms and progress ----------------------------------------------------
    def retention_room_ids(self) -> list[str]:
        """Every room the server stores events of."""
        return [r[0] for r in self.db.read("SELECT room_id FROM rooms ORDER BY room_id")]

    def retention_progress(self, room_id: str) -> tuple[int, int] | None:
        """(done_ts, done_pos) of the room's last completed run, or None."""
        row = self.db.read_one(
            "SELECT done_ts, done_pos FROM retention_rooms WHERE room_id = ?", (room_id,)
        )
        return None if row is None else (int(row[0]), int(row[1]))

    @staticmethod
    def set_retention_progress_in(
        conn: sqlite3.Connection, room_id: str, done_ts: int, done_pos: int
    ) -> None:
        """Inside a write: the room's run is complete up to (``done_ts``, ``done_pos``)."""
        conn.execute(
            "INSERT INTO retention_rooms (room_id, done_ts, done_pos) VALUES (?,?,?)"
            " ON CONFLICT (room_id) DO UPDATE SET done_ts = excluded.done_ts,"
            " done_pos = excluded.done_pos",
            (room_id, done_ts, done_pos),
        )

    @staticmethod
    def retention_aged_in(
        conn: sqlite3.Connection, room_id: str, from_ts: int, before_ts: int, upto_pos: int,
        after: tuple[int, int] | None, limit: int,
    ) -> list[sqlite3.Row]:  # fmt: skip
        """Inside a write: a page of the room's events with ``from_ts <= origin_server_ts <
        before_ts`` and ``stream_pos <= upto_pos``, by (origin_server_ts, stream_pos), after
        the key ``after``."""
        after_ts, after_pos = after if after is not None else (from_ts, -(2**62))
        return conn.execute(
            f"SELECT {_CANDIDATE} FROM events e"  # noqa: S608 - constant columns
            " WHERE e.room_id = ? AND e.origin_server_ts >= ? AND e.origin_server_ts < ?"
            " AND (e.origin_server_ts, e.stream_pos) > (?, ?) AND e.stream_pos <= ?"
            " ORDER BY e.origin_server_ts, e.stream_pos LIMIT ?",
            (room_id, from_ts, before_ts, after_ts, after_pos, upto_pos, limit),
        ).fetchall()

    @staticmethod
    def retention_new_in(
        conn: sqlite3.Connection, room_id: str, after_pos: int, upto_pos: int, before_ts: int,
        limit: int,
    ) -> tuple[list[sqlite3.Row], int]:  # fmt: skip
        """Inside a write: the events of a page of the room's positions in ``(after_pos,
        upto_pos]`` sent before ``before_ts``, and the last position the page read (the next
        page's ``after_pos``; ``upto_pos`` when the range is done)."""
        positions = conn.execute(
            "SELECT stream_pos FROM events WHERE room_id = ? AND stream_pos > ?"
            " AND stream_pos <= ? ORDER BY stream_pos LIMIT ?",
            (room_id, after_pos, upto_pos, limit),
        ).fetchall()
        last = upto_pos if len(positions) < limit else int(positions[-1][0])
        rows = conn.execute(
            f"SELECT {_CANDIDATE} FROM events e"  # noqa: S608 - constant columns
            " WHERE e.room_id = ? AND e.stream_pos > ? AND e.stream_pos <= ?"
            " AND e.origin_server_ts < ? ORDER BY e.stream_pos",
            (room_id, after_pos, last, before_ts),
        ).fetchall()
        return rows, last

    @staticmethod
    def retention_deferred_in(
        conn: sqlite3.Connection, room_id: str, after_event_id: str, limit: int
    ) -> list[sqlite3.Row]:
        """Inside a write: a page of the room's deferred events (by event ID, after
        ``after_event_id``), as candidate rows."""
        return conn.execute(
            f"SELECT {_CANDIDATE} FROM retention_deferred d"  # noqa: S608 - constant columns
            " JOIN events e ON e.event_id = d.event_id"
            " WHERE d.room_id = ? AND d.event_id > ? ORDER BY d.event_id LIMIT ?",
            (room_id, after_event_id, limit),
        ).fetchall()

    @staticmethod
    def defer_retention_in(
        conn: sqlite3.Connection, room_id: str, event_ids: Iterable[str]
    ) -> None:
        """Inside a write: these expired events were kept; check them again next run."""
        conn.executemany(
            "INSERT OR IGNORE INTO retention_deferred (event_id, room_id) VALUES (?, ?)",
            [(eid, room_id) for eid in event_ids],
        )

    @staticmethod
    def undefer_retention_in(conn: sqlite3.Connection, event_ids: Iterable[str]) -> None:
        conn.executemany(
            "DELETE FROM retention_deferred WHERE event_id = ?", [(e,) for e in event_ids]
        )

    # -- media --------------------------------------------------------------------------------
    @staticmethod
    def local_media_created_before_in(
        conn: sqlite3.Connection, before_ts: int, after_media_id: tuple[int, str] | None,
        limit: int,
    ) -> list[sqlite3.Row]:  # fmt: skip
        """Inside a write: a page of local media created before ``before_ts``, by
        (created_ts, media_id) after the key ``after_media_id``."""
        after_ts, after_id = after_media_id if after_media_id is not None else (-(2**62), "")
        return conn.execute(
            "SELECT media_id, user_id, created_ts FROM local_media"
            " WHERE created_ts < ? AND (created_ts, media_id) > (?, ?)"
            " ORDER BY created_ts, media_id LIMIT ?",
            (before_ts, after_ts, after_id, limit),
        ).fetchall()

    def media_referenced_in_rooms(self, room_ids: Iterable[str], server_name: str) -> set[str]:
        """The IDs of this server's media that events of ``room_ids`` point at (``mxc://``
        URIs anywhere in their JSON: ``url``, ``info.thumbnail_url``, avatars, ...). Encrypted
        events hide theirs: only what the server can read is found."""
        prefix = f"mxc://{server_name}/"
        found: set[str] = set()
        for room_id in room_ids:
            rows = self.db.read(
                "SELECT json FROM events WHERE room_id = ? AND instr(json, ?) > 0",
                (room_id, prefix.encode()),
            )
            for (raw,) in rows:
                _collect_mxc(orjson.loads(raw), prefix, found)
        return found


def _collect_mxc(value: object, prefix: str, found: set[str], depth: int = 0) -> None:
    if depth > 64:
        return
    if isinstance(value, str):
        if value.startswith(prefix):
            m = _MXC_ID.fullmatch(value[len(prefix) :])
            if m is not None:
                found.add(m.group(0))
    elif isinstance(value, dict):
        for v in value.values():
            _collect_mxc(v, prefix, found, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _collect_mxc(v, prefix, found, depth + 1)
