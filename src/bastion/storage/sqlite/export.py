"""Reads for the export of one user's data (GDPR Art. 15 and 20; issue 10 "Export";
:mod:`bastion.services.export`).

Read only, and paged: every method that can return many rows takes the key of the last row of
the previous page (``after``) and a ``limit``, and returns at most ``limit`` rows in key order,
so an export of any size never holds more than one page of a kind in memory. Rows come back as
plain dicts of JSON-able values (JSON columns decoded); secrets are never selected (no password
hash, no access token).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []


def _loads(value: Any) -> Any:
    if value is None:
        return None
    return json.loads(value) if isinstance(value, str) else orjson.loads(value)


class ExportStore(StoreBase):
    def export_account(self, user_id: str) -> dict[str, Any] | None:
        """The account row without its password hash (None for an unknown user)."""
        r = self.db.read_one(
            "SELECT user_id, created_ts, is_admin, deactivated, locked, suspended FROM users"
            " WHERE user_id = ?",
            (user_id,),
        )
        if r is None:
            return None
        out = dict(r)
        for flag in ("is_admin", "deactivated", "locked", "suspended"):
            out[flag] = bool(out[flag])
        return out

    def export_profile(self, user_id: str) -> dict[str, Any]:
        """Every profile field (C-S API "Profiles"), values decoded."""
        rows = self.db.read(
            "SELECT key, value FROM profiles WHERE user_id = ? ORDER BY key", (user_id,)
        )
        return {r["key"]: _loads(r["value"]) for r in rows}

    def export_devices(self, user_id: str) -> list[dict[str, Any]]:
        """The user's devices: ID, display name, last seen time and IP; never a token."""
        rows = self.db.read(
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices"
            " WHERE user_id = ? ORDER BY device_id",
            (user_id,),
        )
        return [dict(r) for r in rows]

    def export_device_keys(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        """The device's published identity keys as stored (public keys)."""
        r = self.db.read_one(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        )
        return _loads(r["key_json"]) if r is not None else None

    def export_cross_signing_keys(self, user_id: str) -> list[dict[str, Any]]:
        rows = self.db.read(
            "SELECT key_type, key_json FROM e2e_cross_signing_keys WHERE user_id = ?"
            " ORDER BY key_type",
            (user_id,),
        )
        return [{"usage": r["key_type"], "key": _loads(r["key_json"])} for r in rows]

    def export_account_data_page(
        self, user_id: str, after: tuple[str, str] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Account data, global (``room_id`` ``""``) and per room, in (room, type) order."""
        room, typ = after if after is not None else ("", "")
        rows = self.db.read(
            "SELECT room_id, type, content FROM account_data WHERE user_id = ?"
            " AND (room_id > ? OR (room_id = ? AND type > ?) OR ? = 0)"
            " ORDER BY room_id, type LIMIT ?",
            (user_id, room, room, typ, 0 if after is None else 1, limit),
        )
        return [
            {"room_id": r["room_id"] or None, "type": r["type"], "content": _loads(r["content"])}
            for r in rows
        ]

    def export_filters_page(self, user_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        rows = self.db.read(
            "SELECT filter_id, filter_json FROM user_filters WHERE user_id = ? AND filter_id > ?"
            " ORDER BY filter_id LIMIT ?",
            (user_id, after, limit),
        )
        return [
            {"filter_id": str(r["filter_id"]), "filter": _loads(r["filter_json"])} for r in rows
        ]

    def export_push_rules(self, user_id: str) -> Any:
        """The user's stored push-rule document (their rules and changes), or None."""
        r = self.db.read_one("SELECT rules_json FROM push_rules WHERE user_id = ?", (user_id,))
        return _loads(r["rules_json"]) if r is not None else None

    def export_presence(self, user_id: str) -> dict[str, Any] | None:
        r = self.db.read_one(
            "SELECT state, status_msg, last_active_ts FROM presence WHERE user_id = ?", (user_id,)
        )
        return dict(r) if r is not None else None

    def export_memberships_page(self, user_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        """The user's membership changes, oldest first (``after``: a stream position)."""
        rows = self.db.read(
            "SELECT room_id, membership, event_id, stream_pos, sender FROM membership_events"
            " WHERE user_id = ? AND stream_pos > ? ORDER BY stream_pos LIMIT ?",
            (user_id, after, limit),
        )
        return [dict(r) for r in rows]

    def export_room_ids_page(self, user_id: str, after: str, limit: int) -> list[str]:
        """Every room the user has a membership event in, in room ID order."""
        rows = self.db.read(
            "SELECT DISTINCT room_id FROM membership_events WHERE user_id = ? AND room_id > ?"
            " ORDER BY room_id LIMIT ?",
            (user_id, after, limit),
        )
        return [r["room_id"] for r in rows]

    def export_sent_events_page(
        self, room_id: str, sender: str, after: int, limit: int
    ) -> list[dict[str, Any]]:
        """Events of ``room_id`` sent by ``sender`` (every one stored, whatever its fate), as
        stored, oldest first."""
        rows = self.db.read(
            "SELECT event_id, stream_pos, json, redacted_because, rejected, soft_failed"
            " FROM events WHERE room_id = ? AND stream_pos > ? AND sender = ?"
            " ORDER BY stream_pos LIMIT ?",
            (room_id, after, sender, limit),
        )
        return [
            {
                "event_id": r["event_id"],
                "stream_pos": r["stream_pos"],
                "event": orjson.loads(r["json"]),
                "redacted_because": r["redacted_because"],
                "rejected": bool(r["rejected"]),
                "soft_failed": bool(r["soft_failed"]),
            }
            for r in rows
        ]

    def export_receipts_page(self, user_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        rows = self.db.read(
            "SELECT rowid, room_id, receipt_type, thread_id, event_id, ts FROM receipts"
            " WHERE user_id = ? AND rowid > ? ORDER BY rowid LIMIT ?",
            (user_id, after, limit),
        )
        return [dict(r) for r in rows]

    def export_media_page(self, user_id: str, after: str, limit: int) -> list[dict[str, Any]]:
        """The user's completed uploads, in media ID order."""
        rows = self.db.read(
            "SELECT media_id, created_ts, upload_ts, content_type, upload_name, size, sha256"
            " FROM local_media WHERE user_id = ? AND upload_ts IS NOT NULL AND media_id > ?"
            " ORDER BY media_id LIMIT ?",
            (user_id, after, limit),
        )
        return [dict(r) for r in rows]

    def export_backup_versions(self, user_id: str) -> list[dict[str, Any]]:
        """Every key-backup version as stored (deleted ones flagged)."""
        rows = self.db.read(
            "SELECT version, algorithm, auth_data, etag, deleted FROM e2e_backup_versions"
            " WHERE user_id = ? ORDER BY version",
            (user_id,),
        )
        return [
            {
                "version": str(r["version"]),
                "algorithm": r["algorithm"],
                "auth_data": _loads(r["auth_data"]),
                "etag": str(r["etag"]),
                "deleted": bool(r["deleted"]),
            }
            for r in rows
        ]

    def export_backup_keys_page(
        self, user_id: str, after: tuple[int, str, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], tuple[int, str, str] | None]:
        """Backed-up room keys (the encrypted ``session_data`` as stored), in (version, room,
        session) order; the rows and the key of the last one."""
        v, room, session = after if after is not None else (-1, "", "")
        rows = self.db.read(
            "SELECT version, room_id, session_id, first_message_index, forwarded_count,"
            " is_verified, session_data FROM e2e_backup_keys WHERE user_id = ?"
            " AND (version, room_id, session_id) > (?, ?, ?)"
            " ORDER BY version, room_id, session_id LIMIT ?",
            (user_id, v, room, session, limit),
        )
        out = [
            {
                "version": str(r["version"]),
                "room_id": r["room_id"],
                "session_id": r["session_id"],
                "first_message_index": r["first_message_index"],
                "forwarded_count": r["forwarded_count"],
                "is_verified": bool(r["is_verified"]),
                "session_data": _loads(r["session_data"]),
            }
            for r in rows
        ]
        last = (rows[-1]["version"], rows[-1]["room_id"], rows[-1]["session_id"]) if rows else None
        return out, last

    def export_ledger_page(self, subject: str, after: int, limit: int) -> list[dict[str, Any]]:
        """Ledger records whose subject is ``subject`` (index order), each decoded."""
        rows = self.db.read(
            "SELECT idx, entry FROM ledger_entries WHERE subject = ? AND idx > ?"
            " ORDER BY idx LIMIT ?",
            (subject, after, limit),
        )
        return [{"index": r["idx"], "record": orjson.loads(bytes(r["entry"]))} for r in rows]

    def export_last_action_ts(self, subject: str, action: str, actor: str) -> int | None:
        """The time of the latest ``action`` record about ``subject`` made by ``actor``."""
        rows = self.db.read(
            "SELECT ts, entry FROM ledger_entries WHERE subject = ? AND action = ?"
            " ORDER BY idx DESC LIMIT 50",
            (subject, action),
        )
        for r in rows:
            if orjson.loads(bytes(r["entry"])).get("actor") == actor:
                return int(r["ts"])
        return None

    def export_guard_decisions_page(
        self, subject: str, after: int, limit: int
    ) -> list[dict[str, Any]]:
        """The guard's decisions whose subject is ``subject`` (ID order), JSON columns decoded."""
        rows = self.db.read(
            "SELECT id, ts, source, outcome, status, reason, subject, room_id, event_id, origin,"
            " score,"
            " actions, signals, held, details, ledger_idx, reviewed_ts, review_reason"
            " FROM guard_decisions WHERE subject = ? AND id > ? ORDER BY id LIMIT ?",
            (subject, after, limit),
        )
        out = []
        for r in rows:
            d = dict(r)
            for col in ("actions", "signals", "held", "details"):
                d[col] = _loads(d[col])
            out.append(d)
        return out
