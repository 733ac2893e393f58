"""OpenID tokens (C-S API "OpenID", S-S API "OpenID"), table ``openid_tokens`` (migration 0013).

Kept as the SHA-256 of the token (:func:`bastion.storage.sqlite.accounts.token_hash`), like access
tokens: a copy of the database gives no token anyone could present."""

from __future__ import annotations

import sqlite3

from bastion.storage.sqlite.accounts import token_hash
from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []


class OpenIdStore(StoreBase):
    def get_openid_token(self, token: str) -> tuple[str, int, bool] | None:
        """(user ID, expiry in ms, whether the account may still use it) of a token, or None
        when no such token is stored. An account that is deactivated or locked may not."""
        row = self.db.read_one(
            "SELECT t.user_id, t.expires_ts, u.deactivated, u.locked FROM openid_tokens t"
            " LEFT JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = ?",
            (token_hash(token),),
        )
        if row is None:
            return None
        usable = row["deactivated"] == 0 and row["locked"] == 0
        return row["user_id"], int(row["expires_ts"]), usable

    @staticmethod
    def add_openid_token_in(
        conn: sqlite3.Connection, token: str, user_id: str, expires_ts: int
    ) -> None:
        conn.execute(
            "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES (?,?,?)",
            (token_hash(token), user_id, expires_ts),
        )

    @staticmethod
    def delete_openid_token_in(conn: sqlite3.Connection, token: str) -> bool:
        cur = conn.execute("DELETE FROM openid_tokens WHERE token_hash = ?", (token_hash(token),))
        return cur.rowcount > 0

    @staticmethod
    def delete_expired_openid_tokens_in(conn: sqlite3.Connection, now_ms: int, limit: int) -> int:
        """Delete at most ``limit`` tokens expired at ``now_ms``, the oldest first."""
        cur = conn.execute(
            "DELETE FROM openid_tokens WHERE token_hash IN (SELECT token_hash FROM openid_tokens"
            " WHERE expires_ts <= ? ORDER BY expires_ts LIMIT ?)",
            (now_ms, limit),
        )
        return cur.rowcount

    @staticmethod
    def delete_user_openid_tokens_in(conn: sqlite3.Connection, user_id: str) -> int:
        """Delete every token of a user (deactivation, erasure)."""
        return conn.execute("DELETE FROM openid_tokens WHERE user_id = ?", (user_id,)).rowcount

    def openid_token_count(self, user_id: str | None = None) -> int:
        """Tokens stored (of one user, or all), expired ones included (tests, admin)."""
        if user_id is None:
            row = self.db.read_one("SELECT COUNT(*) FROM openid_tokens")
        else:
            row = self.db.read_one(
                "SELECT COUNT(*) FROM openid_tokens WHERE user_id = ?", (user_id,)
            )
        return int(row[0]) if row is not None else 0
