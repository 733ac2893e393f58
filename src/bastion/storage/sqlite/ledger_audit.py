"""Read-only reads for the ledger's auditor (``bastion ledger verify|prove|status``, issue 8).

The verifier compares the database with the ledger: every stored row that a leaf commits to
(events, memberships, current state, device and cross-signing keys) against its leaf, and the
leaves against the tree, the tiles and the signed checkpoints. It reads in large batches of
plain tuples (no row objects) so that a million leaves take seconds, and it never writes: the
database is opened with :func:`open_readonly_store`, which neither migrates nor creates
anything (``immutable`` when no write-ahead log is present, so SQLite does not even create its
``-shm`` file; read-only with ``query_only`` otherwise).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bastion.storage.sqlite import driver
from bastion.storage.sqlite.base import StoreBase

if TYPE_CHECKING:
    from bastion.storage.sqlite.store import SqliteStore

STREAMS: list[tuple[str, str]] = []

#: The ledger's tables (migration 4): the verifier reports each one that is missing.
LEDGER_TABLES = ("ledger_entries", "ledger_tiles", "ledger_tree_state", "ledger_checkpoints",
                 "ledger_cosignatures", "ledger_anchors")  # fmt: skip


class ReadOnlyError(RuntimeError):
    """A write was attempted on a store opened read-only."""


class AuditReadError(Exception):
    """The database could not be read as the auditor expects (a table or column changed or
    dropped, a corrupt page): itself a finding, never a crash."""


class ReadOnlyDatabase:
    """The read half of :class:`~bastion.storage.sqlite.database.Database` on a read-only
    connection: the store's read methods work, every write raises :class:`ReadOnlyError`."""

    def __init__(self, path: Path, key: bytes | None = None) -> None:
        self.path = path
        self._key = key
        self._reader: sqlite3.Connection | None = None

    def open(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"no database at {self.path}")
        wal = self.path.with_name(self.path.name + "-wal")
        uri_path = quote(str(self.path.resolve()))
        # Without a write-ahead log the database file is the whole database: open it as
        # immutable, so that SQLite creates no -wal/-shm file beside it. With one (a server is
        # running, or was killed), read-only, so that the log's committed frames are seen.
        mode = "ro" if wal.exists() else "ro&immutable=1"
        conn: sqlite3.Connection = driver.connect(
            f"file:{uri_path}?mode={mode}", key=self._key, uri=True, check_same_thread=False,
            timeout=30,
        )  # fmt: skip
        conn.execute("PRAGMA query_only=ON")
        if mode == "ro":
            # A server may be writing: every read of this connection sees one snapshot (the
            # read transaction holds it until close).
            conn.execute("BEGIN")
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        self._reader = conn

    def close(self) -> None:
        if self._reader is not None:
            if self._reader.in_transaction:
                self._reader.rollback()
            self._reader.close()
            self._reader = None

    @property
    def reader(self) -> sqlite3.Connection:
        assert self._reader is not None, "database is not open"
        return self._reader

    def read(self, sql: str, args: tuple | list = ()) -> list[sqlite3.Row]:
        return self.reader.execute(sql, args).fetchall()

    def read_one(self, sql: str, args: tuple | list = ()) -> sqlite3.Row | None:
        return self.reader.execute(sql, args).fetchone()

    async def write(self, fn: Any, durable: bool = False) -> Any:
        raise ReadOnlyError("the database is open read-only")

    def write_sync(self, fn: Any, durable: bool = False) -> Any:
        raise ReadOnlyError("the database is open read-only")


def open_readonly_store(path: Path, key: bytes | None = None) -> SqliteStore:
    """The store on ``path``, read-only: no migration, no writer thread, no file created (see
    the module docstring; ``key``: the database is encrypted at rest). Raises FileNotFoundError
    when there is no database file, and sqlite3-free :class:`ValueError` when the file is not
    an SQLite database or cannot be read with ``key``."""
    from bastion.storage.sqlite.store import SqliteStore

    store = SqliteStore(path)
    db = ReadOnlyDatabase(path, key)
    try:
        db.open()
    except driver.WrongKey as e:
        raise ValueError(str(e)) from None
    try:
        db.read_one("SELECT COUNT(*) FROM sqlite_master")
    except driver.DatabaseError as e:
        db.close()
        raise ValueError(f"{path} is not a readable SQLite database: {e}") from None
    store.db = db  # type: ignore[assignment]
    return store


