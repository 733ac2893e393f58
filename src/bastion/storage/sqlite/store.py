"""The store: every persistent fact of the homeserver, behind methods.

It is assembled from one mixin per spec area (accounts, rooms, e2ee, media, ...). The schema is
defined in one place, the numbered migrations of :mod:`bastion.storage.sqlite.migrations`,
applied on open; each mixin module declares its stream-position columns in ``STREAMS``. All
persisted streams (room events, to-device messages, device-list changes, account data,
receipts, ...) share one global, strictly increasing *stream position*, assigned on the writer
thread; a sync token names a position, and "what changed since" is "rows with a greater
position".
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bastion.storage.interface import Store
from bastion.storage.sqlite import (
    account_data,
    accounts,
    admin_directory,
    audit,
    device_lists,
    e2ee,
    erasure,
    event_contents,
    export,
    federation,
    federation_inbound,
    federation_queue,
    guard_decisions,
    guard_limits,
    guard_login,
    guard_policy,
    ledger,
    ledger_audit,
    media,
    openid,
    push,
    relations,
    retention,
    rooms,
    search,
    server_notices,
    user_directory,
)
from bastion.storage.sqlite.accounts import RequesterCache
from bastion.storage.sqlite.database import Database

log = logging.getLogger(__name__)
T = TypeVar("T")

MIXINS = (accounts, rooms, e2ee, media, account_data, federation, device_lists, federation_queue,
          federation_inbound, ledger, ledger_audit, guard_decisions, guard_limits, guard_login,
          guard_policy, server_notices, event_contents, audit, export, retention,
          admin_directory, erasure, relations, openid, user_directory, search, push)  # fmt: skip


class SqliteStore(
    accounts.AccountsStore,
    rooms.RoomsStore,
    e2ee.E2EEStore,
    media.MediaStore,
    account_data.AccountDataStore,
    federation.FederationStore,
    device_lists.DeviceListsStore,
    federation_queue.FederationQueueStore,
    federation_inbound.FederationInboundStore,
    ledger.LedgerStore,
    ledger_audit.LedgerAuditStore,
    guard_decisions.GuardDecisionsStore,
    guard_limits.GuardLimitsStore,
    guard_login.GuardLoginStore,
    guard_policy.GuardPolicyStore,
    server_notices.ServerNoticesStore,
    event_contents.EventContentsStore,
    audit.AuditTrailStore,
    export.ExportStore,
    retention.RetentionStore,
    admin_directory.AdminDirectoryStore,
    erasure.ErasureStore,
    relations.RelationsStore,
    openid.OpenIdStore,
    user_directory.UserDirectoryStore,
    search.SearchStore,
    push.PushStore,
):
    def __init__(self, path: Path, synchronous: str = "NORMAL", key: bytes | None = None) -> None:
        self.db = Database(path, synchronous, key)
        self._stream_pos = 0
        self._committed_pos = 0
        self._wakeups: list[tuple[str, ...]] = []
        self._lock = threading.Lock()
        self._listeners: list[Callable[[int, set[str]], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_calls: dict[tuple[Callable[..., None], tuple], None] = {}
        self._closed = False
        self.room_caches = rooms.RoomReadCaches()
        self.ledger_room_versions = {}
        self.requester_cache = RequesterCache()

    def open(self) -> None:
        """Open and migrate the database (raises
        :class:`~bastion.storage.sqlite.migrations.SchemaError` when it cannot be used)."""
        self.db.open()
        top = 0
        for m in MIXINS:
            for table, column in m.STREAMS:
                row = self.db.read_one(f"SELECT MAX({column}) FROM {table}")  # noqa: S608
                if row and row[0] is not None:
                    top = max(top, row[0])
        self._stream_pos = self._committed_pos = top
        self.db.add_commit_hook(self._after_commit)

    def close(self) -> None:
        self._closed = True
        self.db.close()

    # -- transactions -------------------------------------------------------------------------
    async def transaction(self, fn: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        """Run ``fn(conn)`` in one write transaction on the writer thread (group commit, see
        :mod:`bastion.storage.sqlite.database`); return its result once committed. ``durable``:
        committed on its own with ``synchronous=FULL`` (survives power loss, and so does every
        earlier commit)."""
        return await self.db.write(fn, durable=durable)

    def transaction_sync(self, fn: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        """For command-line tools without an event loop: a write, waited for until committed."""
        return self.db.write_sync(fn, durable=durable)

    # -- stream positions and wake-ups --------------------------------------------------------
    @property
    def current_pos(self) -> int:
        """The highest stream position whose write has committed."""
        return self._committed_pos

    def add_listener(self, fn: Callable[[int, set[str]], None]) -> None:
        """``fn(position, keys)`` runs on the writer thread after each commit."""
        self._listeners.append(fn)

    # -- running code on the event loop after a commit ------------------------------------------
    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop that :meth:`run_after_commit` calls run on (the server's)."""
        self._loop = loop
        self._closed = False

    def run_after_commit(self, fn: Callable[..., None], *args: object) -> None:
        """Inside a write function: call ``fn(*args)`` on the event loop once the current write
        batch has committed (before the writers' awaits return); equal calls within one batch
        run once, so ``args`` must be hashable. Never after the store closed; dropped when no
        loop is attached (command-line tools)."""
        self._loop_calls[(fn, args)] = None

    def _run_loop_calls(self, calls: dict[tuple[Callable[..., None], tuple], None]) -> None:
        if self._closed:
            return
        for fn, args in calls:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - one failing callback must not stop the others
                log.exception("after-commit callback failed")

    def _after_commit(self, _results: list) -> None:
        caches = self.room_caches
        if caches.events_rewritten:
            # Before the position moves: no read after this commit may see a parsed row kept
            # from before it.
            caches.events_rewritten = False
            caches.event_rewrites += 1
        # The committed position moves first: a callback or a woken /sync that runs on the loop
        # before this thread goes on must already read the new position (else it finds nothing
        # new and waits again, never to be woken).
        self._committed_pos = self._stream_pos
        calls, self._loop_calls = self._loop_calls, {}
        if calls and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._run_loop_calls, calls)
            except RuntimeError:  # the loop is closed
                pass
        keys: set[str] = set()
        for group in self._wakeups:
            keys.update(group)
        self._wakeups = []
        for fn in self._listeners:
            fn(self._committed_pos, keys)


#: The SQLite store implements the storage interface (checked by the type checker).
_check: type[Store] = SqliteStore
