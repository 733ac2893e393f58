"""Notifications and pushers (C-S API "Push Notifications", "Push Gateway API"): tables
``push_notifications``, ``push_counts`` and ``pushers`` (migration 0016).

A notification row per (user, event) the user's push rules notify for; ``push_counts`` keeps the
unread counts per (user, room, thread) that /sync serves without counting rows. A read receipt
marks the rows it covers read and recomputes the counts of what stays unread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []

#: The thread ID of the main timeline (C-S API "Threading": receipts' ``thread_id``).
MAIN = "main"


class PushStore(StoreBase):
    # -- notifications and counts ----------------------------------------------------------------
    @staticmethod
    def add_notifications_in(
        conn: sqlite3.Connection,
        rows: Iterable[tuple[str, int, str, str, str, int, bool, str]],
    ) -> int:
        """Insert notification rows ``(user_id, stream_pos, room_id, thread_id, event_id, ts,
        highlight, actions_json)`` and count each in ``push_counts``; a row already there (the
        same event twice) is not counted again. Returns the rows added."""
        added = 0
        for user_id, pos, room_id, thread_id, event_id, ts, highlight, actions in rows:
            cur = conn.execute(
                "INSERT OR IGNORE INTO push_notifications (user_id, stream_pos, room_id,"
                " thread_id, event_id, ts, highlight, actions) VALUES (?,?,?,?,?,?,?,?)",
                (user_id, pos, room_id, thread_id, event_id, ts, int(highlight), actions),
            )
            if cur.rowcount <= 0:
                continue
            added += 1
            conn.execute(
                "INSERT INTO push_counts (user_id, room_id, thread_id, notifications, highlights)"
                " VALUES (?,?,?,1,?) ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET"
                " notifications = notifications + 1, highlights = highlights + excluded.highlights",
                (user_id, room_id, thread_id, int(highlight)),
            )
        return added

    @staticmethod
    def mark_notifications_read_in(
        conn: sqlite3.Connection, user_id: str, room_id: str, upto_pos: int, thread_id: str | None
    ) -> None:
        """A read receipt at stream position ``upto_pos``: the user's notifications in the room
        up to it are read — all threads for an unthreaded receipt (``thread_id`` None), else only
        that thread (``"main"``: the main timeline) — and the counts are recomputed."""
        if thread_id is None:
            conn.execute(
                "UPDATE push_notifications SET unread = 0 WHERE user_id = ? AND room_id = ?"
                " AND unread = 1 AND stream_pos <= ?",
                (user_id, room_id, upto_pos),
            )
            conn.execute(
                "DELETE FROM push_counts WHERE user_id = ? AND room_id = ?", (user_id, room_id)
            )
            conn.execute(
                "INSERT INTO push_counts (user_id, room_id, thread_id, notifications, highlights)"
                " SELECT user_id, room_id, thread_id, COUNT(*), SUM(highlight)"
                " FROM push_notifications WHERE user_id = ? AND room_id = ? AND unread = 1"
                " GROUP BY thread_id",
                (user_id, room_id),
            )
            return
        conn.execute(
            "UPDATE push_notifications SET unread = 0 WHERE user_id = ? AND room_id = ?"
            " AND thread_id = ? AND unread = 1 AND stream_pos <= ?",
            (user_id, room_id, thread_id, upto_pos),
        )
        conn.execute(
            "DELETE FROM push_counts WHERE user_id = ? AND room_id = ? AND thread_id = ?",
            (user_id, room_id, thread_id),
        )
        conn.execute(
            "INSERT INTO push_counts (user_id, room_id, thread_id, notifications, highlights)"
            " SELECT user_id, room_id, thread_id, COUNT(*), SUM(highlight)"
            " FROM push_notifications WHERE user_id = ? AND room_id = ? AND thread_id = ?"
            " AND unread = 1 GROUP BY thread_id",
            (user_id, room_id, thread_id),
        )

    def get_push_counts(self, user_id: str, room_id: str) -> dict[str, tuple[int, int]]:
        """thread ID (``"main"`` for the main timeline) → (notifications, highlights)."""
        rows = self.db.read(
            "SELECT thread_id, notifications, highlights FROM push_counts"
            " WHERE user_id = ? AND room_id = ?",
            (user_id, room_id),
        )
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def get_push_counts_for_user(self, user_id: str) -> dict[str, dict[str, tuple[int, int]]]:
        """room ID → thread ID → (notifications, highlights), rooms with unread ones only."""
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for r in self.db.read(
            "SELECT room_id, thread_id, notifications, highlights FROM push_counts"
            " WHERE user_id = ?",
            (user_id,),
        ):
            out.setdefault(r[0], {})[r[1]] = (int(r[2]), int(r[3]))
        return out

    def get_notifications(
        self, user_id: str, before_pos: int | None, limit: int, only_highlight: bool
    ) -> list[sqlite3.Row]:
        """The user's notifications, newest first, below ``before_pos`` (a page token)."""
        sql = (
            "SELECT stream_pos, room_id, thread_id, event_id, ts, highlight, actions, unread"
            " FROM push_notifications WHERE user_id = ?"
        )
        args: list[object] = [user_id]
        if before_pos is not None:
            sql += " AND stream_pos < ?"
            args.append(before_pos)
        if only_highlight:
            sql += " AND highlight = 1"
        sql += " ORDER BY stream_pos DESC LIMIT ?"
        args.append(limit)
        return list(self.db.read(sql, tuple(args)))

    def unread_notification_total(self, user_id: str) -> int:
        """The user's unread notifications over every room (``counts.unread`` for gateways)."""
        row = self.db.read_one(
            "SELECT COALESCE(SUM(notifications), 0) FROM push_counts WHERE user_id = ?",
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
