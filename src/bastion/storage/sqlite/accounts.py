"""Accounts: users, devices, access tokens, registration tokens, profiles and the admin audit
trail (C-S API "Client Authentication", "Account registration and management", "Device
Management", "Profiles", "Server administration").

Secrets are never stored in the clear: access tokens and registration tokens are kept as
SHA-256 hashes (they are long random strings, so a fast hash is enough), passwords as argon2id
hashes made by :class:`bastion.services.passwords.Passwords`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3

from bastion.storage.interface import Requester, TokenExpired
from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class RequesterCache:
    """What an access token resolves to, remembered (by the token's hash, never the token)
    together with the account's moderation flags, valid while the database's
    ``auth_generation`` counter (migration 0011) has not moved. Every change that revokes or
    restricts a token moves that counter, by trigger, whoever writes it; the counter is read at
    each request (one small row), so a revoked token is refused at the very next request, and a
    request costs one read instead of a join across two tables (which, with encryption at rest,
    means several page decryptions after every write). Bounded: emptied when full.

    A token's expiry (``expires_ts``, migration 0015) is a matter of time, which no write and
    so no trigger marks: it is remembered with the requester and compared with the caller's
    clock on every hit."""

    #: The most tokens remembered (about 200 bytes each).
    MAX_ENTRIES = 50_000

    def __init__(self) -> None:
        self.generation: int | None = None
        self.requesters: dict[bytes, tuple[Requester, bool, bool, int | None]] = {}
        self.flags: dict[str, tuple[bool, bool]] = {}

    def valid_for(self, generation: int) -> None:
        """Forget everything learnt under another generation."""
        if generation != self.generation:
            self.requesters.clear()
            self.flags.clear()
            self.generation = generation

    def remember(
        self, key: bytes, requester: Requester, locked: bool, suspended: bool,
        expires_ts: int | None = None,
    ) -> None:  # fmt: skip
        if len(self.requesters) >= self.MAX_ENTRIES:
            self.requesters.clear()
            self.flags.clear()
        self.requesters[key] = (requester, locked, suspended, expires_ts)
        self.flags[requester.user_id] = (locked, suspended)


class AccountsStore(StoreBase):
    # -- users ----------------------------------------------------------------------------
    def get_user(self, user_id: str) -> sqlite3.Row | None:
        return self.db.read_one("SELECT * FROM users WHERE user_id = ?", (user_id,))

    def user_exists(self, user_id: str) -> bool:
        """True if the user ID is taken (deactivated accounts keep their ID forever)."""
        return self.get_user(user_id) is not None

    @staticmethod
    def create_user_in(
        conn: sqlite3.Connection, user_id: str, password_hash: str | None, now_ms: int,
        is_admin: bool = False, displayname: str | None = None,
    ) -> bool:  # fmt: skip
        """Insert a user (and its initial display name). False if the ID is taken."""
        cur = conn.execute(
            "INSERT OR IGNORE INTO users (user_id, password_hash, created_ts, is_admin)"
            " VALUES (?,?,?,?)",
            (user_id, password_hash, now_ms, int(is_admin)),
        )
        if cur.rowcount != 1:
            return False
        if displayname is not None:
            conn.execute(
                "INSERT OR REPLACE INTO profiles (user_id, key, value) VALUES (?,?,?)",
                (user_id, "displayname", json.dumps(displayname)),
            )
        return True

    async def create_user(
        self, user_id: str, password_hash: str | None, now_ms: int, is_admin: bool = False
    ) -> bool:
        return await self.db.write(
            lambda conn: self.create_user_in(conn, user_id, password_hash, now_ms, is_admin)
        )

    @staticmethod
    def set_password_hash_in(conn: sqlite3.Connection, user_id: str, password_hash: str) -> None:
        conn.execute(
            "UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id)
        )

    @staticmethod
    def set_user_flag_in(conn: sqlite3.Connection, user_id: str, flag: str, value: bool) -> None:
        """Set ``locked``, ``suspended``, ``deactivated`` or ``is_admin``."""
        if flag not in ("locked", "suspended", "deactivated", "is_admin"):
            raise ValueError(flag)
        conn.execute(f"UPDATE users SET {flag} = ? WHERE user_id = ?", (int(value), user_id))  # noqa: S608

    @staticmethod
    def deactivate_user_in(conn: sqlite3.Connection, user_id: str) -> None:
        """Mark deactivated, forget the password and clear the profile; delete its access and
        OpenID tokens. Devices are removed by the caller (device by device, so that the E2EE
        hook runs for each)."""
        conn.execute(
            "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = ?", (user_id,)
        )
        conn.execute("DELETE FROM profiles WHERE user_id = ?", (user_id,))
        conn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
        conn.execute("DELETE FROM refresh_tokens WHERE user_id = ?", (user_id,))
        conn.execute("DELETE FROM login_tokens WHERE user_id = ?", (user_id,))
        # Its OpenID tokens (migration 0013) vouch for it no longer.
        conn.execute("DELETE FROM openid_tokens WHERE user_id = ?", (user_id,))
        # Its pushers (migration 0016): a deactivated account is pushed to no more.
        conn.execute("DELETE FROM pushers WHERE user_id = ?", (user_id,))

    # -- devices and access tokens --------------------------------------------------------
    def _auth_generation(self) -> int:
        row = self.db.read_one("SELECT n FROM auth_generation WHERE k = 1")
        return int(row[0]) if row is not None else 0

    def get_requester(self, token: str, now_ms: int) -> Requester | None:
        """The user and device of an access token (None: unknown, revoked, expired at
        ``now_ms``, or its account deactivated)."""
        try:
            found = self.check_access_token(token, now_ms)
        except TokenExpired:
            return None
        return None if found is None else found[0]

    def authenticate_token(self, token: str, now_ms: int) -> tuple[Requester, bool, bool] | None:
        """The requester of an access token with its account's (locked, suspended) flags (see
        :meth:`check_access_token`; raises :class:`TokenExpired`)."""
        found = self.check_access_token(token, now_ms)
        return None if found is None else found[:3]

    def check_access_token(
        self, token: str, now_ms: int
    ) -> tuple[Requester, bool, bool, bool] | None:
        """The requester of an access token with its account's (locked, suspended) flags, in
        one lookup (None: unknown, revoked, or its account deactivated); from
        :class:`RequesterCache` while no revocation has happened since it was learnt. Raises
        :class:`TokenExpired` when the token's lifetime is over at ``now_ms`` (the caller's
        clock: the store never reads one), cached or not. The fourth value is True at the first
        use of an access token issued by ``POST /refresh`` whose predecessor refresh token is
        still kept: the caller retires it (:meth:`retire_refreshed_in`); such an answer is not
        remembered, so the next request looks again."""
        cache = self.requester_cache
        # The counter is read first: a revocation committed after this read and before the
        # lookup below is seen by the lookup, one committed after it moves the counter.
        cache.valid_for(self._auth_generation())
        key = token_hash(token)
        hit = cache.requesters.get(key)
        if hit is not None:
            requester, locked, suspended, expires_ts = hit
            if expires_ts is not None and now_ms >= expires_ts:
                raise TokenExpired
            return requester, locked, suspended, False
        row = self.db.read_one(
            "SELECT t.user_id, t.device_id, t.expires_ts, u.is_admin, u.deactivated, u.locked,"
            " u.suspended, t.expires_ts IS NOT NULL AND EXISTS (SELECT 1 FROM refresh_tokens r"
            " WHERE r.next_access_hash = t.token_hash) AS first_use"
            " FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = ?",
            (key,),
        )
        if row is None or row["deactivated"]:
            return None
        requester = Requester(row["user_id"], row["device_id"], bool(row["is_admin"]))
        locked, suspended = bool(row["locked"]), bool(row["suspended"])
        expires_ts = row["expires_ts"]
        if expires_ts is not None and now_ms >= expires_ts:
            raise TokenExpired
        if row["first_use"]:
            return requester, locked, suspended, True
        cache.remember(key, requester, locked, suspended, expires_ts)
        return requester, locked, suspended, False

    def account_flags(self, user_id: str) -> tuple[bool, bool]:
        """(locked, suspended) for account moderation checks (remembered with a token's
        requester under the same generation, see :meth:`get_requester`)."""
        cache = self.requester_cache
        cache.valid_for(self._auth_generation())
        flags = cache.flags.get(user_id)
        if flags is not None:
            return flags
        row = self.db.read_one("SELECT locked, suspended FROM users WHERE user_id = ?", (user_id,))
        return (bool(row["locked"]), bool(row["suspended"])) if row else (False, False)

    def add_device_sync(
        self, conn: sqlite3.Connection, user_id: str, device_id: str, display_name: str | None,
        token: str, now_ms: int, ip: str | None = None, expires_ts: int | None = None,
    ) -> bool:  # fmt: skip
        """Create (or reuse) a device and attach a new access token (``expires_ts``: when it
        stops being accepted, None: never). Returns True if the device is new. Runs inside a
        write function."""
        cur = conn.execute(
            "INSERT OR IGNORE INTO devices (user_id, device_id, display_name, last_seen_ts,"
            " last_seen_ip) VALUES (?,?,?,?,?)",
            (user_id, device_id, display_name, now_ms, ip),
        )
        if cur.rowcount != 1:
            conn.execute(
                "UPDATE devices SET last_seen_ts = ?, last_seen_ip = COALESCE(?, last_seen_ip)"
                " WHERE user_id = ? AND device_id = ?",
                (now_ms, ip, user_id, device_id),
            )
        conn.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts)"
            " VALUES (?,?,?,?,?)",
            (token_hash(token), user_id, device_id, now_ms, expires_ts),
        )
        return cur.rowcount == 1

    # -- refresh tokens (migration 0015) --------------------------------------------------
    @staticmethod
    def add_refresh_token_in(
        conn: sqlite3.Connection, token: str, user_id: str, device_id: str, access_token: str,
        now_ms: int,
    ) -> None:  # fmt: skip
        """Store a refresh token issued together with ``access_token`` (by login or
        registration; :meth:`rotate_refresh_token_in` for POST /refresh)."""
        conn.execute(
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id, access_hash, created_ts)"
            " VALUES (?,?,?,?,?)",
            (token_hash(token), user_id, device_id, token_hash(access_token), now_ms),
        )

    @staticmethod
    def rotate_refresh_token_in(
        conn: sqlite3.Connection, token: str, access_token: str, refresh_token: str,
        expires_ts: int, now_ms: int,
    ) -> tuple[str, str] | None:  # fmt: skip
        """POST /refresh with ``token``: the (user, device) it belongs to, after revoking the
        access token issued with it and issuing ``access_token`` (expiring at ``expires_ts``)
        and ``refresh_token`` in its place; None (nothing written) when ``token`` is unknown or
        already retired, or its account deactivated or its device gone.

        ``token`` itself stays until the new pair is first used (the spec: a client that lost
        the answer may refresh again); refreshing with it again revokes the pair issued before,
        which the client never used. Using it retires its own predecessor, if still kept."""
        key = token_hash(token)
        row = conn.execute(
            "SELECT r.user_id, r.device_id, r.access_hash, r.next_hash, r.next_access_hash"
            " FROM refresh_tokens r JOIN users u ON u.user_id = r.user_id"
            " JOIN devices d ON d.user_id = r.user_id AND d.device_id = r.device_id"
            " WHERE r.token_hash = ? AND u.deactivated = 0",
            (key,),
        ).fetchone()
        if row is None:
            return None
        user_id, device_id, access_hash, next_hash, next_access_hash = row
        if next_hash is not None:  # a pair issued before and never used
            conn.execute("DELETE FROM refresh_tokens WHERE token_hash = ?", (next_hash,))
            conn.execute("DELETE FROM access_tokens WHERE token_hash = ?", (next_access_hash,))
        conn.execute("DELETE FROM access_tokens WHERE token_hash = ?", (access_hash,))
        # This token's own predecessor: its successor (this one) has now been used.
        conn.execute("DELETE FROM refresh_tokens WHERE next_access_hash = ?", (access_hash,))
        new_access, new_refresh = token_hash(access_token), token_hash(refresh_token)
        conn.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts)"
            " VALUES (?,?,?,?,?)",
            (new_access, user_id, device_id, now_ms, expires_ts),
        )
        conn.execute(
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id, access_hash, created_ts)"
            " VALUES (?,?,?,?,?)",
            (new_refresh, user_id, device_id, new_access, now_ms),
        )
        conn.execute(
            "UPDATE refresh_tokens SET next_hash = ?, next_access_hash = ? WHERE token_hash = ?",
            (new_refresh, new_access, key),
        )
        return user_id, device_id

    @staticmethod
    def retire_refreshed_in(conn: sqlite3.Connection, access_token: str) -> int:
        """The first use of ``access_token``, issued by POST /refresh: the refresh token it
        replaced is no longer valid (C-S API "Refreshing access tokens")."""
        return conn.execute(
            "DELETE FROM refresh_tokens WHERE next_access_hash = ?", (token_hash(access_token),)
        ).rowcount

    # -- login tokens (POST /login/get_token, migration 0015) ------------------------------
    @staticmethod
    def add_login_token_in(
        conn: sqlite3.Connection, token: str, user_id: str, expires_ts: int, now_ms: int,
        sweep: int = 100,
    ) -> None:  # fmt: skip
        """Store a single-use login token; first delete up to ``sweep`` expired ones."""
        conn.execute(
            "DELETE FROM login_tokens WHERE token_hash IN (SELECT token_hash FROM login_tokens"
            " WHERE expires_ts <= ? ORDER BY expires_ts LIMIT ?)",
            (now_ms, sweep),
        )
        conn.execute(
            "INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES (?,?,?)",
            (token_hash(token), user_id, expires_ts),
        )

    @staticmethod
    def take_login_token_in(conn: sqlite3.Connection, token: str, now_ms: int) -> str | None:
        """The user a login token signs in (None: unknown, used or expired at ``now_ms``);
        the token is deleted either way: it serves once."""
        key = token_hash(token)
        row = conn.execute(
            "SELECT user_id, expires_ts FROM login_tokens WHERE token_hash = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        conn.execute("DELETE FROM login_tokens WHERE token_hash = ?", (key,))
        return str(row[0]) if now_ms < row[1] else None

    def login_token_count(self, user_id: str) -> int:
        row = self.db.read_one("SELECT COUNT(*) FROM login_tokens WHERE user_id = ?", (user_id,))
        return row[0] if row is not None else 0

    def refresh_token_owner(self, token: str) -> str | None:
        """The user of a live refresh token (None: unknown or retired)."""
        row = self.db.read_one(
            "SELECT user_id FROM refresh_tokens WHERE token_hash = ?", (token_hash(token),)
        )
        return None if row is None else str(row[0])

    def refresh_token_count(self, user_id: str) -> int:
        row = self.db.read_one("SELECT COUNT(*) FROM refresh_tokens WHERE user_id = ?", (user_id,))
        return row[0] if row is not None else 0

    def get_devices(self, user_id: str) -> list[sqlite3.Row]:
        return self.db.read(
            "SELECT * FROM devices WHERE user_id = ? ORDER BY device_id", (user_id,)
        )

    def get_device(self, user_id: str, device_id: str) -> sqlite3.Row | None:
        return self.db.read_one(
            "SELECT * FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        )

    @staticmethod
    def device_exists_in(conn: sqlite3.Connection, user_id: str, device_id: str) -> bool:
        return (
            conn.execute(
                "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
            ).fetchone()
            is not None
        )

    @staticmethod
    def device_ids_in(conn: sqlite3.Connection, user_id: str) -> list[str]:
        return [
            r[0]
            for r in conn.execute(
                "SELECT device_id FROM devices WHERE user_id = ? ORDER BY device_id", (user_id,)
            )
        ]

    @staticmethod
    def set_device_display_name_in(
        conn: sqlite3.Connection, user_id: str, device_id: str, display_name: str
    ) -> bool:
        cur = conn.execute(
            "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
            (display_name, user_id, device_id),
        )
        return cur.rowcount == 1

    @staticmethod
    def revoke_device_tokens_in(conn: sqlite3.Connection, user_id: str, device_id: str) -> int:
        """Invalidate every access token (and refresh token) of one device."""
        conn.execute(
            "DELETE FROM refresh_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        )
        return conn.execute(
            "DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        ).rowcount

    @staticmethod
    def delete_device_in(conn: sqlite3.Connection, user_id: str, device_id: str) -> bool:
        """Delete a device and its access and refresh tokens. True if the device existed."""
        conn.execute(
            "DELETE FROM refresh_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        )
        conn.execute(
            "DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        )
        cur = conn.execute(
            "DELETE FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        )
        return cur.rowcount == 1

    @staticmethod
    def revoke_user_tokens_in(conn: sqlite3.Connection, user_id: str) -> None:
        """Every access, refresh and login token of ``user_id`` (POST /logout/all)."""
        conn.execute("DELETE FROM refresh_tokens WHERE user_id = ?", (user_id,))
        conn.execute("DELETE FROM login_tokens WHERE user_id = ?", (user_id,))
        conn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))

    @staticmethod
    def revoke_access_token_in(conn: sqlite3.Connection, token: str) -> None:
        """One access token, with the refresh token issued with it."""
        key = token_hash(token)
        conn.execute("DELETE FROM refresh_tokens WHERE access_hash = ?", (key,))
        conn.execute("DELETE FROM access_tokens WHERE token_hash = ?", (key,))

    def access_token_count(self, user_id: str, device_id: str | None = None) -> int:
        if device_id is None:
            row = self.db.read_one(
                "SELECT COUNT(*) FROM access_tokens WHERE user_id = ?", (user_id,)
            )
        else:
            row = self.db.read_one(
                "SELECT COUNT(*) FROM access_tokens WHERE user_id = ? AND device_id = ?",
                (user_id, device_id),
            )
        return row[0] if row is not None else 0

    # -- registration tokens --------------------------------------------------------------
    def get_registration_token(self, token: str) -> sqlite3.Row | None:
        return self.db.read_one(
            "SELECT * FROM registration_tokens WHERE token_hash = ?", (token_hash(token),)
        )

    def list_registration_tokens(self) -> list[sqlite3.Row]:
        return self.db.read("SELECT * FROM registration_tokens ORDER BY created_ts")

    @staticmethod
    def create_registration_token_in(
        conn: sqlite3.Connection, token: str, uses_allowed: int | None, expiry_ts: int | None,
        now_ms: int,
    ) -> bool:  # fmt: skip
        """False if the token already exists."""
        cur = conn.execute(
            "INSERT OR IGNORE INTO registration_tokens"
            " (token_hash, prefix, uses_allowed, expiry_ts, created_ts) VALUES (?,?,?,?,?)",
            (token_hash(token), token[:4], uses_allowed, expiry_ts, now_ms),
        )
        return cur.rowcount == 1

    @staticmethod
    def revoke_registration_token_in(conn: sqlite3.Connection, token: str) -> bool:
        cur = conn.execute(
            "UPDATE registration_tokens SET revoked = 1 WHERE token_hash = ?", (token_hash(token),)
        )
        return cur.rowcount == 1

    @staticmethod
    def use_registration_token_in(conn: sqlite3.Connection, token: str, now_ms: int) -> bool:
        """Count one completed registration against a token, if it is still valid. Atomic: run it
        in the same write function that creates the user."""
        cur = conn.execute(
            "UPDATE registration_tokens SET completed = completed + 1 WHERE token_hash = ?"
            " AND revoked = 0 AND (expiry_ts IS NULL OR expiry_ts > ?)"
            " AND (uses_allowed IS NULL OR completed < uses_allowed)",
            (token_hash(token), now_ms),
        )
        return cur.rowcount == 1

    # -- profiles -------------------------------------------------------------------------
    def get_profile(self, user_id: str) -> dict:
        rows = self.db.read("SELECT key, value FROM profiles WHERE user_id = ?", (user_id,))
        return {r["key"]: json.loads(r["value"]) for r in rows}

    @staticmethod
    def profile_in(conn: sqlite3.Connection, user_id: str) -> dict:
        rows = conn.execute("SELECT key, value FROM profiles WHERE user_id = ?", (user_id,))
        return {k: json.loads(v) for k, v in rows}

    @staticmethod
    def set_profile_field_in(conn: sqlite3.Connection, user_id: str, key: str, value) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO profiles (user_id, key, value) VALUES (?,?,?)",
            (user_id, key, json.dumps(value, ensure_ascii=False)),
        )

    @staticmethod
    def delete_profile_field_in(conn: sqlite3.Connection, user_id: str, key: str) -> None:
        conn.execute("DELETE FROM profiles WHERE user_id = ? AND key = ?", (user_id, key))

    # -- admin audit ----------------------------------------------------------------------
    def admin_audit_log(self, limit: int = 100) -> list[sqlite3.Row]:
        """The latest action records, newest first (``admin_audit`` is a view over the action
        leaves of the ledger: id, ts, actor, action, target, details)."""
        return self.db.read("SELECT * FROM admin_audit ORDER BY id DESC LIMIT ?", (limit,))
