"""Media metadata (C-S API "Content repository"): local uploads, pending asynchronous uploads
(``POST /_matrix/media/v1/create``). The bytes, and thumbnails, live in files under the
media directory; a row names them."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []


class MediaStore(StoreBase):
    @staticmethod
    def delete_local_media_in(conn: sqlite3.Connection, media_ids: Sequence[str]) -> int:
        """Inside a write: forget local media IDs — their rows (with the file keys of media
        encrypted at rest), quarantine and protection; how many rows there were. The caller
        deletes the files (:meth:`bastion.services.media.MediaService.delete_files`)."""
        args = [(m,) for m in media_ids]
        cur = conn.executemany("DELETE FROM local_media WHERE media_id = ?", args)
        conn.executemany("DELETE FROM guard_quarantined_media WHERE media_id = ?", args)
        conn.executemany("DELETE FROM protected_media WHERE media_id = ?", args)
        return cur.rowcount

    def get_local_media(self, media_id: str) -> sqlite3.Row | None:
        return self.db.read_one("SELECT * FROM local_media WHERE media_id = ?", (media_id,))

    @staticmethod
    def count_pending_uploads_in(conn: sqlite3.Connection, user_id: str, now_ms: int) -> int:
        """Unexpired pending uploads of a user (inside a write function)."""
        row = conn.execute(
            "SELECT COUNT(*) FROM local_media WHERE user_id = ? AND upload_ts IS NULL"
            " AND unused_expires_at > ?",
            (user_id, now_ms),
        ).fetchone()
        return row[0] if row else 0

    @staticmethod
    def insert_local_media_in(
        conn: sqlite3.Connection, media_id: str, user_id: str, now_ms: int, *,
        unused_expires_at: int | None = None, content_type: str | None = None,
        upload_name: str | None = None, size: int | None = None, sha256: str | None = None,
        uploaded: bool = True, file_key: bytes | None = None,
    ) -> None:  # fmt: skip
        """Record a media ID (inside a write function): uploaded now, or pending
        (``file_key``: its file is encrypted at rest with it)."""
        conn.execute(
            "INSERT INTO local_media (media_id, user_id, created_ts, unused_expires_at,"
            " upload_ts, content_type, upload_name, size, sha256, file_key)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                media_id, user_id, now_ms, unused_expires_at, now_ms if uploaded else None,
                content_type, upload_name, size, sha256, file_key,
            ),
        )  # fmt: skip

    @staticmethod
    def complete_pending_upload_in(
        conn: sqlite3.Connection, media_id: str, now_ms: int, content_type: str,
        upload_name: str | None, size: int, sha256: str, file_key: bytes | None = None,
    ) -> bool:  # fmt: skip
        """Fill a pending media ID (inside a write function). False if it was already filled
        or has expired meanwhile: the caller must not have touched its file."""
        cur = conn.execute(
            "UPDATE local_media SET upload_ts = ?, content_type = ?, upload_name = ?, size = ?,"
            " sha256 = ?, file_key = ? WHERE media_id = ? AND upload_ts IS NULL"
            " AND unused_expires_at > ?",
            (now_ms, content_type, upload_name, size, sha256, file_key, media_id, now_ms),
        )
        return cur.rowcount == 1

    # -- the remote media cache (migration 0017) ------------------------------------------------
    def get_remote_media(self, server_name: str, media_id: str) -> sqlite3.Row | None:
        return self.db.read_one(
            "SELECT * FROM remote_media WHERE server_name = ? AND media_id = ?",
            (server_name, media_id),
        )

    @staticmethod
    def insert_remote_media_in(
        conn: sqlite3.Connection, server_name: str, media_id: str, now_ms: int, *,
        content_type: str, upload_name: str | None, size: int, sha256: str, file_path: str,
        file_key: bytes | None,
    ) -> None:  # fmt: skip
        """Record a remote file just cached (inside the write that renames it into place)."""
        conn.execute(
            "INSERT INTO remote_media (server_name, media_id, content_type, upload_name, size,"
            " sha256, file_path, file_key, fetched_ts, last_access_ts)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                server_name, media_id, content_type, upload_name, size, sha256, file_path,
                file_key, now_ms, now_ms,
            ),
        )  # fmt: skip

    @staticmethod
    def touch_remote_media_in(
        conn: sqlite3.Connection, server_name: str, media_id: str, now_ms: int
    ) -> None:
        conn.execute(
            "UPDATE remote_media SET last_access_ts = ? WHERE server_name = ? AND media_id = ?",
            (now_ms, server_name, media_id),
        )

    def remote_media_accessed_before(self, before_ms: int, limit: int) -> list[sqlite3.Row]:
        """Cached remote files last served before ``before_ms``, oldest first."""
        return self.db.read(
            "SELECT * FROM remote_media WHERE last_access_ts < ? ORDER BY last_access_ts LIMIT ?",
            (before_ms, limit),
        )

    @staticmethod
    def delete_remote_media_in(conn: sqlite3.Connection, keys: Sequence[tuple[str, str]]) -> int:
        """Forget cached remote files (their rows and keys); the caller deletes the files."""
        cur = conn.executemany(
            "DELETE FROM remote_media WHERE server_name = ? AND media_id = ?", list(keys)
        )
        return cur.rowcount

    # -- quarantined remote media (migration 0020) ----------------------------------------------
    def remote_media_quarantine(self, server_name: str, media_id: str) -> sqlite3.Row | None:
        """The quarantine record of a remote mxc:// URI (with what the cache knew of it), or
        None when it is not quarantined."""
        return self.db.read_one(
            "SELECT * FROM quarantined_remote_media WHERE server_name = ? AND media_id = ?",
            (server_name, media_id),
        )

    @staticmethod
    def remote_media_quarantined_in(
        conn: sqlite3.Connection, server_name: str, media_id: str
    ) -> bool:
        """Inside a write: whether a remote mxc:// URI is quarantined."""
        row = conn.execute(
            "SELECT 1 FROM quarantined_remote_media WHERE server_name = ? AND media_id = ?",
            (server_name, media_id),
        ).fetchone()
        return row is not None

    @staticmethod
    def quarantine_remote_media_in(
        conn: sqlite3.Connection, server_name: str, media_id: str, decision_id: int | None,
        reason: str, now_ms: int,
    ) -> tuple[bool, str | None]:  # fmt: skip
        """Inside a write: quarantine a remote mxc:// URI, cached or not, and drop its cached
        copy (the row and its key; what it said of the file is kept in the quarantine record).
        (Whether it was newly quarantined, the path of the cached file the caller must delete
        with its thumbnails, or None.)"""
        cached = conn.execute(
            "SELECT * FROM remote_media WHERE server_name = ? AND media_id = ?",
            (server_name, media_id),
        ).fetchone()
        if cached is not None:
            conn.execute(
                "DELETE FROM remote_media WHERE server_name = ? AND media_id = ?",
                (server_name, media_id),
            )
        meta = (
            (cached["content_type"], cached["upload_name"], cached["size"], cached["sha256"],
             cached["fetched_ts"], cached["last_access_ts"])
            if cached is not None else (None,) * 6
        )  # fmt: skip
        cur = conn.execute(
            "INSERT OR IGNORE INTO quarantined_remote_media (server_name, media_id, decision_id,"
            " reason, ts, content_type, upload_name, size, sha256, fetched_ts, last_access_ts)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (server_name, media_id, decision_id, reason, now_ms, *meta),
        )
        return cur.rowcount == 1, cached["file_path"] if cached is not None else None

    @staticmethod
    def unquarantine_remote_media_in(
        conn: sqlite3.Connection, server_name: str, media_id: str
    ) -> bool:
        """Inside a write: release a remote mxc:// URI (the next request fetches it again)."""
        cur = conn.execute(
            "DELETE FROM quarantined_remote_media WHERE server_name = ? AND media_id = ?",
            (server_name, media_id),
        )
        return cur.rowcount == 1
