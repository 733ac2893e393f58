"""The guard's decisions and review queue, per-room guard settings, rooms cooling after a join
wave, and quarantined media (migration 0005, the "decisions" and "join-wave cooling" blocks).

A decision row is written together with its ``guard.decision`` ledger record (the caller's
write function, :meth:`bastion.guard.service.GuardService.record_in`); its JSON columns
(``actions``, ``signals``, ``held``, ``details``) are decoded when read.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []

_JSON_COLUMNS = ("actions", "signals", "held", "details")


def _decision(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for col in _JSON_COLUMNS:
        value = out.get(col)
        out[col] = json.loads(value) if isinstance(value, str) else value
    return out


class GuardDecisionsStore(StoreBase):
    # -- decisions ------------------------------------------------------------------------------
    @staticmethod
    def insert_guard_decision_in(
        conn: sqlite3.Connection, *, ts: int, source: str, outcome: str, status: str,
        reason: str, subject: str | None, room_id: str | None, event_id: str | None,
        origin: str | None, score: float, actions: Sequence[str],
        signals: Sequence[Mapping[str, Any]], held: Mapping[str, Any] | None,
        details: Mapping[str, Any],
    ) -> int:  # fmt: skip
        """Insert one decision (inside a write function); its ID."""
        cur = conn.execute(
            "INSERT INTO guard_decisions (ts, source, outcome, status, reason, subject, room_id,"
            " event_id, origin, score, actions, signals, held, details)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                ts, source, outcome, status, reason, subject, room_id, event_id, origin,
                float(score), json.dumps(list(actions)), json.dumps(list(signals)),
                None if held is None else json.dumps(dict(held)), json.dumps(dict(details)),
            ),
        )  # fmt: skip
        return int(cur.lastrowid or 0)

    @staticmethod
    def set_guard_decision_ledger_idx_in(
        conn: sqlite3.Connection, decision_id: int, ledger_idx: int
    ) -> None:
        conn.execute(
            "UPDATE guard_decisions SET ledger_idx = ? WHERE id = ?", (ledger_idx, decision_id)
        )

    @staticmethod
    def set_guard_decision_details_in(
        conn: sqlite3.Connection, decision_id: int, details: Mapping[str, Any]
    ) -> None:
        conn.execute(
            "UPDATE guard_decisions SET details = ? WHERE id = ?",
            (json.dumps(dict(details)), decision_id),
        )

    @staticmethod
    def set_guard_decision_event_id_in(
        conn: sqlite3.Connection, decision_id: int, event_id: str
    ) -> None:
        """The event a decision concerns (an approved held event, once sent)."""
        conn.execute(
            "UPDATE guard_decisions SET event_id = ? WHERE id = ?", (event_id, decision_id)
        )

    def get_guard_decision(self, decision_id: int) -> dict[str, Any] | None:
        row = self.db.read_one("SELECT * FROM guard_decisions WHERE id = ?", (decision_id,))
        return _decision(row) if row is not None else None

    @staticmethod
    def guard_decision_in(conn: sqlite3.Connection, decision_id: int) -> dict[str, Any] | None:
        """A decision read inside a write function (to review it with its current status)."""
        row = conn.execute("SELECT * FROM guard_decisions WHERE id = ?", (decision_id,)).fetchone()
        return _decision(row) if row is not None else None

    def list_guard_decisions(
        self, *, status: str | None = None, subject: str | None = None,
        room_id: str | None = None, before: int | None = None, limit: int = 50,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Decisions, newest first (by ID), filtered; ``before``: only IDs below it (paging)."""
        where: list[str] = []
        args: list[Any] = []
        for col, value in (("status", status), ("subject", subject), ("room_id", room_id)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        if before is not None:
            where.append("id < ?")
            args.append(before)
        sql = "SELECT * FROM guard_decisions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [_decision(r) for r in self.db.read(sql, args)]

    def guard_acl_rooms(self, source: str, server: str) -> list[str]:
        """The rooms whose server ACL a carried-out decision from ``source`` changed to deny
        ``server`` (its ``details.server_acl.done``)."""
        return [
            r[0]
            for r in self.db.read(
                "SELECT DISTINCT room_id FROM guard_decisions WHERE source = ? AND origin = ?"
                " AND status = 'done' AND room_id IS NOT NULL"
                " AND json_extract(details, '$.server_acl.done') = 1 AND outcome = 'block'",
                (source, server),
            )
        ]

    def held_guard_txn_keys(self) -> set[tuple[str, ...]]:
        """(subject, *txn) of every held or rejected decision of a local event sent with a
        transaction ID: the few senders whose retries need :meth:`held_guard_decision_for_txn`
        (the guard keeps them in memory, so a send by anyone else reads nothing)."""
        keys: set[tuple[str, ...]] = set()
        for row in self.db.read(
            "SELECT subject, json_extract(held, '$.txn') FROM guard_decisions"
            " WHERE status IN ('held', 'rejected') AND held IS NOT NULL"
        ):
            txn = json.loads(row[1]) if isinstance(row[1], str) else None
            if row[0] and isinstance(txn, list) and len(txn) == 4:
                keys.add((row[0], *map(str, txn)))
        return keys

    def held_guard_decision_for_txn(
        self, subject: str, txn: Sequence[str]
    ) -> dict[str, Any] | None:
        """The held (or rejected) decision of ``subject``'s event sent with the transaction
        ``txn`` (sender, device, scope, transaction ID), newest first; None when there is none.
        A client's retry of a held event finds it instead of making a second one."""
        if len(txn) != 4:
            return None
        row = self.db.read_one(
            "SELECT * FROM guard_decisions WHERE subject = ? AND status IN ('held', 'rejected')"
            " AND held IS NOT NULL AND json_extract(held, '$.txn[0]') = ?"
            " AND json_extract(held, '$.txn[1]') = ? AND json_extract(held, '$.txn[2]') = ?"
            " AND json_extract(held, '$.txn[3]') = ? ORDER BY id DESC LIMIT 1",
            (subject, *txn),
        )
        return _decision(row) if row is not None else None

    @staticmethod
    def review_guard_decision_in(
        conn: sqlite3.Connection, decision_id: int, *, expected_status: str, status: str,
        reviewed_by: str, reviewed_ts: int, review_reason: str | None,
        details: Mapping[str, Any] | None = None,
    ) -> bool:  # fmt: skip
        """Move a decision from ``expected_status`` to ``status`` (False if it is no longer in
        ``expected_status``: someone reviewed it meanwhile)."""
        sets = "status = ?, reviewed_by = ?, reviewed_ts = ?, review_reason = ?"
        args: list[Any] = [status, reviewed_by, reviewed_ts, review_reason]
        if details is not None:
            sets += ", details = ?"
            args.append(json.dumps(dict(details)))
        cur = conn.execute(
            f"UPDATE guard_decisions SET {sets} WHERE id = ? AND status = ?",  # noqa: S608
            (*args, decision_id, expected_status),
        )
        return cur.rowcount == 1

    # -- per-room settings ----------------------------------------------------------------------
    def get_guard_room_settings(self, room_id: str) -> dict[str, Any] | None:
        row = self.db.read_one(
            "SELECT settings FROM guard_room_settings WHERE room_id = ?", (room_id,)
        )
        return json.loads(row["settings"]) if row is not None else None

    @staticmethod
    def set_guard_room_settings_in(
        conn: sqlite3.Connection, room_id: str, settings: Mapping[str, Any], now_ms: int
    ) -> None:
        """Replace a room's settings; an empty mapping removes the row."""
        if not settings:
            conn.execute("DELETE FROM guard_room_settings WHERE room_id = ?", (room_id,))
            return
        conn.execute(
            "INSERT OR REPLACE INTO guard_room_settings (room_id, settings, updated_ts)"
            " VALUES (?,?,?)",
            (room_id, json.dumps(dict(settings)), now_ms),
        )

    # -- rooms cooling after a join wave --------------------------------------------------------
    def get_room_cooling(self, room_id: str) -> dict[str, Any] | None:
        row = self.db.read_one("SELECT * FROM guard_room_cooling WHERE room_id = ?", (room_id,))
        return dict(row) if row is not None else None

    def list_room_cooling(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.read("SELECT * FROM guard_room_cooling ORDER BY room_id")]

    @staticmethod
    def set_room_cooling_in(
        conn: sqlite3.Connection, room_id: str, previous_join_rule: str | None, until_ts: int,
        reason: str,
    ) -> None:  # fmt: skip
        """Start (or extend) a room's cooling; the first ``previous_join_rule`` is kept."""
        conn.execute(
            "INSERT INTO guard_room_cooling (room_id, previous_join_rule, until_ts, reason)"
            " VALUES (?,?,?,?) ON CONFLICT (room_id) DO UPDATE SET until_ts = excluded.until_ts,"
            " reason = excluded.reason",
            (room_id, previous_join_rule, until_ts, reason),
        )

    @staticmethod
    def delete_room_cooling_in(conn: sqlite3.Connection, room_id: str) -> bool:
        cur = conn.execute("DELETE FROM guard_room_cooling WHERE room_id = ?", (room_id,))
        return cur.rowcount == 1

    # -- quarantined media ----------------------------------------------------------------------
    def media_quarantined(self, media_id: str) -> bool:
        """Whether a local media ID is quarantined (not served)."""
        row = self.db.read_one(
            "SELECT 1 FROM guard_quarantined_media WHERE media_id = ?", (media_id,)
        )
        return row is not None

    @staticmethod
    def quarantine_media_in(
        conn: sqlite3.Connection, media_id: str, decision_id: int | None, reason: str, now_ms: int
    ) -> bool:
        """Quarantine a local media ID (False if it is unknown or already quarantined)."""
        known = conn.execute("SELECT 1 FROM local_media WHERE media_id = ?", (media_id,))
        if known.fetchone() is None:
            return False
        cur = conn.execute(
            "INSERT OR IGNORE INTO guard_quarantined_media (media_id, decision_id, reason, ts)"
            " VALUES (?,?,?,?)",
            (media_id, decision_id, reason, now_ms),
        )
        return cur.rowcount == 1

    @staticmethod
    def unquarantine_media_in(conn: sqlite3.Connection, media_id: str) -> bool:
        cur = conn.execute("DELETE FROM guard_quarantined_media WHERE media_id = ?", (media_id,))
        return cur.rowcount == 1
