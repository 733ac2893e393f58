"""What the Synapse-compatible admin API reads and changes beyond the other stores (migration
0006): user and room listings, a room's media references, whole-room purges, blocked rooms,
room-deletion statuses, local media deletion and registration tokens addressed by the handle
the listing shows (:mod:`bastion.services.admin_directory`)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from bastion.storage.sqlite.accounts import token_hash
from bastion.storage.sqlite.base import StoreBase
from bastion.storage.sqlite.rooms import RoomReadCaches
from bastion.storage.sqlite.search import unindex_room_search_in

#: The purged room's highest stream position stays here (see migration 0006).
STREAMS: list[tuple[str, str]] = [("room_deletions", "top_stream_pos")]

#: Sort keys of the user listing (Synapse's ``order_by``) → SQL expressions over the query's
#: columns. Keys Bastion has no data for sort by user ID (every row has the same value).
USER_ORDER: dict[str, str] = {
    "name": "u.user_id",
    "admin": "u.is_admin",
    "deactivated": "u.deactivated",
    "locked": "u.locked",
    "displayname": "displayname",
    "avatar_url": "avatar_url",
    "creation_ts": "u.created_ts",
    "last_seen_ts": "last_seen_ts",
    "is_guest": "u.user_id",
    "user_type": "u.user_id",
    "shadow_banned": "u.user_id",
}

#: Sort keys of a user's media listing → columns.
MEDIA_ORDER: dict[str, str] = {
    "media_id": "m.media_id",
    "upload_name": "m.upload_name",
    "created_ts": "m.created_ts",
    "last_access_ts": "m.created_ts",
    "media_length": "m.size",
    "media_type": "m.content_type",
    "quarantined_by": "q.reason",
    "safe_from_quarantine": "protected",
}

#: The state types a room listing shows (state key "").
SUMMARY_TYPES = (
    "m.room.name", "m.room.canonical_alias", "m.room.join_rules", "m.room.guest_access",
    "m.room.history_visibility", "m.room.encryption", "m.room.create", "m.room.avatar",
    "m.room.topic",
)  # fmt: skip

#: Tables whose rows name a room in ``room_id`` and go with the room when it is purged. Kept:
#: ``content_reports`` and ``guard_decisions`` (moderation evidence), ``e2e_backup_keys`` (the
#: users' own key backups), ``ledger_entries`` (append-only).
_ROOM_TABLES = (
    "forward_extremities", "current_state", "membership_events", "current_membership",
    "room_aliases", "account_data", "receipts", "out_of_room_memberships", "room_state_history",
    "guard_room_settings", "guard_room_cooling", "server_notice_rooms", "retention_rooms",
    "retention_deferred", "pending_redactions",
)  # fmt: skip


def _like(value: str) -> str:
    """``value`` as a LIKE pattern for "contains", with ``%``, ``_`` and ``\\`` escaped."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class AdminDirectoryStore(StoreBase):
    room_caches: RoomReadCaches

    def forget_room_caches(self) -> None:
        """After a room purge (on the event loop's thread, once committed): empty the rooms
        store's read caches, which may hold the purged room's rows and membership counts."""
        fresh = RoomReadCaches()
        caches = self.room_caches
        for name in ("event_rows", "slices", "group_at", "groups", "members", "sharing",
                     "memberships_at"):  # fmt: skip
            setattr(caches, name, getattr(fresh, name))
        caches.members_size = caches.sharing_size = caches.memberships_at_size = 0

    # -- users ------------------------------------------------------------------------------------
    def admin_list_users(
        self, *, name: str | None, user_id: str | None, deactivated: bool, locked: bool,
        admins: bool | None, order_by: str, backwards: bool, offset: int, limit: int,
    ) -> tuple[list[sqlite3.Row], int]:  # fmt: skip
        """One page of local users and the number that match (``order_by``: a key of
        :data:`USER_ORDER`)."""
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        if name:
            where.append(
                "(substr(u.user_id, 2, instr(u.user_id, ':') - 2) LIKE ? ESCAPE '\\'"
                " OR displayname LIKE ? ESCAPE '\\')"
            )
            args += [_like(name), _like(name)]
        if user_id:
            where.append("u.user_id LIKE ? ESCAPE '\\'")
            args.append(_like(user_id))
        if not deactivated:
            where.append("u.deactivated = 0")
        if not locked:
            where.append("u.locked = 0")
        if admins is not None:
            where.append("u.is_admin = ?")
            args.append(int(admins))
        base = (
            "SELECT * FROM (SELECT u.*,"
            " (SELECT json_extract(p.value, '$') FROM profiles p WHERE p.user_id = u.user_id"
            "  AND p.key = 'displayname') AS displayname,"
            " (SELECT json_extract(p.value, '$') FROM profiles p WHERE p.user_id = u.user_id"
            "  AND p.key = 'avatar_url') AS avatar_url,"
            " (SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id)"
            "  AS last_seen_ts"
            " FROM users u) u WHERE " + " AND ".join(where)
        )
        total_row = self.db.read_one(f"SELECT COUNT(*) FROM ({base})", tuple(args))  # noqa: S608
        direction = "DESC" if backwards else "ASC"
        order = USER_ORDER[order_by]
        rows = self.db.read(
            f"{base} ORDER BY {order} {direction}, u.user_id {direction} LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return list(rows), total_row[0] if total_row else 0

    def admin_user_last_seen(self, user_id: str) -> int | None:
        row = self.db.read_one(
            "SELECT MAX(last_seen_ts) FROM devices WHERE user_id = ?", (user_id,)
        )
        return row[0] if row else None

    # -- rooms ------------------------------------------------------------------------------------
    def admin_room_summaries(self, room_id: str | None = None) -> list[dict[str, Any]]:
        """Every room this server holds (or the one ``room_id``): its row, the JSON of its
        :data:`SUMMARY_TYPES` state events, its number of state events and its joined
        members."""
        one = " WHERE room_id = ?" if room_id is not None else ""
        args: tuple = (room_id,) if room_id is not None else ()
        rooms: dict[str, dict[str, Any]] = {}
        for r in self.db.read(
            f"SELECT room_id, room_version, creator, is_public, created_ts FROM rooms{one}",
            args,  # noqa: S608
        ):
            rooms[r["room_id"]] = {
                "room_id": r["room_id"], "room_version": r["room_version"],
                "creator": r["creator"], "is_public": bool(r["is_public"]),
                "created_ts": r["created_ts"], "state": {}, "state_events": 0, "joined": [],
            }  # fmt: skip
        if not rooms:
            return []
        marks = ",".join("?" * len(SUMMARY_TYPES))
        cs_one = " AND cs.room_id = ?" if room_id is not None else ""
        for r in self.db.read(
            "SELECT cs.room_id, cs.type, e.json FROM current_state cs"
            " JOIN events e ON e.event_id = cs.event_id"
            f" WHERE cs.state_key = '' AND cs.type IN ({marks}){cs_one}",  # noqa: S608
            (*SUMMARY_TYPES, *args),
        ):
            if r["room_id"] in rooms:
                rooms[r["room_id"]]["state"][r["type"]] = r["json"]
        for r in self.db.read(
            f"SELECT room_id, COUNT(*) FROM current_state{one} GROUP BY room_id",
            args,  # noqa: S608
        ):
            if r[0] in rooms:
                rooms[r[0]]["state_events"] = r[1]
        for r in self.db.read(
            "SELECT room_id, user_id FROM current_membership WHERE membership = 'join'"
            + (" AND room_id = ?" if room_id is not None else ""),
            args,
        ):
            if r[0] in rooms:
                rooms[r[0]]["joined"].append(r[1])
        return list(rooms.values())

    def admin_room_state_jsons(self, room_id: str) -> list[tuple[str, bytes]]:
        """(event ID, JSON) of every event of the room's current state."""
        rows = self.db.read(
            "SELECT e.event_id, e.json FROM current_state cs JOIN events e"
            " ON e.event_id = cs.event_id WHERE cs.room_id = ? ORDER BY e.stream_pos",
            (room_id,),
        )
        return [(r[0], r[1]) for r in rows]

    def admin_room_media_refs(self, room_id: str) -> list[str]:
        """Every ``content.url`` and ``content.info.thumbnail_url`` string of the room's
        accepted events (encrypted events carry theirs inside the ciphertext: not seen)."""
        rows = self.db.read(
            "SELECT json_extract(json, '$.content.url'),"
            " json_extract(json, '$.content.info.thumbnail_url')"
            " FROM events WHERE room_id = ? AND rejected = 0",
            (room_id,),
        )
        return [v for r in rows for v in (r[0], r[1]) if isinstance(v, str)]

    def admin_user_media_refs(self, user_id: str) -> list[str]:
        """Media the user's accepted events link (``content.url``, thumbnail), every room."""
        rows = self.db.read(
            "SELECT json_extract(json, '$.content.url'),"
            " json_extract(json, '$.content.info.thumbnail_url')"
            " FROM events WHERE sender = ? AND rejected = 0",
            (user_id,),
        )
        return [v for r in rows for v in (r[0], r[1]) if isinstance(v, str)]

    def purge_room_in(self, conn: sqlite3.Connection, room_id: str) -> tuple[list[str], int]:
        """Remove a room from the database (inside a write function): its events with their
        edges, auth links, transaction IDs, queued outbound copies and search index rows, its
        state groups, current state, memberships, aliases, room account data, receipts and the room row. Returns the
        IDs of the events removed and the highest stream position the room held."""
        event_ids = [
            r[0] for r in conn.execute("SELECT event_id FROM events WHERE room_id = ?", (room_id,))
        ]
        top_row = conn.execute(
            "SELECT MAX(m) FROM (SELECT MAX(stream_pos) AS m FROM events WHERE room_id = ?"
            " UNION ALL SELECT MAX(stream_pos) FROM membership_events WHERE room_id = ?"
            " UNION ALL SELECT MAX(stream_pos) FROM receipts WHERE room_id = ?"
            " UNION ALL SELECT MAX(stream_pos) FROM account_data WHERE room_id = ?)",
            (room_id, room_id, room_id, room_id),
        ).fetchone()
        sub = "SELECT event_id FROM events WHERE room_id = ?"
        unindex_room_search_in(conn, room_id)
        for table, column in (
            ("event_edges", "event_id"), ("event_auth", "event_id"), ("event_txns", "event_id"),
            ("federation_outbound_pdus", "event_id"), ("event_relations", "event_id"),
        ):  # fmt: skip
            conn.execute(f"DELETE FROM {table} WHERE {column} IN ({sub})", (room_id,))  # noqa: S608
        conn.execute(
            "DELETE FROM state_group_entries WHERE group_id IN"
            " (SELECT id FROM state_groups WHERE room_id = ?)",
            (room_id,),
        )
        conn.execute("DELETE FROM state_groups WHERE room_id = ?", (room_id,))
        for table in _ROOM_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE room_id = ?", (room_id,))  # noqa: S608
        conn.execute("DELETE FROM events WHERE room_id = ?", (room_id,))
        conn.execute("DELETE FROM rooms WHERE room_id = ?", (room_id,))
        # Parsed event rows kept in memory go once this commits (rooms.py).
        self.events_rewritten_in(conn)  # type: ignore[attr-defined]
        return event_ids, (top_row[0] or 0) if top_row else 0

    # -- blocked rooms ------------------------------------------------------------------------------
    def get_blocked_room(self, room_id: str) -> sqlite3.Row | None:
        return self.db.read_one("SELECT * FROM blocked_rooms WHERE room_id = ?", (room_id,))

    def room_blocked(self, room_id: str) -> bool:
        return self.get_blocked_room(room_id) is not None

    @staticmethod
    def block_room_in(conn: sqlite3.Connection, room_id: str, user_id: str, now_ms: int) -> bool:
        """Block a room (False if it was blocked already)."""
        cur = conn.execute(
            "INSERT OR IGNORE INTO blocked_rooms (room_id, user_id, ts) VALUES (?,?,?)",
            (room_id, user_id, now_ms),
        )
        return cur.rowcount == 1

    @staticmethod
    def unblock_room_in(conn: sqlite3.Connection, room_id: str) -> bool:
        cur = conn.execute("DELETE FROM blocked_rooms WHERE room_id = ?", (room_id,))
        return cur.rowcount == 1

    # -- room deletions -----------------------------------------------------------------------------
    @staticmethod
    def put_room_deletion_in(
        conn: sqlite3.Connection, delete_id: str, room_id: str, status: str, now_ms: int,
        result: str, top_stream_pos: int = 0,
    ) -> None:  # fmt: skip
        conn.execute(
            "INSERT OR REPLACE INTO room_deletions"
            " (delete_id, room_id, status, ts, result, top_stream_pos) VALUES (?,?,?,?,?,?)",
            (delete_id, room_id, status, now_ms, result, top_stream_pos),
        )

    def get_room_deletion(self, delete_id: str) -> sqlite3.Row | None:
        return self.db.read_one("SELECT * FROM room_deletions WHERE delete_id = ?", (delete_id,))

    def room_deletions_of(self, room_id: str) -> list[sqlite3.Row]:
        return list(
            self.db.read(
                "SELECT * FROM room_deletions WHERE room_id = ? ORDER BY ts, delete_id",
                (room_id,),
            )
        )

    # -- media ------------------------------------------------------------------------------------
    def admin_list_user_media(
        self, user_id: str, *, order_by: str, backwards: bool, offset: int, limit: int
    ) -> tuple[list[sqlite3.Row], int]:
        """One page of a user's local media (with its quarantine reason) and their number."""
        total = self.db.read_one("SELECT COUNT(*) FROM local_media WHERE user_id = ?", (user_id,))
        direction = "DESC" if backwards else "ASC"
        rows = self.db.read(
            "SELECT m.*, q.reason AS quarantine_reason, p.media_id IS NOT NULL AS protected"
            " FROM local_media m"
            " LEFT JOIN guard_quarantined_media q ON q.media_id = m.media_id"
            " LEFT JOIN protected_media p ON p.media_id = m.media_id"
            f" WHERE m.user_id = ? ORDER BY {MEDIA_ORDER[order_by]} {direction},"  # noqa: S608
            " m.media_id ASC LIMIT ? OFFSET ?",
            (user_id, limit, offset),
        )
        return list(rows), total[0] if total else 0

    def admin_local_media_ids_before(self, before_ts: int, size_gt: int) -> list[str]:
        """Uploaded local media created before ``before_ts`` and larger than ``size_gt``."""
        rows = self.db.read(
            "SELECT media_id FROM local_media WHERE created_ts < ? AND COALESCE(size, 0) > ?"
            " ORDER BY created_ts, media_id",
            (before_ts, size_gt),
        )
        return [r[0] for r in rows]

    def admin_profile_media_refs(self) -> set[str]:
        """The ``mxc://`` URIs that user avatars and room avatars use."""
        refs: set[str] = set()
        for r in self.db.read(
            "SELECT json_extract(value, '$') FROM profiles WHERE key = 'avatar_url'"
        ):
            if isinstance(r[0], str):
                refs.add(r[0])
        for r in self.db.read(
            "SELECT json_extract(e.json, '$.content.url') FROM current_state cs"
            " JOIN events e ON e.event_id = cs.event_id WHERE cs.type = 'm.room.avatar'"
        ):
            if isinstance(r[0], str):
                refs.add(r[0])
        return refs

    def admin_media_quarantine_reason(self, media_id: str) -> str | None:
        """Why a local media ID is quarantined, or None when it is not."""
        row = self.db.read_one(
            "SELECT reason FROM guard_quarantined_media WHERE media_id = ?", (media_id,)
        )
        return row[0] if row is not None else None

    def protected_media_ids(self, media_ids: list[str]) -> set[str]:
        """Those of ``media_ids`` an admin protected from quarantine."""
        if not media_ids:
            return set()
        rows = self.db.read(
            "SELECT media_id FROM protected_media WHERE media_id IN"
            " (SELECT value FROM json_each(?))",
            (json.dumps(media_ids),),
        )
        return {r[0] for r in rows}

    @staticmethod
    def protect_media_in(
        conn: sqlite3.Connection, media_id: str, user_id: str, now_ms: int, protect: bool
    ) -> bool:
        """Protect (or stop protecting) a local media ID; False if nothing changed."""
        if protect:
            cur = conn.execute(
                "INSERT OR IGNORE INTO protected_media (media_id, user_id, ts) VALUES (?,?,?)",
                (media_id, user_id, now_ms),
            )
        else:
            cur = conn.execute("DELETE FROM protected_media WHERE media_id = ?", (media_id,))
        return cur.rowcount == 1

    # -- registration tokens ------------------------------------------------------------------------
    def list_registration_tokens_hashed(self) -> list[sqlite3.Row]:
        """Every registration token with ``hash_hex``, the lower-case hex of its hash."""
        return list(
            self.db.read(
                "SELECT *, lower(hex(token_hash)) AS hash_hex FROM registration_tokens"
                " ORDER BY created_ts, token_hash"
            )
        )

    def find_registration_tokens(self, prefix: str, hash_hex: str) -> list[sqlite3.Row]:
        """The tokens with this prefix whose hash starts with ``hash_hex`` (lower-case hex)."""
        return list(
            self.db.read(
                "SELECT *, lower(hex(token_hash)) AS hash_hex FROM registration_tokens"
                " WHERE prefix = ? AND substr(lower(hex(token_hash)), 1, ?) = ?",
                (prefix, len(hash_hex), hash_hex),
            )
        )

    def get_registration_token_hashed(self, token: str) -> sqlite3.Row | None:
        return self.db.read_one(
            "SELECT *, lower(hex(token_hash)) AS hash_hex FROM registration_tokens"
            " WHERE token_hash = ?",
            (token_hash(token),),
        )

    @staticmethod
    def update_registration_token_in(
        conn: sqlite3.Connection, hash_hex: str, changes: dict[str, int | None]
    ) -> bool:
        """Set ``uses_allowed`` and/or ``expiry_ts`` of the token with this hash."""
        cols = [c for c in ("uses_allowed", "expiry_ts") if c in changes]
        if not cols:
            row = conn.execute(
                "SELECT 1 FROM registration_tokens WHERE token_hash = ?", (bytes.fromhex(hash_hex),)
            ).fetchone()
            return row is not None
        sets = ", ".join(f"{c} = ?" for c in cols)
        cur = conn.execute(
            f"UPDATE registration_tokens SET {sets} WHERE token_hash = ?",  # noqa: S608
            (*(changes[c] for c in cols), bytes.fromhex(hash_hex)),
        )
        return cur.rowcount == 1

    @staticmethod
    def registration_token_by_hash_in(
        conn: sqlite3.Connection, hash_hex: str
    ) -> sqlite3.Row | None:
        return conn.execute(
            "SELECT *, lower(hex(token_hash)) AS hash_hex FROM registration_tokens"
            " WHERE token_hash = ?",
            (bytes.fromhex(hash_hex),),
        ).fetchone()

    @staticmethod
    def delete_registration_token_in(conn: sqlite3.Connection, hash_hex: str) -> bool:
        cur = conn.execute(
            "DELETE FROM registration_tokens WHERE token_hash = ?", (bytes.fromhex(hash_hex),)
        )
        return cur.rowcount == 1