def _plain(conn: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
    """Rows as plain tuples (no row objects: the bulk reads are hot loops)."""
    cur = conn.cursor()
    cur.row_factory = None
    try:
        return cur.execute(sql, args).fetchall()
    except driver.DatabaseError as e:
        raise AuditReadError(f"{e} (reading: {sql.split(' FROM ')[-1][:60]})") from None


class LedgerAuditStore(StoreBase):
    """Read-only reads of the auditor (see the module docstring). Every method only reads."""

    # -- the schema ---------------------------------------------------------------------------
    def audit_schema_version(self) -> int:
        """The database's schema version (0 for a database without ``schema_version``)."""
        if "schema_version" not in self.audit_tables():
            return 0
        rows = _plain(self.db.reader, "SELECT MAX(version) FROM schema_version")
        return rows[0][0] or 0

    def audit_tables(self) -> set[str]:
        """Every table and view in the database."""
        return {
            r[0]
            for r in _plain(
                self.db.reader, "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
            )
        }

    # -- leaves -------------------------------------------------------------------------------
    def audit_leaf_batches(self, batch: int = 50_000) -> Iterator[list[tuple]]:
        """Every stored leaf row as (idx, kind, event_id, subject, action, ts, entry), by
        ascending index, ``batch`` rows at a time."""
        after = -(2**63)
        while True:
            rows = _plain(
                self.db.reader,
                "SELECT idx, kind, event_id, subject, action, ts, entry FROM ledger_entries"
                " WHERE idx > ? ORDER BY idx LIMIT ?",
                (after, batch),
            )
            if not rows:
                return
            yield rows
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def audit_leaf_count(self) -> int:
        return _plain(self.db.reader, "SELECT COUNT(*) FROM ledger_entries")[0][0]

    def audit_tile_keys(self) -> list[tuple[int, int, int]]:
        """(level, index, length in bytes) of every stored tile."""
        return _plain(
            self.db.reader, "SELECT level, idx, LENGTH(data) FROM ledger_tiles ORDER BY level, idx"
        )

    def audit_tiles(self, level: int, first: int, last: int) -> list[tuple[int, bytes]]:
        """(index, data) of the stored tiles of ``level`` with index in ``[first, last]``."""
        return [
            (r[0], bytes(r[1]))
            for r in _plain(
                self.db.reader,
                "SELECT idx, data FROM ledger_tiles WHERE level = ? AND idx >= ? AND idx <= ?"
                " ORDER BY idx",
                (level, first, last),
            )
        ]

    def audit_latest_action(self, action: str) -> tuple[int, bytes] | None:
        """(index, entry) of the latest action leaf of ``action``."""
        rows = _plain(
            self.db.reader,
            "SELECT idx, entry FROM ledger_entries WHERE kind = 'action' AND action = ?"
            " ORDER BY idx DESC LIMIT 1",
            (action,),
        )
        return (rows[0][0], bytes(rows[0][1])) if rows else None

    def audit_cosignatures(self, size: int) -> list[tuple[str, bytes, int]]:
        """(witness, signature line, ts) of the cosignatures stored for checkpoint ``size``."""
        return [
            (r[0], bytes(r[1]), r[2])
            for r in _plain(
                self.db.reader,
                "SELECT witness, line, ts FROM ledger_cosignatures WHERE size = ? ORDER BY witness",
                (size,),
            )
        ]

    def audit_last_cosignatures(self) -> list[tuple[str, int, int]]:
        """(witness, size, ts) of each witness's cosignature on the largest checkpoint."""
        return _plain(
            self.db.reader,
            "SELECT witness, MAX(size), ts FROM ledger_cosignatures GROUP BY witness ORDER BY 1",
        )

    def audit_anchor_rows(self) -> list[tuple[int, str, int, bytes, str]]:
        """(id, anchor, size, root, receipt JSON) of every stored anchor receipt, oldest first."""
        return [
            (r[0], r[1], r[2], bytes(r[3]), r[4])
            for r in _plain(
                self.db.reader,
                "SELECT id, anchor, size, root, receipt FROM ledger_anchors ORDER BY id",
            )
        ]

    def audit_witness_sizes(self) -> list[tuple[str, int]]:
        """(witness, size) of the log's view of each of its witnesses."""
        return _plain(self.db.reader, "SELECT witness, size FROM ledger_witness_sizes ORDER BY 1")

    # -- events against their leaves ------------------------------------------------------------
    def audit_event_rowid_bounds(self) -> tuple[int, int, int]:
        """(smallest rowid, largest rowid, count) of the ``events`` table."""
        r = _plain(self.db.reader, "SELECT MIN(rowid), MAX(rowid), COUNT(*) FROM events")[0]
        return (r[0] or 0, r[1] or 0, r[2])

    def audit_event_batches(
        self, first_rowid: int, last_rowid: int, batch: int = 20_000
    ) -> Iterator[list[tuple]]:
        """Every ``events`` row with rowid in ``[first_rowid, last_rowid]`` with its room's
        version and the leaf its ``ledger_idx`` names: (rowid, event_id, room_id, stream_pos,
        depth, type, state_key, sender, origin_server_ts, json, rejected, soft_failed,
        redacted_because, room_version, leaf idx, leaf entry, ledger_idx); the leaf columns
        are NULL when there is no such leaf."""
        after = first_rowid - 1
        while True:
            rows = _plain(
                self.db.reader,
                "SELECT e.rowid, e.event_id, e.room_id, e.stream_pos, e.depth, e.type,"
                " e.state_key, e.sender, e.origin_server_ts, e.json, e.rejected, e.soft_failed,"
                " e.redacted_because, r.room_version, l.idx, l.entry, e.ledger_idx"
                " FROM events e LEFT JOIN rooms r ON r.room_id = e.room_id"
                " LEFT JOIN ledger_entries l ON l.idx = e.ledger_idx"
                " WHERE e.rowid > ? AND e.rowid <= ? ORDER BY e.rowid LIMIT ?",
                (after, last_rowid, batch),
            )
            if not rows:
                return
            yield rows
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def audit_event_ledger_idx(self, event_ids: Sequence[str]) -> dict[str, int | None]:
        """{event_id: ledger_idx} of the given stored events."""
        out: dict[str, int | None] = {}
        ids = list(dict.fromkeys(event_ids))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in _plain(
                self.db.reader,
                f"SELECT event_id, ledger_idx FROM events WHERE event_id IN ({marks})",  # noqa: S608
                chunk,
            ):
                out[r[0]] = r[1]
        return out

    def audit_event_leaves_without_row(self) -> list[tuple[int, str]]:
        """(index, event_id) of every event leaf whose event has no ``events`` row."""
        return _plain(
            self.db.reader,
            "SELECT l.idx, l.event_id FROM ledger_entries l WHERE l.kind = 'event'"
            " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = l.event_id)"
            " ORDER BY l.idx",
        )

    def audit_event_types(self, event_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """{event_id: (type, json)} of the given stored events."""
        out: dict[str, tuple[str, str | None]] = {}
        ids = list(dict.fromkeys(event_ids))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in _plain(
                self.db.reader,
                f"SELECT event_id, type, json FROM events WHERE event_id IN ({marks})",  # noqa: S608
                chunk,
            ):
                out[r[0]] = (r[1], r[2])
        return out

    # -- rows derived from events -------------------------------------------------------------
    def audit_current_state(self) -> list[tuple]:
        """Every ``current_state`` row with the event it names: (room_id, type, state_key,
        event_id, event's room_id, type, state_key, rejected); the event columns are NULL
        when the event is not stored."""
        return _plain(
            self.db.reader,
            "SELECT cs.room_id, cs.type, cs.state_key, cs.event_id, e.room_id, e.type,"
            " e.state_key, e.rejected FROM current_state cs"
            " LEFT JOIN events e ON e.event_id = cs.event_id",
        )

    def audit_current_membership(self) -> list[tuple]:
        """Every ``current_membership`` row with the event it names and the room's current
        member state: (room_id, user_id, membership, event_id, stream_pos, event's room_id,
        type, state_key, stream_pos, content.membership, current_state's member event ID)."""
        return _plain(
            self.db.reader,
            "SELECT cm.room_id, cm.user_id, cm.membership, cm.event_id, cm.stream_pos,"
            " e.room_id, e.type, e.state_key, e.stream_pos,"
            " json_extract(CAST(e.json AS TEXT), '$.content.membership'),"
            " (SELECT cs.event_id FROM current_state cs WHERE cs.room_id = cm.room_id"
            "  AND cs.type = 'm.room.member' AND cs.state_key = cm.user_id)"
            " FROM current_membership cm LEFT JOIN events e ON e.event_id = cm.event_id",
        )

    def audit_membership_events(self) -> list[tuple]:
        """Every ``membership_events`` row with the event it names: (rowid, room_id, user_id,
        membership, event_id, stream_pos, sender, event's room_id, type, state_key,
        stream_pos, sender, content.membership)."""
        return _plain(
            self.db.reader,
            "SELECT me.rowid, me.room_id, me.user_id, me.membership, me.event_id, me.stream_pos,"
            " me.sender, e.room_id, e.type, e.state_key, e.stream_pos, e.sender,"
            " json_extract(CAST(e.json AS TEXT), '$.content.membership')"
            " FROM membership_events me LEFT JOIN events e ON e.event_id = me.event_id",
        )

    # -- keys ---------------------------------------------------------------------------------
    def audit_device_keys(self) -> list[tuple[str, str, str]]:
        """(user_id, device_id, key_json) of every stored device key."""
        return _plain(self.db.reader, "SELECT user_id, device_id, key_json FROM e2e_device_keys")

    def audit_cross_signing_keys(self) -> list[tuple[str, str, str, str]]:
        """(user_id, key_type, public_key, key_json) of every stored cross-signing key."""
        return _plain(
            self.db.reader,
            "SELECT user_id, key_type, public_key, key_json FROM e2e_cross_signing_keys",
        )

    def audit_local_old_signing_keys(self) -> list[tuple[str, str]]:
        """(key_id, verify_key) of the server's retired signing keys."""
        return _plain(self.db.reader, "SELECT key_id, verify_key FROM local_old_signing_keys")
