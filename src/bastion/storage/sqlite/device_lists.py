"""Device lists across servers (S-S API "Device Management", "End-to-End Encryption",
"Send-to-device messaging").

- ``device_list_outbound``: one row per change of a local user's device list, numbered by the
  global stream position of the change (the ``stream_id`` of the ``m.device_list_update`` EDU
  sent for it; the previous row of the same user is its ``prev_id``).
- ``remote_device_lists`` / ``remote_devices`` / ``remote_cross_signing_keys``: the cache of a
  remote user's devices, keys and cross-signing keys, filled from ``GET /user/devices`` and kept
  current by ``m.device_list_update`` and ``m.signing_key_update`` EDUs;
  ``remote_device_list_seen`` holds the stream IDs already applied (to check ``prev_id``).
- ``federation_to_device_seen``: ``message_id`` of received ``m.direct_to_device`` EDUs per
  origin, so a retried transaction does not deliver a message twice.
"""

from __future__ import annotations

import sqlite3

import orjson

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = [("device_list_outbound", "stream_id")]

#: Stream IDs remembered per remote user (older ones can no longer be a ``prev_id``).
SEEN_KEEP = 50


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


class DeviceListsStore(StoreBase):
    # -- local users' changes, for m.device_list_update ---------------------------------------
    @staticmethod
    def add_outbound_device_change_in(
        conn: sqlite3.Connection, stream_id: int, user_id: str, device_id: str
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO device_list_outbound (stream_id, user_id, device_id)"
            " VALUES (?,?,?)",
            (stream_id, user_id, device_id),
        )

    def outbound_device_changes_after(self, after: int, limit: int = 1000) -> list[tuple]:
        """[(stream_id, user_id, device_id, prev_stream_id or None)] after ``after``."""
        rows = self.db.read(
            "SELECT o.stream_id, o.user_id, o.device_id, (SELECT MAX(p.stream_id)"
            " FROM device_list_outbound p WHERE p.user_id = o.user_id"
            " AND p.stream_id < o.stream_id) FROM device_list_outbound o"
            " WHERE o.stream_id > ? ORDER BY o.stream_id LIMIT ?",
            (after, limit),
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    @staticmethod
    def last_outbound_device_change_in(conn: sqlite3.Connection) -> int:
        """Inside a write: the highest stream ID queued for outbound device-list updates."""
        row = conn.execute("SELECT MAX(stream_id) FROM device_list_outbound").fetchone()
        return row[0] or 0

    def last_outbound_device_change(self, user_id: str | None = None) -> int:
        if user_id is None:
            row = self.db.read_one("SELECT MAX(stream_id) FROM device_list_outbound")
        else:
            row = self.db.read_one(
                "SELECT MAX(stream_id) FROM device_list_outbound WHERE user_id = ?", (user_id,)
            )
        return row[0] if row and row[0] is not None else 0

    # -- remote users' device lists -----------------------------------------------------------
    def get_remote_device_list(self, user_id: str) -> sqlite3.Row | None:
        return self.db.read_one(
            "SELECT stream_id, synced_pos FROM remote_device_lists WHERE user_id = ?", (user_id,)
        )

    @staticmethod
    def remote_device_list_in(conn: sqlite3.Connection, user_id: str) -> tuple | None:
        row = conn.execute(
            "SELECT stream_id, synced_pos FROM remote_device_lists WHERE user_id = ?", (user_id,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    @staticmethod
    def remote_stream_ids_seen_in(
        conn: sqlite3.Connection, user_id: str, stream_ids: list[int]
    ) -> set[int]:
        if not stream_ids:
            return set()
        marks = ",".join("?" * len(stream_ids))
        rows = conn.execute(
            "SELECT stream_id FROM remote_device_list_seen"  # noqa: S608
            f" WHERE user_id = ? AND stream_id IN ({marks})",
            (user_id, *stream_ids),
        ).fetchall()
        return {r[0] for r in rows}

    @staticmethod
    def mark_remote_stream_id_in(conn: sqlite3.Connection, user_id: str, stream_id: int) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO remote_device_list_seen (user_id, stream_id) VALUES (?,?)",
            (user_id, stream_id),
        )
        conn.execute(
            "DELETE FROM remote_device_list_seen WHERE user_id = ? AND stream_id NOT IN"
            " (SELECT stream_id FROM remote_device_list_seen WHERE user_id = ?"
            " ORDER BY stream_id DESC LIMIT ?)",
            (user_id, user_id, SEEN_KEEP),
        )
        conn.execute(
            "UPDATE remote_device_lists SET stream_id = MAX(stream_id, ?) WHERE user_id = ?",
            (stream_id, user_id),
        )

    @staticmethod
    def replace_remote_device_list_in(
        conn: sqlite3.Connection, user_id: str, stream_id: int, synced_pos: int,
        devices: list[tuple[str, str | None, dict | None]], cross_signing: dict[str, dict],
    ) -> None:  # fmt: skip
        """A full resynchronisation: every device and cross-signing key of the user."""
        for table in ("remote_devices", "remote_cross_signing_keys", "remote_device_list_seen"):
            conn.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))  # noqa: S608
        conn.executemany(
            "INSERT OR REPLACE INTO remote_devices (user_id, device_id, display_name, keys_json)"
            " VALUES (?,?,?,?)",
            [
                (user_id, d, name, _dumps(keys) if keys is not None else None)
                for d, name, keys in devices
            ],
        )
        conn.executemany(
            "INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json) VALUES (?,?,?)",
            [(user_id, t, _dumps(k)) for t, k in cross_signing.items()],
        )
        conn.execute(
            "INSERT OR REPLACE INTO remote_device_lists (user_id, stream_id, synced_pos)"
            " VALUES (?,?,?)",
            (user_id, stream_id, synced_pos),
        )
        conn.execute(
            "INSERT INTO remote_device_list_seen (user_id, stream_id) VALUES (?,?)",
            (user_id, stream_id),
        )

    @staticmethod
    def delete_remote_device_list_in(conn: sqlite3.Connection, user_id: str) -> None:
        for table in (
            "remote_device_lists",
            "remote_devices",
            "remote_cross_signing_keys",
            "remote_device_list_seen",
        ):
            conn.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))  # noqa: S608

    @staticmethod
    def set_remote_device_in(
        conn: sqlite3.Connection, user_id: str, device_id: str, display_name: str | None,
        keys: dict | None,
    ) -> None:  # fmt: skip
        conn.execute(
            "INSERT OR REPLACE INTO remote_devices (user_id, device_id, display_name, keys_json)"
            " VALUES (?,?,?,?)",
            (user_id, device_id, display_name, _dumps(keys) if keys is not None else None),
        )

    @staticmethod
    def delete_remote_device_in(conn: sqlite3.Connection, user_id: str, device_id: str) -> None:
        conn.execute(
            "DELETE FROM remote_devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        )

    @staticmethod
    def count_remote_devices_in(conn: sqlite3.Connection, user_id: str) -> int:
        return conn.execute(
            "SELECT COUNT(*) FROM remote_devices WHERE user_id = ?", (user_id,)
        ).fetchone()[0]

    @staticmethod
    def remote_device_exists_in(conn: sqlite3.Connection, user_id: str, device_id: str) -> bool:
        row = conn.execute(
            "SELECT 1 FROM remote_devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        ).fetchone()
        return row is not None

    def get_remote_devices(self, user_id: str) -> dict[str, tuple[dict | None, str | None]]:
        """{device_id: (device keys or None, display name)}."""
        rows = self.db.read(
            "SELECT device_id, display_name, keys_json FROM remote_devices WHERE user_id = ?",
            (user_id,),
        )
        return {r[0]: (orjson.loads(r[2]) if r[2] is not None else None, r[1]) for r in rows}

    @staticmethod
    def set_remote_cross_signing_key_in(
        conn: sqlite3.Connection, user_id: str, key_type: str, key: dict
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO remote_cross_signing_keys (user_id, key_type, key_json)"
            " VALUES (?,?,?)",
            (user_id, key_type, _dumps(key)),
        )

    def get_remote_cross_signing_keys(self, user_id: str) -> dict[str, dict]:
        rows = self.db.read(
            "SELECT key_type, key_json FROM remote_cross_signing_keys WHERE user_id = ?",
            (user_id,),
        )
        return {r[0]: orjson.loads(r[1]) for r in rows}

    def last_join_pos_in_rooms_of(self, user_id: str, local_server: str) -> int:
        """The stream position of the latest join, by ``user_id`` or by a user of
        ``local_server``, in a room ``user_id`` is joined to. A room shared again after a time
        without one is shared through such a join, and a device list cached before it may have
        missed updates sent while no room was shared."""
        suffix = ":" + local_server
        row = self.db.read_one(
            "SELECT MAX(m.stream_pos) FROM current_membership c JOIN membership_events m"
            " ON m.room_id = c.room_id WHERE c.user_id = ? AND c.membership = 'join'"
            " AND m.membership = 'join' AND (m.user_id = ? OR substr(m.user_id, -?) = ?)",
            (user_id, user_id, len(suffix), suffix),
        )
        return row[0] if row and row[0] is not None else 0

    # -- m.direct_to_device deduplication -----------------------------------------------------
    @staticmethod
    def federation_to_device_seen_in(
        conn: sqlite3.Connection, origin: str, message_id: str, now_ms: int, keep_ms: int
    ) -> bool:
        """Record the message ID; True if it had been seen before. Forgets IDs older than
        ``keep_ms``."""
        conn.execute("DELETE FROM federation_to_device_seen WHERE ts < ?", (now_ms - keep_ms,))
        cur = conn.execute(
            "INSERT OR IGNORE INTO federation_to_device_seen (origin, message_id, ts)"
            " VALUES (?,?,?)",
            (origin, message_id, now_ms),
        )
        return cur.rowcount == 0
