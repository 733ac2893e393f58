"""Per-user rate-limit overrides (the guard's rate-limit part, migration 0005's
``guard_rate_overrides``): bots and bridges an admin lets send more, or lifts every limit for.

The overrides are stored as the JSON text :func:`bastion.guard.limits.overrides_json` makes;
the rate limiter reads them all once and keeps them in memory, the admin API changes them here
and in that cache."""

from __future__ import annotations

import sqlite3

from bastion.storage.interface import RateOverrideRow
from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []

_COLUMNS = "user_id, overrides, set_by, updated_ts"


class GuardLimitsStore(StoreBase):
    def get_rate_overrides(self) -> list[RateOverrideRow]:
        """Every user's overrides (a handful: bots and bridges)."""
        rows = self.db.read(f"SELECT {_COLUMNS} FROM guard_rate_overrides ORDER BY user_id")
        return [RateOverrideRow(*row) for row in rows]

    def get_rate_override(self, user_id: str) -> RateOverrideRow | None:
        row = self.db.read_one(
            f"SELECT {_COLUMNS} FROM guard_rate_overrides WHERE user_id = ?", (user_id,)
        )
        return None if row is None else RateOverrideRow(*row)

    def set_rate_override_in(
        self, conn: sqlite3.Connection, user_id: str, overrides: str, set_by: str, ts: int
    ) -> None:
        """Replace ``user_id``'s overrides, inside a write function."""
        conn.execute(
            "INSERT INTO guard_rate_overrides (user_id, overrides, set_by, updated_ts)"
            " VALUES (?,?,?,?) ON CONFLICT (user_id) DO UPDATE SET overrides ="
            " excluded.overrides, set_by = excluded.set_by, updated_ts = excluded.updated_ts",
            (user_id, overrides, set_by, ts),
        )

    def delete_rate_override_in(self, conn: sqlite3.Connection, user_id: str) -> bool:
        """Remove ``user_id``'s overrides, inside a write function; whether there were any."""
        cur = conn.execute("DELETE FROM guard_rate_overrides WHERE user_id = ?", (user_id,))
        return cur.rowcount > 0
