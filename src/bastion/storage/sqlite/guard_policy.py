"""The policy lists the server enforces (the guard's policy part; table ``guard_policy_lists``
in migration 0005): the policy rooms an admin subscribed through the admin API. Lists trusted
from the config file (``[guard.policy] lists``) are not stored here."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []


class GuardPolicyStore(StoreBase):
    def guard_policy_lists(self) -> list[tuple[str, str | None, str, int]]:
        """Every subscribed list: (room ID, shortcode, added by, added ts), oldest first."""
        rows = self.db.read(
            "SELECT room_id, shortcode, added_by, added_ts FROM guard_policy_lists"
            " ORDER BY added_ts, room_id"
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def guard_policy_rule_state(
        self, room_id: str, types: Iterable[str]
    ) -> list[tuple[str, str, str]]:
        """The room's current state entries of the given (policy rule) types: (type, state key,
        event ID), ordered; one indexed read, whatever else the room's state holds."""
        wanted = list(types)
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        rows = self.db.read(
            "SELECT type, state_key, event_id FROM current_state"  # noqa: S608 - placeholders only
            f" WHERE room_id = ? AND type IN ({marks}) ORDER BY type, state_key",
            (room_id, *wanted),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def guard_local_joined_rooms(self, server_name: str) -> list[str]:
        """Every room a user of ``server_name`` is joined to (for a server-ACL sweep)."""
        suffix = ":" + server_name
        rows = self.db.read(
            "SELECT DISTINCT room_id FROM current_membership"
            " WHERE membership = 'join' AND substr(user_id, -?) = ? ORDER BY room_id",
            (len(suffix), suffix),
        )
        return [r[0] for r in rows]

    def add_guard_policy_list_in(
        self, conn: sqlite3.Connection, room_id: str, shortcode: str | None, added_by: str,
        now_ms: int,
    ) -> bool:  # fmt: skip
        """Subscribe to a list (or change its shortcode); True when it is new."""
        existed = conn.execute(
            "SELECT 1 FROM guard_policy_lists WHERE room_id = ?", (room_id,)
        ).fetchone()
        if existed is not None:
            conn.execute(
                "UPDATE guard_policy_lists SET shortcode = ? WHERE room_id = ?",
                (shortcode, room_id),
            )
            return False
        conn.execute(
            "INSERT INTO guard_policy_lists (room_id, shortcode, added_by, added_ts)"
            " VALUES (?,?,?,?)",
            (room_id, shortcode, added_by, now_ms),
        )
        return True

    def remove_guard_policy_list_in(self, conn: sqlite3.Connection, room_id: str) -> bool:
        """Unsubscribe from a list; True when it was subscribed."""
        cur = conn.execute("DELETE FROM guard_policy_lists WHERE room_id = ?", (room_id,))
        return cur.rowcount > 0
