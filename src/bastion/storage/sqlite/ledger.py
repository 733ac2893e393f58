"""The ledger's storage (issue 8): leaves, tiles, tree state, checkpoints, cosignatures,
witnesses, anchors, and the latest checkpoint of each log this server witnesses. The tables
come from migration 4 (``migrations/0004_ledger.py``); the record formats from
:mod:`bastion.ledger.records`.

A leaf is appended *in the same transaction* as the thing it records: a write function calls
:meth:`LedgerStore.ledger_append_in` (actions) or the rooms stores call
:func:`append_event_leaf` (every ``events`` insert, which keeps the leaf's index in
``events.ledger_idx``), so a crash never leaves one without the other. Its index is the largest plus one, taken inside the write transaction (the writer holds
SQLite's write lock from ``BEGIN IMMEDIATE``, also against another process such as an admin
command), so indexes are dense from 0 and a rolled-back write leaves no gap. Appending only
builds the record and inserts it: leaf hashes, tiles and the tree are computed later by the
integrator (``bastion.ledger.service``).

A checkpoint is stored with a *durable* write (:meth:`Database.write` with ``durable=True``):
see :mod:`bastion.storage.sqlite.database` for why one ``synchronous=FULL`` commit makes every
earlier commit durable too.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from bastion.core.base64 import encode_base64
from bastion.core.events import check_content_hash, compute_reference_hash
from bastion.errors import MatrixError
from bastion.ledger.records import KIND_EVENT, decision_of, entry_bytes, event_record
from bastion.storage.interface import AnchorRow, CheckpointRow, LedgerEntryRow, WitnessLogRow
from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []

HASH_SIZE = 32
#: A full tile: 2**8 hashes of 32 bytes (tlog-tiles).
FULL_TILE_BYTES = 256 * HASH_SIZE

_INSERT = (
    "INSERT INTO ledger_entries (idx, kind, event_id, subject, action, ts, entry) VALUES"
    " ((SELECT COALESCE(MAX(idx) + 1, 0) FROM ledger_entries),?,?,?,?,?,?)"
)
_ENTRY_COLS = "idx, kind, event_id, subject, action, ts, entry"
_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER

#: The room versions whose event IDs are not reference hashes (``EventIdFormat.V1_OPAQUE``).
OPAQUE_ID_VERSIONS = frozenset({"1", "2"})


def append_entry(conn: sqlite3.Connection, record: Mapping[str, Any]) -> int:
    """Append ``record`` as the next leaf (inside a write function); return its index. A record
    with a ``subject`` and no ``nonce`` gets a random nonce first."""
    if record.get("subject") is not None and record.get("nonce") is None:
        record = {**record, "nonce": secrets.token_urlsafe(16)}
    kind = record["kind"]
    ts = record["origin_server_ts"] if kind == KIND_EVENT else record["ts"]
    cur = conn.execute(
        _INSERT,
        (kind, record.get("event_id"), record.get("subject"), record.get("action"), ts,
         entry_bytes(record)),
    )  # fmt: skip
    idx = cur.lastrowid
    if idx is None:  # never after an INSERT
        raise RuntimeError("the ledger entry was not stored")
    return idx


def append_event_leaf(
    store: StoreBase, conn: sqlite3.Connection, event_id: str, room_id: str, ev: dict,
    stream_pos: int, *, rejected: bool = False, soft: int = 0, outlier: int = 2,
    received: bool = False,
) -> int | None:  # fmt: skip
    """The leaf of an ``events`` row about to be inserted (inside the same write function; the
    row keeps the returned index in its ``ledger_idx`` column): its ID, room, sender, type,
    state key, origin timestamp, stream position and the decision (from the row's ``rejected``
    and ``soft_failed`` values; ``soft == outlier`` is an outlier), never its content. In rooms
    whose event IDs are not reference hashes (v1, v2) the record also carries the reference
    hash. A ``received`` event (federation) whose content hash does not match was stored in
    its redacted form (PDU check 3): its record says so (``redacted_on_receipt``), so that
    content removed later from a remote event is not mistaken for it. None, and no leaf, when
    ``store.ledger_enabled`` is False (benchmarks only).

    This runs on every message send: it builds the record and inserts it, nothing more (the
    entry is the record's canonical JSON: its values are strings, integers and null, which
    orjson with sorted keys writes canonically, as :func:`~bastion.ledger.records.entry_bytes`
    does after its checks)."""
    if not store.ledger_enabled:
        return None
    state_key = ev.get("state_key")
    ref = None
    version = _room_version(store, conn, room_id)
    if version in OPAQUE_ID_VERSIONS:
        try:
            ref = encode_base64(compute_reference_hash(ev, version))
        except MatrixError:  # unhashable content: such an event never passes the PDU checks
            ref = None
    redacted_on_receipt = False
    if received:
        try:
            redacted_on_receipt = not check_content_hash(ev)
        except MatrixError:
            redacted_on_receipt = True
    ots = ev["origin_server_ts"]
    record = event_record(
        event_id=event_id, room_id=room_id, sender=ev["sender"], type=ev["type"],
        state_key=state_key if isinstance(state_key, str) else None, origin_server_ts=ots,
        stream_pos=stream_pos, decision=decision_of(rejected, soft, outlier), reference_hash=ref,
        redacted_on_receipt=redacted_on_receipt,
    )  # fmt: skip
    try:
        entry = orjson.dumps(record, option=_CANONICAL)
    except orjson.JSONEncodeError:  # e.g. a lone surrogate: entry_bytes raises M_BAD_JSON
        entry = entry_bytes(record)
    cur = conn.execute(_INSERT, (KIND_EVENT, event_id, None, None, ots, entry))
    return cur.lastrowid


def _room_version(store: StoreBase, conn: sqlite3.Connection, room_id: str) -> str | None:
    """The room's version (room versions never change, so it is remembered)."""
    versions = store.ledger_room_versions
    version = versions.get(room_id)
    if version is None:
        row = conn.execute(
            "SELECT room_version FROM rooms WHERE room_id = ?", (room_id,)
        ).fetchone()
        if row is None:
            return None
        version = versions[room_id] = row[0]
        if len(versions) > 10_000:
            versions.clear()
    return version


