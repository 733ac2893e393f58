"""Notifications and pushers (C-S API "Push Notifications", "Push Gateway API"): tables
``push_notifications``, ``push_counts`` and ``pushers`` (migration 0016).

A notification row per (user, event) the user's push rules notify for; ``push_counts`` keeps the
unread counts per (user, room, thread) that /sync serves without counting rows. A read receipt
marks the rows it covers read and recomputes the counts of what stays unread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []

#: The thread ID of the main timeline (C-S API "Threading": receipts' ``thread_id``).
MAIN = "main"


class PushStore(StoreBase):
    # -- notifications and counts ----------------------------------------------------------------
    @staticmethod
    def add_notifications_in(
        conn: sqlite3.Connection,
        rows: Sequence[tuple[str, int, str, str, str, int, bool, str]],
    ) -> int:
        """Insert notification rows ``(user_id, stream_pos, room_id, thread_id, event_id, ts,
        highlight, actions_json)`` (each event is evaluated once: no row is there already) and
        add them to ``push_counts``, one statement each for all rows. The event ID and time are
        not stored (the events table has them by stream position). Returns the rows added."""
        conn.executemany(
            "INSERT OR IGNORE INTO push_notifications (room_id, stream_pos, user_id,"
            " thread_id, highlight, actions) VALUES (?,?,?,?,?,?)",
            [(r, p, u, t, int(h), a) for u, p, r, t, _e, _ts, h, a in rows],
        )
        sums: dict[tuple[str, str, str], list[int]] = {}
        for u, _p, r, t, _e, _ts, h, _a in rows:
            c = sums.setdefault((r, u, t), [0, 0])
            c[0] += 1
            c[1] += int(h)
        conn.executemany(
            "INSERT INTO push_counts (room_id, user_id, thread_id, notifications, highlights)"
            " VALUES (?,?,?,?,?) ON CONFLICT (room_id, user_id, thread_id) DO UPDATE SET"
            " notifications = notifications + excluded.notifications,"
            " highlights = highlights + excluded.highlights",
            [(*k, n, h) for k, (n, h) in sums.items()],
        )
        return len(rows)

    @staticmethod
    def mark_notifications_read_in(
        conn: sqlite3.Connection, user_id: str, room_id: str, upto_pos: int, thread_id: str | None
    ) -> None:
        """A read receipt at stream position ``upto_pos``: the user's notifications in the room
        up to it are read — in every thread for an unthreaded receipt (``thread_id`` None), else
        in that thread only (``"main"``: the main timeline). A receipt below what a thread's
        receipts already cover changes nothing there; the counts of the threads it moves are
        counted again from the notifications above it (the rows of the room after it)."""
        rows = conn.execute(
            "SELECT thread_id, read_pos FROM push_counts WHERE room_id = ? AND user_id = ?",
            (room_id, user_id),
        ).fetchall()
        moved = [t for t, read in rows if read < upto_pos and thread_id in (None, t)]
        if not moved:
            return
        sql = (
            "SELECT thread_id, COUNT(*), COALESCE(SUM(highlight), 0) FROM push_notifications"
            " WHERE room_id = ? AND stream_pos > ? AND user_id = ?"
        )
        args: tuple = (room_id, upto_pos, user_id)
        if thread_id is not None:
            sql += " AND thread_id = ?"
            args = (*args, thread_id)
        counted = {t: (n, h) for t, n, h in conn.execute(sql + " GROUP BY thread_id", args)}
        conn.executemany(
            "UPDATE push_counts SET notifications = ?, highlights = ?, read_pos = ?"
            " WHERE room_id = ? AND user_id = ? AND thread_id = ?",
            [(*counted.get(t, (0, 0)), upto_pos, room_id, user_id, t) for t in moved],
        )

    @staticmethod
    def prune_notifications_in(conn: sqlite3.Connection, room_id: str, before_ts: int) -> int:
        """Delete the room's notifications of events sent before ``before_ts`` (by the events'
        time index, then a key range: no scan of other rooms). Counts are left as they are."""
        row = conn.execute(
            "SELECT MAX(stream_pos) FROM events WHERE room_id = ? AND origin_server_ts < ?",
            (room_id, before_ts),
        ).fetchone()
        if row is None or row[0] is None:
            return 0
        return conn.execute(
            "DELETE FROM push_notifications WHERE room_id = ? AND stream_pos <= ?",
            (room_id, int(row[0])),
        ).rowcount

    def get_push_counts(self, user_id: str, room_id: str) -> dict[str, tuple[int, int]]:
        """thread ID (``"main"`` for the main timeline) → (notifications, highlights)."""
        rows = self.db.read(
            "SELECT thread_id, notifications, highlights FROM push_counts"
            " WHERE room_id = ? AND user_id = ?",
            (room_id, user_id),
        )
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def get_read_positions(self, user_id: str, room_id: str) -> dict[str, int]:
        """thread ID → the stream position the user's read receipts cover there."""
        rows = self.db.read(
            "SELECT thread_id, read_pos FROM push_counts WHERE room_id = ? AND user_id = ?",
            (room_id, user_id),
        )
        return {r[0]: int(r[1]) for r in rows}

    def get_room_notifications(
        self, user_id: str, room_id: str, before_pos: int | None, limit: int, scan: int,
        only_highlight: bool,
    ) -> tuple[list[dict[str, Any]], int | None]:  # fmt: skip
        """The user's notifications in one room, newest first, below ``before_pos``, looking
        at no more than ``scan`` rows of the room (every member's). Returns the rows (with the
        event's ``event_id`` and ``ts``, None when the event is gone) and, when the look stopped
        early, the lowest position looked at (nothing above it was missed)."""
        before = before_pos if before_pos is not None else 2**62
        rows = self.db.read(
            "SELECT stream_pos, user_id, thread_id, highlight, actions FROM push_notifications"
            " WHERE room_id = ? AND stream_pos < ? ORDER BY stream_pos DESC LIMIT ?",
            (room_id, before, scan),
        )
        mine = [
            r for r in rows if r["user_id"] == user_id and (r["highlight"] or not only_highlight)
        ][:limit]
        floor: int | None = None
        if len(mine) == limit:
            floor = int(mine[-1]["stream_pos"])
        elif len(rows) == scan:
            floor = int(rows[-1]["stream_pos"])
        found: dict[int, tuple[str, int]] = {}
        positions = [int(r["stream_pos"]) for r in mine]
        for i in range(0, len(positions), 500):
            chunk = positions[i : i + 500]
            for e in self.db.read(
                "SELECT stream_pos, event_id, origin_server_ts FROM events"
                f" WHERE stream_pos IN ({','.join('?' * len(chunk))})",  # noqa: S608
                tuple(chunk),
            ):
                found[int(e[0])] = (e[1], int(e[2]))
        out = []
        for r in mine:
            event_id, ts = found.get(int(r["stream_pos"]), (None, 0))
            out.append({"room_id": room_id, "stream_pos": int(r["stream_pos"]),
                        "user_id": user_id, "thread_id": r["thread_id"], "event_id": event_id,
                        "ts": ts, "highlight": r["highlight"], "actions": r["actions"]})  # fmt: skip
        return out, floor

    def unread_notification_total(self, user_id: str) -> int:
        """The user's unread notifications over every room (``counts.unread`` for gateways)."""
        row = self.db.read_one(
            "SELECT COALESCE(SUM(c.notifications), 0) FROM current_membership m"
            " JOIN push_counts c ON c.room_id = m.room_id AND c.user_id = m.user_id"
            " WHERE m.user_id = ? AND m.membership = 'join'",
            (user_id,),
        )
        return 0 if row is None else int(row[0])

    # -- pushers ---------------------------------------------------------------------------------
    @staticmethod
    def set_pusher_in(
        conn: sqlite3.Connection,
        user_id: str,
        pusher: dict[str, object],
        data_json: str,
        pushkey_ts: int,
        append: bool,
    ) -> None:
        """Add or replace the user's pusher (app_id, pushkey); without ``append``, the same
        (app_id, pushkey) of other users goes (C-S API "POST /pushers/set": ``append``)."""
        app_id, pushkey = pusher["app_id"], pusher["pushkey"]
        if not append:
            conn.execute(
                "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id != ?",
                (app_id, pushkey, user_id),
            )
        conn.execute(
            "INSERT INTO pushers (app_id, pushkey, user_id, kind, app_display_name,"
            " device_display_name, profile_tag, lang, data, pushkey_ts) VALUES (?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = excluded.kind,"
            " app_display_name = excluded.app_display_name,"
            " device_display_name = excluded.device_display_name,"
            " profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,"
            " pushkey_ts = excluded.pushkey_ts",
            (app_id, pushkey, user_id, pusher["kind"], pusher["app_display_name"],
             pusher["device_display_name"], pusher.get("profile_tag"), pusher["lang"],
             data_json, pushkey_ts),
        )  # fmt: skip

    @staticmethod
    def delete_pusher_in(conn: sqlite3.Connection, user_id: str, app_id: str, pushkey: str) -> int:
        return conn.execute(
            "DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
            (user_id, app_id, pushkey),
        ).rowcount

    def get_pushers(self, user_id: str) -> list[sqlite3.Row]:
        return list(
            self.db.read(
                "SELECT * FROM pushers WHERE user_id = ? ORDER BY app_id, pushkey", (user_id,)
            )
        )

    def get_pushers_for_users(self, user_ids: Sequence[str]) -> list[sqlite3.Row]:
        """The pushers of any of ``user_ids`` (the members to notify of one event)."""
        out: list[sqlite3.Row] = []
        for i in range(0, len(user_ids), 500):
            chunk = list(user_ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            out.extend(
                self.db.read(f"SELECT * FROM pushers WHERE user_id IN ({marks})", tuple(chunk))  # noqa: S608
            )
        return out

    def has_pushers(self) -> bool:
        return self.db.read_one("SELECT 1 FROM pushers LIMIT 1") is not None
