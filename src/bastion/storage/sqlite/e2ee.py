"""End-to-end encryption storage (C-S API "End-to-End Encryption", "Send-to-Device messaging").

Tables: uploaded device keys (kept exactly as uploaded), one-time keys (claimed in upload order,
each handed out once), fallback keys, cross-signing keys and the signatures uploaded for keys,
the device-list change stream, the to-device inbox, server-side key backups.

Reads run on the event-loop thread (``self.db.read``); every ``*_in(conn, ...)`` method runs
inside a write function on the writer thread and is part of the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import orjson

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = [
    ("e2e_device_list_changes", "stream_pos"),
    ("e2e_cross_signing_keys", "stream_pos"),
    ("device_inbox", "stream_pos"),
    ("device_inbox_top", "stream_pos"),
    ("device_inbox_cursors", "stream_pos"),
]


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def _loads(text: str) -> Any:
    return orjson.loads(text)


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def _backup_keys_filter(
    user_id: str, version: int, room_id: str | None, session_id: str | None
) -> tuple[str, list]:
    """The WHERE clause and its arguments picking one backup version's keys,
    narrowed to one room and one session when they are given."""
    sql = " WHERE user_id = ? AND version = ?"
    args: list = [user_id, version]
    if room_id is not None:
        sql += " AND room_id = ?"
        args.append(room_id)
    if session_id is not None:
        sql += " AND session_id = ?"
        args.append(session_id)
    return sql, args


class E2EEStore(StoreBase):
    # -- device keys ------------------------------------------------------------------------
    def get_device_keys(self, user_id: str, device_ids: Iterable[str] | None = None) -> dict:
        """{device_id: (device_keys, display_name)} for devices that exist and have keys."""
        sql = (
            "SELECT k.device_id, k.key_json, d.display_name FROM e2e_device_keys k"
            " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
            " WHERE k.user_id = ?"
        )
        args: list = [user_id]
        if device_ids is not None:
            ids = list(device_ids)
            if not ids:
                return {}
            sql += f" AND k.device_id IN ({_placeholders(len(ids))})"
            args += ids
        return {
            r["device_id"]: (_loads(r["key_json"]), r["display_name"])
            for r in self.db.read(sql, args)
        }

    def get_device_keys_one(self, user_id: str, device_id: str) -> dict | None:
        row = self.db.read_one(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        )
        return _loads(row["key_json"]) if row else None

    @staticmethod
    def get_device_keys_in(conn: sqlite3.Connection, user_id: str, device_id: str) -> dict | None:
        row = conn.execute(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        ).fetchone()
        return _loads(row[0]) if row else None

    @staticmethod
    def set_device_keys_in(
        conn: sqlite3.Connection, user_id: str, device_id: str, keys: dict, now_ms: int
    ) -> None:
        conn.execute(
            "INSERT INTO e2e_device_keys (user_id, device_id, key_json, ts) VALUES (?,?,?,?)",
            (user_id, device_id, _dumps(keys), now_ms),
        )

    # device_exists_in / device_ids_in: see AccountsStore (devices belong to accounts).

    # -- one-time and fallback keys ---------------------------------------------------------
    @staticmethod
    def get_one_time_key_in(
        conn: sqlite3.Connection, user_id: str, device_id: str, algorithm: str, key_id: str
    ) -> dict | str | None:
        row = conn.execute(
            "SELECT key_json FROM e2e_one_time_keys"
            " WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ?",
            (user_id, device_id, algorithm, key_id),
        ).fetchone()
        return _loads(row[0]) if row else None

    @staticmethod
    def add_one_time_key_in(
        conn: sqlite3.Connection, user_id: str, device_id: str, algorithm: str, key_id: str,
        key: object,
    ) -> None:  # fmt: skip
        conn.execute(
            "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)"
            " VALUES (?,?,?,?,?)",
            (user_id, device_id, algorithm, key_id, _dumps(key)),
        )

    def count_one_time_keys(self, user_id: str, device_id: str) -> dict[str, int]:
        rows = self.db.read(
            "SELECT algorithm, COUNT(*) AS n FROM e2e_one_time_keys"
            " WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
            (user_id, device_id),
        )
        return {r["algorithm"]: r["n"] for r in rows}

    @staticmethod
    def count_one_time_keys_in(conn: sqlite3.Connection, user_id: str, device_id: str) -> dict:
        rows = conn.execute(
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys"
            " WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
            (user_id, device_id),
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    @staticmethod
    def claim_one_time_key_in(
        conn: sqlite3.Connection, user_id: str, device_id: str, algorithm: str
    ) -> tuple[str, object, bool] | None:
        """Take the oldest one-time key (deleting it), else the fallback key (marking it used).
        Returns (key_id, key, is_fallback) or None."""
        row = conn.execute(
            "SELECT seq, key_id, key_json FROM e2e_one_time_keys"
            " WHERE user_id = ? AND device_id = ? AND algorithm = ? ORDER BY seq LIMIT 1",
            (user_id, device_id, algorithm),
        ).fetchone()
        if row is not None:
            conn.execute("DELETE FROM e2e_one_time_keys WHERE seq = ?", (row[0],))
            return row[1], _loads(row[2]), False
        row = conn.execute(
            "SELECT key_id, key_json FROM e2e_fallback_keys"
            " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
            (user_id, device_id, algorithm),
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE e2e_fallback_keys SET used = 1"
            " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
            (user_id, device_id, algorithm),
        )
        return row[0], _loads(row[1]), True

    @staticmethod
    def get_fallback_key_in(
        conn: sqlite3.Connection, user_id: str, device_id: str, algorithm: str
    ) -> tuple[str, object] | None:
        row = conn.execute(
            "SELECT key_id, key_json FROM e2e_fallback_keys"
            " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
            (user_id, device_id, algorithm),
        ).fetchone()
        return (row[0], _loads(row[1])) if row else None

    @staticmethod
    def set_fallback_key_in(
        conn: sqlite3.Connection, user_id: str, device_id: str, algorithm: str, key_id: str,
        key: object,
    ) -> None:  # fmt: skip
        conn.execute(
            "INSERT OR REPLACE INTO e2e_fallback_keys"
            " (user_id, device_id, algorithm, key_id, key_json, used) VALUES (?,?,?,?,?,0)",
            (user_id, device_id, algorithm, key_id, _dumps(key)),
        )

    def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        rows = self.db.read(
            "SELECT algorithm FROM e2e_fallback_keys"
            " WHERE user_id = ? AND device_id = ? AND used = 0 ORDER BY algorithm",
            (user_id, device_id),
        )
        return [r["algorithm"] for r in rows]

    # -- cross-signing keys and signatures --------------------------------------------------
    def get_cross_signing_keys(self, user_id: str) -> dict[str, dict]:
        """{key_type: key object as uploaded}."""
        rows = self.db.read(
            "SELECT key_type, key_json FROM e2e_cross_signing_keys WHERE user_id = ?", (user_id,)
        )
        return {r["key_type"]: _loads(r["key_json"]) for r in rows}

    @staticmethod
    def get_cross_signing_keys_in(conn: sqlite3.Connection, user_id: str) -> dict[str, dict]:
        rows = conn.execute(
            "SELECT key_type, key_json FROM e2e_cross_signing_keys WHERE user_id = ?", (user_id,)
        ).fetchall()
        return {r[0]: _loads(r[1]) for r in rows}

    @staticmethod
    def set_cross_signing_key_in(
        conn: sqlite3.Connection, user_id: str, key_type: str, public_key: str, key: dict,
        stream_pos: int,
    ) -> str | None:  # fmt: skip
        """Store a cross-signing key; returns the public key it replaced (if any)."""
        old = conn.execute(
            "SELECT public_key FROM e2e_cross_signing_keys WHERE user_id = ? AND key_type = ?",
            (user_id, key_type),
        ).fetchone()
        conn.execute(
            "INSERT OR REPLACE INTO e2e_cross_signing_keys"
            " (user_id, key_type, public_key, key_json, stream_pos) VALUES (?,?,?,?,?)",
            (user_id, key_type, public_key, _dumps(key), stream_pos),
        )
        return old[0] if old else None

    def get_signatures(self, target_user_id: str, target_key_ids: Iterable[str]) -> dict:
        """{target_key_id: [(signer_user_id, signer_key_id, signature)]}."""
        ids = list(target_key_ids)
        if not ids:
            return {}
        rows = self.db.read(
            "SELECT target_key_id, signer_user_id, signer_key_id, signature FROM e2e_signatures"
            f" WHERE target_user_id = ? AND target_key_id IN ({_placeholders(len(ids))})",
            [target_user_id, *ids],
        )
        out: dict[str, list] = {}
        for r in rows:
            out.setdefault(r["target_key_id"], []).append(
                (r["signer_user_id"], r["signer_key_id"], r["signature"])
            )
        return out

    @staticmethod
    def add_signature_in(
        conn: sqlite3.Connection, target_user_id: str, target_key_id: str, signer_user_id: str,
        signer_key_id: str, signature: str,
    ) -> None:  # fmt: skip
        conn.execute(
            "INSERT OR REPLACE INTO e2e_signatures (target_user_id, target_key_id,"
            " signer_user_id, signer_key_id, signature) VALUES (?,?,?,?,?)",
            (target_user_id, target_key_id, signer_user_id, signer_key_id, signature),
        )

    @staticmethod
    def delete_signatures_by_signer_in(
        conn: sqlite3.Connection, signer_user_id: str, signer_key_id: str
    ) -> None:
        conn.execute(
            "DELETE FROM e2e_signatures WHERE signer_user_id = ? AND signer_key_id = ?",
            (signer_user_id, signer_key_id),
        )

    @staticmethod
    def delete_signatures_on_in(
        conn: sqlite3.Connection, target_user_id: str, target_key_id: str
    ) -> None:
        conn.execute(
            "DELETE FROM e2e_signatures WHERE target_user_id = ? AND target_key_id = ?",
            (target_user_id, target_key_id),
        )

    # -- device-list changes ----------------------------------------------------------------
    def add_device_list_change_in(self, conn: sqlite3.Connection, user_id: str) -> int:
        pos = self.next_stream_pos(conn)
        conn.execute(
            "INSERT INTO e2e_device_list_changes (stream_pos, user_id) VALUES (?,?)", (pos, user_id)
        )
        return pos

    def device_list_changes(self, since_pos: int, upto_pos: int) -> set[str]:
        rows = self.db.read(
            "SELECT DISTINCT user_id FROM e2e_device_list_changes"
            " WHERE stream_pos > ? AND stream_pos <= ?",
            (since_pos, upto_pos),
        )
        return {r["user_id"] for r in rows}

    # -- to-device inbox --------------------------------------------------------------------
    @staticmethod
    def to_device_txn_seen_in(
        conn: sqlite3.Connection, user_id: str, device_id: str, txn_id: str, now_ms: int
    ) -> bool:
        """Record the transaction; True if it had been seen before."""
        cur = conn.execute(
            "INSERT OR IGNORE INTO to_device_txns (user_id, device_id, txn_id, ts) VALUES (?,?,?,?)",
            (user_id, device_id, txn_id, now_ms),
        )
        return cur.rowcount == 0

    def add_to_device_in(
        self, conn: sqlite3.Connection, user_id: str, device_id: str, sender: str, type_: str,
        content: dict,
    ) -> int:  # fmt: skip
        pos = self.next_stream_pos(conn)
        conn.execute(
            "INSERT INTO device_inbox (stream_pos, user_id, device_id, sender, type, content_json)"
            " VALUES (?,?,?,?,?,?)",
            (pos, user_id, device_id, sender, type_, _dumps(content)),
        )
        conn.execute(
            "INSERT INTO device_inbox_top (k, stream_pos) VALUES (1, ?)"
            " ON CONFLICT (k) DO UPDATE SET stream_pos = excluded.stream_pos",
            (pos,),
        )
        return pos

    def get_to_device(
        self, user_id: str, device_id: str, after_pos: int, upto_pos: int, limit: int
    ) -> list[tuple[int, dict]]:
        rows = self.db.read(
            "SELECT stream_pos, sender, type, content_json FROM device_inbox"
            " WHERE user_id = ? AND device_id = ? AND stream_pos > ? AND stream_pos <= ?"
            " ORDER BY stream_pos LIMIT ?",
            (user_id, device_id, after_pos, upto_pos, limit),
        )
        return [
            (
                r["stream_pos"],
                {"sender": r["sender"], "type": r["type"], "content": _loads(r["content_json"])},
            )
            for r in rows
        ]

    def has_to_device_upto(self, user_id: str, device_id: str, upto_pos: int) -> bool:
        return (
            self.db.read_one(
                "SELECT 1 FROM device_inbox WHERE user_id = ? AND device_id = ?"
                " AND stream_pos <= ? LIMIT 1",
                (user_id, device_id, upto_pos),
            )
            is not None
        )

    @staticmethod
    def delete_to_device_upto_in(
        conn: sqlite3.Connection, user_id: str, device_id: str, upto_pos: int, token_pos: int
    ) -> int:
        """Delete acknowledged messages (position <= upto_pos) and cursors older than token_pos."""
        cur = conn.execute(
            "DELETE FROM device_inbox WHERE user_id = ? AND device_id = ? AND stream_pos <= ?",
            (user_id, device_id, upto_pos),
        )
        conn.execute(
            "DELETE FROM device_inbox_cursors WHERE user_id = ? AND device_id = ? AND token_pos < ?",
            (user_id, device_id, token_pos),
        )
        return cur.rowcount

    def get_inbox_cursor(self, user_id: str, device_id: str, token_pos: int) -> int | None:
        row = self.db.read_one(
            "SELECT last_pos FROM device_inbox_cursors"
            " WHERE user_id = ? AND device_id = ? AND token_pos = ?",
            (user_id, device_id, token_pos),
        )
        return row["last_pos"] if row else None

    def set_inbox_cursor_in(
        self, conn: sqlite3.Connection, user_id: str, device_id: str, token_pos: int,
        last_pos: int,
    ) -> int:  # fmt: skip
        """Record a truncated delivery; takes a new stream position so the next sync moves on."""
        pos = self.next_stream_pos(conn)
        conn.execute(
            "INSERT OR REPLACE INTO device_inbox_cursors"
            " (user_id, device_id, token_pos, last_pos, stream_pos) VALUES (?,?,?,?,?)",
            (user_id, device_id, token_pos, last_pos, pos),
        )
        return pos

    # -- device removal ---------------------------------------------------------------------
    @staticmethod
    def delete_device_e2e_in(conn: sqlite3.Connection, user_id: str, device_id: str) -> bool:
        """Remove a device's keys, one-time/fallback keys, signatures on it and pending
        to-device messages. True if it had uploaded device keys."""
        had_keys = (
            conn.execute(
                "DELETE FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
                (user_id, device_id),
            ).rowcount
            > 0
        )
        for table in (
            "e2e_one_time_keys",
            "e2e_fallback_keys",
            "device_inbox",
            "device_inbox_cursors",
            "to_device_txns",
        ):
            conn.execute(
                f"DELETE FROM {table} WHERE user_id = ? AND device_id = ?",  # noqa: S608
                (user_id, device_id),
            )
        conn.execute(
            "DELETE FROM e2e_signatures WHERE target_user_id = ? AND target_key_id = ?",
            (user_id, device_id),
        )
        conn.execute(
            "DELETE FROM e2e_signatures WHERE signer_user_id = ? AND signer_key_id = ?",
            (user_id, f"ed25519:{device_id}"),
        )
        return had_keys

    # -- key backup -------------------------------------------------------------------------
    def get_backup_version(self, user_id: str, version: int | None = None):
        """The current (latest undeleted) backup, or the named undeleted one."""
        if version is None:
            return self.db.read_one(
                "SELECT * FROM e2e_backup_versions WHERE user_id = ? AND deleted = 0"
                " ORDER BY version DESC LIMIT 1",
                (user_id,),
            )
        return self.db.read_one(
            "SELECT * FROM e2e_backup_versions WHERE user_id = ? AND version = ? AND deleted = 0",
            (user_id, version),
        )

    @staticmethod
    def current_backup_version_in(conn: sqlite3.Connection, user_id: str) -> sqlite3.Row | None:
        return conn.execute(
            "SELECT * FROM e2e_backup_versions WHERE user_id = ? AND deleted = 0"
            " ORDER BY version DESC LIMIT 1",
            (user_id,),
        ).fetchone()

    @staticmethod
    def backup_version_in(
        conn: sqlite3.Connection, user_id: str, version: int
    ) -> sqlite3.Row | None:
        return conn.execute(
            "SELECT * FROM e2e_backup_versions WHERE user_id = ? AND version = ?",
            (user_id, version),
        ).fetchone()

    @staticmethod
    def create_backup_version_in(
        conn: sqlite3.Connection, user_id: str, algorithm: str, auth_data: dict
    ) -> int:
        row = conn.execute(
            "SELECT MAX(version) FROM e2e_backup_versions WHERE user_id = ?", (user_id,)
        ).fetchone()
        version = (row[0] or 0) + 1
        conn.execute(
            "INSERT INTO e2e_backup_versions (user_id, version, algorithm, auth_data)"
            " VALUES (?,?,?,?)",
            (user_id, version, algorithm, _dumps(auth_data)),
        )
        return version

    @staticmethod
    def update_backup_auth_data_in(
        conn: sqlite3.Connection, user_id: str, version: int, auth_data: dict
    ) -> None:
        conn.execute(
            "UPDATE e2e_backup_versions SET auth_data = ? WHERE user_id = ? AND version = ?",
            (_dumps(auth_data), user_id, version),
        )

    @staticmethod
    def delete_backup_version_in(conn: sqlite3.Connection, user_id: str, version: int) -> None:
        conn.execute(
            "UPDATE e2e_backup_versions SET deleted = 1 WHERE user_id = ? AND version = ?",
            (user_id, version),
        )
        conn.execute(
            "DELETE FROM e2e_backup_keys WHERE user_id = ? AND version = ?", (user_id, version)
        )

    @staticmethod
    def bump_backup_etag_in(conn: sqlite3.Connection, user_id: str, version: int) -> None:
        conn.execute(
            "UPDATE e2e_backup_versions SET etag = etag + 1 WHERE user_id = ? AND version = ?",
            (user_id, version),
        )

    def count_backup_keys(self, user_id: str, version: int) -> int:
        row = self.db.read_one(
            "SELECT COUNT(*) AS n FROM e2e_backup_keys WHERE user_id = ? AND version = ?",
            (user_id, version),
        )
        return row["n"] if row else 0

    @staticmethod
    def count_backup_keys_in(conn: sqlite3.Connection, user_id: str, version: int) -> int:
        return conn.execute(
            "SELECT COUNT(*) FROM e2e_backup_keys WHERE user_id = ? AND version = ?",
            (user_id, version),
        ).fetchone()[0]

    @staticmethod
    def get_backup_key_in(
        conn: sqlite3.Connection, user_id: str, version: int, room_id: str, session_id: str
    ) -> sqlite3.Row | None:
        return conn.execute(
            "SELECT * FROM e2e_backup_keys"
            " WHERE user_id = ? AND version = ? AND room_id = ? AND session_id = ?",
            (user_id, version, room_id, session_id),
        ).fetchone()

    @staticmethod
    def put_backup_key_in(
        conn: sqlite3.Connection, user_id: str, version: int, room_id: str, session_id: str,
        key: dict,
    ) -> None:  # fmt: skip
        conn.execute(
            "INSERT OR REPLACE INTO e2e_backup_keys (user_id, version, room_id, session_id,"
            " first_message_index, forwarded_count, is_verified, session_data)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (
                user_id, version, room_id, session_id, key["first_message_index"],
                key["forwarded_count"], int(key["is_verified"]), _dumps(key["session_data"]),
            ),
        )  # fmt: skip

    def get_backup_keys(
        self, user_id: str, version: int, room_id: str | None = None,
        session_id: str | None = None,
    ) -> dict:  # fmt: skip
        """{room_id: {session_id: KeyBackupData}}."""
        where, args = _backup_keys_filter(user_id, version, room_id, session_id)
        out: dict[str, dict] = {}
        for r in self.db.read("SELECT * FROM e2e_backup_keys" + where, args):
            out.setdefault(r["room_id"], {})[r["session_id"]] = {
                "first_message_index": r["first_message_index"],
                "forwarded_count": r["forwarded_count"],
                "is_verified": bool(r["is_verified"]),
                "session_data": _loads(r["session_data"]),
            }
        return out

    @staticmethod
    def delete_backup_keys_in(
        conn: sqlite3.Connection, user_id: str, version: int, room_id: str | None = None,
        session_id: str | None = None,
    ) -> int:  # fmt: skip
        where, args = _backup_keys_filter(user_id, version, room_id, session_id)
        return conn.execute("DELETE FROM e2e_backup_keys" + where, args).rowcount