def _entry_row(r: sqlite3.Row | tuple) -> LedgerEntryRow:
    return LedgerEntryRow(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]))


def _checkpoint_row(r: sqlite3.Row | tuple) -> CheckpointRow:
    return CheckpointRow(r[0], bytes(r[1]), bytes(r[2]), r[3])


class LedgerStore(StoreBase):
    """The ledger's tables (see the module docstring)."""

    # -- leaves -------------------------------------------------------------------------------
    def ledger_append_in(self, conn: sqlite3.Connection, record: Mapping[str, Any]) -> int:
        """Inside a write function: append ``record``'s leaf in the same transaction; return its
        0-based index (a record with a subject and no nonce gets a random nonce)."""
        return append_entry(conn, record)

    def ledger_size(self) -> int:
        """The number of committed leaves."""
        row = self.db.read_one("SELECT MAX(idx) FROM ledger_entries")
        return 0 if row is None or row[0] is None else row[0] + 1

    def ledger_entries(self, start: int, end: int) -> list[bytes]:
        """The entries of leaves ``[start, end)``, in order."""
        rows = self.db.read(
            "SELECT entry FROM ledger_entries WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, end),
        )
        return [bytes(r[0]) for r in rows]

    def ledger_entry(self, index: int) -> LedgerEntryRow | None:
        r = self.db.read_one(f"SELECT {_ENTRY_COLS} FROM ledger_entries WHERE idx = ?", (index,))  # noqa: S608
        return _entry_row(r) if r else None

    def ledger_event_entry(self, event_id: str) -> LedgerEntryRow | None:
        """The latest leaf of an event (an outlier stored again de-outliered has two): the one
        its ``events`` row names (``ledger_idx``). None for an event the server does not hold
        or stored with the ledger off."""
        r = self.db.read_one(
            f"SELECT {_ENTRY_COLS} FROM ledger_entries WHERE idx ="  # noqa: S608
            " (SELECT ledger_idx FROM events WHERE event_id = ?) AND event_id = ?",
            (event_id, event_id),
        )
        return _entry_row(r) if r else None

    def ledger_iter_entries(self, start: int = 0, batch: int = 10000) -> Iterator[LedgerEntryRow]:
        """Every leaf from ``start`` on, in order, read ``batch`` at a time."""
        nxt = start
        while True:
            rows = self.db.read(
                f"SELECT {_ENTRY_COLS} FROM ledger_entries WHERE idx >= ?"  # noqa: S608
                " ORDER BY idx LIMIT ?",
                (nxt, batch),
            )
            for r in rows:
                yield _entry_row(r)
            if len(rows) < batch:
                return
            nxt = rows[-1][0] + 1

    # -- tiles and the tree -------------------------------------------------------------------
    def ledger_store_tiles_in(
        self, conn: sqlite3.Connection, tiles: Sequence[tuple[int, int, bytes]]
    ) -> None:
        """Store full tiles (level, index, 8192 bytes); immutable: a stored one is kept."""
        for _, _, data in tiles:
            if len(data) != FULL_TILE_BYTES:
                raise ValueError(f"a full tile is {FULL_TILE_BYTES} bytes, not {len(data)}")
        conn.executemany(
            "INSERT OR IGNORE INTO ledger_tiles (level, idx, data) VALUES (?,?,?)",
            [(level, index, bytes(data)) for level, index, data in tiles],
        )

    def ledger_tile(self, level: int, index: int) -> bytes | None:
        r = self.db.read_one(
            "SELECT data FROM ledger_tiles WHERE level = ? AND idx = ?", (level, index)
        )
        return bytes(r[0]) if r else None

    def ledger_tree_state(self) -> tuple[int, list[bytes]] | None:
        """The integrated size and right edge (largest subtree first) the integrator saved."""
        r = self.db.read_one("SELECT size, edge FROM ledger_tree_state WHERE k = 1")
        if r is None:
            return None
        edge = bytes(r[1])
        return r[0], [edge[i : i + HASH_SIZE] for i in range(0, len(edge), HASH_SIZE)]

    def ledger_save_tree_state_in(
        self, conn: sqlite3.Connection, size: int, edge: Sequence[bytes]
    ) -> None:
        if any(len(h) != HASH_SIZE for h in edge):
            raise ValueError("the right edge is a list of 32-byte hashes")
        conn.execute(
            "INSERT OR REPLACE INTO ledger_tree_state (k, size, edge) VALUES (1, ?, ?)",
            (size, b"".join(edge)),
        )

    # -- checkpoints and cosignatures ---------------------------------------------------------
    async def ledger_add_checkpoint(self, size: int, root: bytes, note: bytes, ts: int) -> None:
        """Store a signed checkpoint with a durable commit (``synchronous=FULL``: the WAL is
        fsynced, so every leaf committed before it is on disk for good when this returns).
        Refuses (ValueError) a size not larger than the latest stored checkpoint's."""

        def fn(conn: sqlite3.Connection) -> None:
            top = conn.execute("SELECT MAX(size) FROM ledger_checkpoints").fetchone()[0]
            if top is not None and size <= top:
                raise ValueError(
                    f"a checkpoint of size {size} is not newer than the latest one ({top})"
                )
            conn.execute(
                "INSERT INTO ledger_checkpoints (size, root, note, ts) VALUES (?,?,?,?)",
                (size, bytes(root), bytes(note), ts),
            )

        await self.db.write(fn, durable=True)

    def ledger_latest_checkpoint(self) -> CheckpointRow | None:
        r = self.db.read_one(
            "SELECT size, root, note, ts FROM ledger_checkpoints ORDER BY size DESC LIMIT 1"
        )
        return _checkpoint_row(r) if r else None

    def ledger_checkpoint(self, size: int) -> CheckpointRow | None:
        r = self.db.read_one(
            "SELECT size, root, note, ts FROM ledger_checkpoints WHERE size = ?", (size,)
        )
        return _checkpoint_row(r) if r else None

    def ledger_iter_checkpoints(self) -> Iterator[CheckpointRow]:
        """Every stored checkpoint, by ascending size."""
        after = -1
        while True:
            rows = self.db.read(
                "SELECT size, root, note, ts FROM ledger_checkpoints WHERE size > ?"
                " ORDER BY size LIMIT 1000",
                (after,),
            )
            for r in rows:
                yield _checkpoint_row(r)
            if len(rows) < 1000:
                return
            after = rows[-1][0]

    async def ledger_add_cosignature(self, size: int, witness: str, line: bytes, ts: int) -> None:
        """A witness's cosignature line on the checkpoint of ``size`` (a newer one from the
        same witness replaces it)."""
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO ledger_cosignatures (size, witness, line, ts)"
                " VALUES (?,?,?,?)",
                (size, witness, bytes(line), ts),
            )
        )

    def ledger_cosignatures(self, size: int) -> list[bytes]:
        rows = self.db.read(
            "SELECT line FROM ledger_cosignatures WHERE size = ? ORDER BY witness", (size,)
        )
        return [bytes(r[0]) for r in rows]

    def ledger_witness_size(self, witness: str) -> int | None:
        """The size this log last knew ``witness`` to hold."""
        r = self.db.read_one("SELECT size FROM ledger_witness_sizes WHERE witness = ?", (witness,))
        return r[0] if r else None

    async def ledger_set_witness_size(self, witness: str, size: int) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO ledger_witness_sizes (witness, size) VALUES (?,?)",
                (witness, size),
            )
        )

    # -- anchors ------------------------------------------------------------------------------
    async def ledger_add_anchor(
        self, anchor: str, size: int, root: bytes, receipt: Mapping, ts: int
    ) -> int:
        receipt_json = orjson.dumps(dict(receipt), option=orjson.OPT_SORT_KEYS).decode()

        def fn(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO ledger_anchors (anchor, size, root, receipt, ts) VALUES (?,?,?,?,?)",
                (anchor, size, bytes(root), receipt_json, ts),
            )
            if cur.lastrowid is None:  # never after an INSERT
                raise RuntimeError("the anchor was not stored")
            return cur.lastrowid

        return await self.db.write(fn)

    def ledger_anchors(self, limit: int = 100) -> list[AnchorRow]:
        """The latest anchor receipts, newest first."""
        rows = self.db.read(
            "SELECT id, anchor, size, root, receipt, ts FROM ledger_anchors"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [AnchorRow(r[0], r[1], r[2], bytes(r[3]), orjson.loads(r[4]), r[5]) for r in rows]

    # -- as a witness for other logs ----------------------------------------------------------
    def witness_log_state(self, origin: str) -> WitnessLogRow | None:
        r = self.db.read_one(
            "SELECT origin, size, root, note, ts FROM witness_logs WHERE origin = ?", (origin,)
        )
        return WitnessLogRow(r[0], r[1], bytes(r[2]), bytes(r[3]), r[4]) if r else None

    def witness_update_log_in(
        self, conn: sqlite3.Connection, origin: str, expect_size: int | None, size: int,
        root: bytes, note: bytes, ts: int,
    ) -> bool:  # fmt: skip
        """Compare-and-swap the latest checkpoint of ``origin``: only when the stored size is
        ``expect_size`` (None: nothing stored yet). Returns whether it was stored."""
        if expect_size is None:
            cur = conn.execute(
                "INSERT OR IGNORE INTO witness_logs (origin, size, root, note, ts)"
                " VALUES (?,?,?,?,?)",
                (origin, size, bytes(root), bytes(note), ts),
            )
        else:
            cur = conn.execute(
                "UPDATE witness_logs SET size = ?, root = ?, note = ?, ts = ?"
                " WHERE origin = ? AND size = ?",
                (size, bytes(root), bytes(note), ts, origin, expect_size),
            )
        return cur.rowcount == 1
