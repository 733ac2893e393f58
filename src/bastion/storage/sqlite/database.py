"""SQLite access: one writer thread with group commit, and reads on the caller's thread.

Writes are functions ``fn(conn) -> result`` queued to the writer thread. The writer takes every
queued function, runs each inside its own SAVEPOINT (so one failing write does not undo the
others), commits the batch once, and only then resolves the callers' futures: a write whose
future resolved is on disk (WAL; ``synchronous=NORMAL`` survives a killed process). Reads use a
separate connection on the event-loop thread; WAL lets them run beside the writer.

A *durable* write (``write(fn, durable=True)``, used before a ledger checkpoint is signed) runs in
a batch of its own, committed with ``PRAGMA synchronous=FULL`` on the writer connection (set back
to the configured mode right after). Why one such commit makes every earlier commit durable too:
in WAL mode, ``synchronous=NORMAL`` appends each commit's frames to the WAL without an fsync
(the WAL is only fsynced when it is checkpointed into the database file, and the database file
is fsynced before the WAL is reset, so frames that left the WAL are on disk already), while
``FULL`` fsyncs the WAL at the commit. The WAL is written strictly in order and an fsync flushes
the whole file, so that fsync puts every frame written before it on disk as well; and recovery
replays the WAL's frames in order up to the last valid commit (each frame's checksum chains
over all the frames before it), so after a power cut the database holds every transaction up to
and including the durable one.

A *maintenance* step (``maintain(fn)``: ``VACUUM``, a truncating WAL checkpoint, which SQLite
refuses inside a transaction) runs on the writer thread between two batches, outside any
transaction.

Opening brings the schema to the newest version (:mod:`bastion.storage.sqlite.migrations`) on
the writer connection before anything else runs, and refuses a database newer than this code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bastion.storage.sqlite import at_rest, driver, migrations

log = logging.getLogger(__name__)
T = TypeVar("T")

_STOP = object()
#: The mode of a queued item run outside a transaction (:meth:`Database.maintain`).
_BARE = "bare"


SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def connection_pragmas(synchronous: str) -> list[str]:
    """Every pragma set on each connection, in one place. Durability comes from the first two:
    WAL, and ``synchronous`` as configured (``NORMAL`` by default: a committed write survives a
    killed process; ``FULL`` also survives power loss). ``secure_delete``: what a write deletes
    or overwrites is zeroed in its page, not left in free space (erasure, issue 10: measured
    at no cost beyond noise on an insert/update/delete mix, so it is always on)."""
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
    return [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous}",
        "PRAGMA foreign_keys=ON",
        "PRAGMA busy_timeout=30000",
        "PRAGMA secure_delete=ON",
    ]


def _connect(path: Path, synchronous: str, key: bytes | None) -> sqlite3.Connection:
    """A connection with every pragma set (``key``: the database is encrypted at rest, see
    :mod:`bastion.storage.sqlite.driver`)."""
    conn: sqlite3.Connection = driver.connect(
        str(path), key=key, isolation_level=None, check_same_thread=False, timeout=30
    )
    for pragma in connection_pragmas(synchronous):
        conn.execute(pragma)
    return conn


class Database:
    def __init__(self, path: Path, synchronous: str = "NORMAL", key: bytes | None = None) -> None:
        self.path = path
        #: The database key when it is encrypted at rest (SQLCipher), else None.
        self._key = key
        self._synchronous = synchronous.upper()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._on_commit: list[Callable[[list[Any]], None]] = []
        #: The database's lock file, held shared while open (a rekey takes it exclusively).
        self._lock_fd: int | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def open(self, available: Sequence[migrations.Migration] | None = None) -> int:
        """Open the database and migrate it to the newest of ``available`` (default: every
        migration in :mod:`bastion.storage.sqlite.migrations`); returns the schema version.
        Raises :class:`~bastion.storage.sqlite.migrations.SchemaError` (the database is left
        closed) for a database newer than this code, one it did not write, or a failed
        migration."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = at_rest.shared_lock(self.path)
        try:
            writer = _connect(self.path, self._synchronous, self._key)
        except BaseException:
            self._unlock()
            raise
        try:
            version = migrations.migrate(writer, str(self.path), available)
        except BaseException:
            writer.close()
            self._unlock()
            raise
        self._writer = writer
        self._reader = _connect(self.path, self._synchronous, self._key)
        self._reader.execute("PRAGMA query_only=ON")
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()
        return version

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- reads ------------------------------------------------------------------------------
    @property
    def reader(self) -> sqlite3.Connection:
        assert self._reader is not None, "database is not open"
        return self._reader

    def read(self, sql: str, args: tuple | list = ()) -> list[sqlite3.Row]:
        return self.reader.execute(sql, args).fetchall()

    def read_one(self, sql: str, args: tuple | list = ()) -> sqlite3.Row | None:
        return self.reader.execute(sql, args).fetchone()

    # -- writes -----------------------------------------------------------------------------
    async def write(self, fn: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        """Run ``fn(conn)`` in a transaction on the writer thread; return once committed.
        ``durable``: in a batch of its own, committed with ``synchronous=FULL`` (see the module
        docstring)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._queue.put((fn, loop, fut, durable))
        return await fut

    def write_sync(self, fn: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        """For command-line tools without an event loop: run a write and wait for its commit
        (``durable`` as for :meth:`write`)."""
        done = threading.Event()
        box: dict = {}

        def resolve(ok: bool, value: Any) -> None:
            box["ok"], box["value"] = ok, value
            done.set()

        self._queue.put((fn, None, resolve, durable))
        done.wait()
        if not box["ok"]:
            raise box["value"]
        return box["value"]

    async def maintain(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the writer thread *outside* any transaction, alone (between two
        batches): for what SQLite refuses inside one (``VACUUM``, ``PRAGMA
        wal_checkpoint(TRUNCATE)``). ``fn`` manages its own transactions, if any."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._queue.put((fn, loop, fut, _BARE))
        return await fut

    def maintain_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """:meth:`maintain` for command-line tools without an event loop."""
        done = threading.Event()
        box: dict = {}

        def resolve(ok: bool, value: Any) -> None:
            box["ok"], box["value"] = ok, value
            done.set()

        self._queue.put((fn, None, resolve, _BARE))
        done.wait()
        if not box["ok"]:
            raise box["value"]
        return box["value"]

    def add_commit_hook(self, hook: Callable[[list[Any]], None]) -> None:
        """``hook(results)`` runs on the writer thread after each committed batch."""
        self._on_commit.append(hook)

    def _run(self) -> None:
        conn = self._writer
        assert conn is not None
        carried = None  # a durable write taken off the queue while filling a batch
        while True:
            item = carried if carried is not None else self._queue.get()
            carried = None
            if item is _STOP:
                return
            batch = [item]
            durable = item[3]
            while not durable and len(batch) < 256:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._queue.put(_STOP)
                    break
                if nxt[3]:  # a durable write commits in a batch of its own: the next one
                    carried = nxt  # (so does a write outside a transaction)
                    break
                batch.append(nxt)
            if durable == _BARE:
                outcomes = [self._bare(conn, item[0])]
            else:
                outcomes = self._commit(conn, batch, durable)
            committed = [value for ok, value in outcomes if ok]
            for hook in self._on_commit:
                try:
                    hook(committed)
                except Exception:  # noqa: BLE001
                    log.exception("commit hook failed")
            for (_, loop, fut, _), (ok, value) in zip(batch, outcomes, strict=True):
                if loop is None:
                    fut(ok, value)
                else:
                    loop.call_soon_threadsafe(_resolve, fut, ok, value)

    @staticmethod
    def _bare(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]) -> tuple:
        try:
            return (True, fn(conn))
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            if conn.in_transaction:  # never leave a transaction open for the next batch
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            return (False, e)

    def _commit(
        self, conn: sqlite3.Connection, batch: list, durable: bool
    ) -> list[tuple[bool, Any]]:
        """Run each write of ``batch`` in its own savepoint and commit them together
        (``durable``: with ``synchronous=FULL``, then back to the configured mode)."""
        outcomes: list[tuple[bool, Any]] = []
        # FULL and EXTRA already sync every commit.
        raise_sync = durable and self._synchronous in ("OFF", "NORMAL")
        try:
            if raise_sync:
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            for fn, _, _, _ in batch:
                conn.execute("SAVEPOINT w")
                try:
                    result = fn(conn)
                except BaseException as e:  # noqa: BLE001 - handed back to the caller
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    outcomes.append((False, e))
                else:
                    conn.execute("RELEASE w")
                    outcomes.append((True, result))
            conn.execute("COMMIT")
        except driver.Error as e:
            log.exception("write batch failed")
            try:
                conn.execute("ROLLBACK")
            except driver.Error:
                pass
            outcomes = [(False, e)] * len(batch)
        finally:
            if raise_sync:
                try:
                    conn.execute(f"PRAGMA synchronous={self._synchronous}")
                except driver.Error:
                    log.exception("could not restore synchronous=%s", self._synchronous)
        return outcomes


def _resolve(fut: asyncio.Future, ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)
