"""Accounts: users, devices, access tokens, registration tokens (C-S API "Client Authentication",
"Account registration and management", "Device Management")."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    created_ts INTEGER NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    deactivated INTEGER NOT NULL DEFAULT 0,
    locked INTEGER NOT NULL DEFAULT 0,
    suspended INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts INTEGER,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);
-- Access tokens are stored as SHA-256 hashes: a copy of the database yields no usable token.
CREATE TABLE IF NOT EXISTS access_tokens (
    token_hash BLOB PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS access_tokens_device ON access_tokens (user_id, device_id);
CREATE TABLE IF NOT EXISTS registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed INTEGER,
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_ts INTEGER,
    created_ts INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
-- Every admin action, with who, what, on what, when and details (never secrets).
CREATE TABLE IF NOT EXISTS admin_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    details TEXT NOT NULL
);
"""
STREAMS: list[tuple[str, str]] = []


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class Requester:
    """Who made an authenticated request."""

    user_id: str
    device_id: str
    is_admin: bool = False
    is_guest: bool = False


class AccountsStore:
    db: object  # Database, set by SqliteStore

    # -- users ----------------------------------------------------------------------------
    def get_user(self, user_id: str) -> sqlite3.Row | None:
        return self.db.read_one("SELECT * FROM users WHERE user_id = ?", (user_id,))

    def user_exists(self, user_id: str) -> bool:
        return self.get_user(user_id) is not None

    async def create_user(
        self, user_id: str, password_hash: str | None, now_ms: int, is_admin: bool = False
    ) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO users (user_id, password_hash, created_ts, is_admin) VALUES (?,?,?,?)",
                (user_id, password_hash, now_ms, int(is_admin)),
            )

        await self.db.write(fn)

    # -- devices and access tokens --------------------------------------------------------
    def get_requester(self, token: str) -> Requester | None:
        row = self.db.read_one(
            "SELECT t.user_id, t.device_id, u.is_admin, u.deactivated, u.locked, u.suspended"
            " FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = ?",
            (token_hash(token),),
        )
        if row is None or row["deactivated"]:
            return None
        return Requester(row["user_id"], row["device_id"], bool(row["is_admin"]))

    def account_flags(self, user_id: str) -> tuple[bool, bool]:
        """(locked, suspended) for account moderation checks."""
        row = self.db.read_one("SELECT locked, suspended FROM users WHERE user_id = ?", (user_id,))
        return (bool(row["locked"]), bool(row["suspended"])) if row else (False, False)

    def add_device_sync(
        self, conn: sqlite3.Connection, user_id: str, device_id: str, display_name: str | None,
        token: str, now_ms: int,
    ) -> bool:  # fmt: skip
        """Create (or reuse) a device and attach a new access token. Returns True if the device
        is new. Runs inside a write function."""
        cur = conn.execute(
            "INSERT OR IGNORE INTO devices (user_id, device_id, display_name, last_seen_ts)"
            " VALUES (?,?,?,?)",
            (user_id, device_id, display_name, now_ms),
        )
        conn.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES (?,?,?,?)",
            (token_hash(token), user_id, device_id, now_ms),
        )
        return cur.rowcount == 1

    def get_devices(self, user_id: str) -> list[sqlite3.Row]:
        return self.db.read(
            "SELECT * FROM devices WHERE user_id = ? ORDER BY device_id", (user_id,)
        )

    def get_device(self, user_id: str, device_id: str) -> sqlite3.Row | None:
        return self.db.read_one(
            "SELECT * FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        )

    # -- admin audit ----------------------------------------------------------------------
    @staticmethod
    def record_admin_action_in(
        conn: sqlite3.Connection,
        actor: str,
        action: str,
        target: str | None,
        details: dict,
        now_ms: int,
    ) -> None:
        """Append an admin action to the audit trail (inside a write function)."""
        conn.execute(
            "INSERT INTO admin_audit (ts, actor, action, target, details) VALUES (?,?,?,?,?)",
            (now_ms, actor, action, target, json.dumps(details, sort_keys=True)),
        )

    def record_admin_action_sync(
        self, actor: str, action: str, target: str | None, details: dict, now_ms: int
    ) -> None:
        self.db.write_sync(
            lambda conn: self.record_admin_action_in(conn, actor, action, target, details, now_ms)
        )

    def admin_audit_log(self, limit: int = 100) -> list[sqlite3.Row]:
        return self.db.read("SELECT * FROM admin_audit ORDER BY id DESC LIMIT ?", (limit,))
