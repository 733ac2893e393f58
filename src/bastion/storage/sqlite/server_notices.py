"""Server notices (C-S API "Server Notices"): the notices user the server created for itself and
the rooms it owns — each user's server-notices room and the guard's alerts room. Tables in
migration 0005 (``server_notice_system_users``, ``server_notice_rooms``)."""

from __future__ import annotations

import json
import sqlite3

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []

#: ``server_notice_rooms.purpose``: a user's server-notices room.
PURPOSE_NOTICES = "notices"
#: ``server_notice_rooms.purpose``: the guard's alerts room (``user_id``: the notices user).
PURPOSE_ALERTS = "alerts"


class ServerNoticesStore(StoreBase):
    # -- the notices user -------------------------------------------------------------------
    def is_server_notice_system_user(self, user_id: str) -> bool:
        """True when the server-notices part created this account for itself."""
        row = self.db.read_one(
            "SELECT 1 FROM server_notice_system_users WHERE user_id = ?", (user_id,)
        )
        return row is not None

    @staticmethod
    def create_server_notice_system_user_in(
        conn: sqlite3.Connection, user_id: str, displayname: str, now_ms: int
    ) -> bool:
        """Create the notices user (no password: it cannot log in) and list it as ours. False
        when an account of that name exists already and is not ours (it is never used)."""
        listed = conn.execute(
            "SELECT 1 FROM server_notice_system_users WHERE user_id = ?", (user_id,)
        ).fetchone()
        if listed is not None:
            return True
        cur = conn.execute(
            "INSERT OR IGNORE INTO users (user_id, password_hash, created_ts, is_admin)"
            " VALUES (?, NULL, ?, 0)",
            (user_id, now_ms),
        )
        if cur.rowcount != 1:
            return False  # registered by someone else
        conn.execute(
            "INSERT OR REPLACE INTO profiles (user_id, key, value) VALUES (?, 'displayname', ?)",
            (user_id, json.dumps(displayname)),
        )
        conn.execute(
            "INSERT INTO server_notice_system_users (user_id, created_ts) VALUES (?, ?)",
            (user_id, now_ms),
        )
        return True

    # -- the rooms ----------------------------------------------------------------------------
    def get_server_notice_room(self, user_id: str, purpose: str = PURPOSE_NOTICES) -> str | None:
        row = self.db.read_one(
            "SELECT room_id FROM server_notice_rooms WHERE user_id = ? AND purpose = ?",
            (user_id, purpose),
        )
        return row[0] if row else None

    def server_notice_room_owner(self, room_id: str) -> tuple[str, str] | None:
        """(user_id, purpose) of a room this part owns, or None."""
        row = self.db.read_one(
            "SELECT user_id, purpose FROM server_notice_rooms WHERE room_id = ?", (room_id,)
        )
        return (row[0], row[1]) if row else None

    @staticmethod
    def add_server_notice_room_in(
        conn: sqlite3.Connection, user_id: str, room_id: str, now_ms: int,
        purpose: str = PURPOSE_NOTICES,
    ) -> None:  # fmt: skip
        """Remember the room (in the transaction that creates it). A second room for the same
        user and purpose fails the transaction (``sqlite3.IntegrityError``): one room each."""
        conn.execute(
            "INSERT INTO server_notice_rooms (user_id, purpose, room_id, created_ts)"
            " VALUES (?, ?, ?, ?)",
            (user_id, purpose, room_id, now_ms),
        )

    # -- server admins (the alerts room's members) --------------------------------------------
    def server_admins(self) -> list[str]:
        """The user IDs of the active server admins."""
        rows = self.db.read(
            "SELECT user_id FROM users WHERE is_admin = 1 AND deactivated = 0 ORDER BY user_id"
        )
        return [r[0] for r in rows]
