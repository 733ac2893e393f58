"""The login defence's tables (migration 0005): failed-login throttles that outlive a restart
(``guard_login_throttles``) and the devices and network prefixes each user has logged in from
(``guard_known_logins``, for new-login notices). See :mod:`bastion.guard.login_defence`."""

from __future__ import annotations

import sqlite3

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []


class GuardLoginStore(StoreBase):
    # -- throttles --------------------------------------------------------------------------
    def guard_login_throttles(self) -> list[sqlite3.Row]:
        """Every stored throttle key (key, failures, level, blocked_until, last_failure)."""
        return self.db.read(
            "SELECT key, failures, level, blocked_until, last_failure FROM guard_login_throttles"
        )

    @staticmethod
    def guard_login_throttle_put_in(
        conn: sqlite3.Connection, key: str, failures: int, level: int, blocked_until: int,
        last_failure: int, now_ms: int,
    ) -> None:  # fmt: skip
        conn.execute(
            "INSERT OR REPLACE INTO guard_login_throttles (key, failures, level, blocked_until,"
            " last_failure, updated_ts) VALUES (?,?,?,?,?,?)",
            (key, failures, level, blocked_until, last_failure, now_ms),
        )

    @staticmethod
    def guard_login_throttle_delete_in(conn: sqlite3.Connection, key: str) -> bool:
        return conn.execute("DELETE FROM guard_login_throttles WHERE key = ?", (key,)).rowcount > 0

    @staticmethod
    def guard_login_throttles_prune_in(
        conn: sqlite3.Connection, forgotten_before: int, now_ms: int
    ) -> int:
        """Delete the keys whose last failure is older than ``forgotten_before`` and whose wait
        is over; how many."""
        return conn.execute(
            "DELETE FROM guard_login_throttles WHERE last_failure < ? AND blocked_until <= ?",
            (forgotten_before, now_ms),
        ).rowcount

    # -- known logins -----------------------------------------------------------------------
    @staticmethod
    def guard_known_logins_any_in(conn: sqlite3.Connection, user_id: str) -> bool:
        """Whether any login of the user is known."""
        row = conn.execute(
            "SELECT 1 FROM guard_known_logins WHERE user_id = ? LIMIT 1", (user_id,)
        ).fetchone()
        return row is not None

    @staticmethod
    def guard_known_login_note_in(
        conn: sqlite3.Connection, user_id: str, kind: str, value: str, now_ms: int
    ) -> bool:
        """Remember a login's ``kind`` ("device", "prefix") ``value``; True if it was new."""
        cur = conn.execute(
            "UPDATE guard_known_logins SET last_ts = ? WHERE user_id = ? AND kind = ?"
            " AND value = ?",
            (now_ms, user_id, kind, value),
        )
        if cur.rowcount:
            return False
        conn.execute(
            "INSERT INTO guard_known_logins (user_id, kind, value, first_ts, last_ts)"
            " VALUES (?,?,?,?,?)",
            (user_id, kind, value, now_ms, now_ms),
        )
        return True

    # -- user names (the confusables index) --------------------------------------------------
    def guard_admin_user_ids(self) -> list[str]:
        return [r[0] for r in self.db.read("SELECT user_id FROM users WHERE is_admin = 1")]

    def guard_all_user_ids(self) -> list[str]:
        return [r[0] for r in self.db.read("SELECT user_id FROM users")]
