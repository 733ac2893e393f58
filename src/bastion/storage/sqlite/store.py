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

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from bastion.storage.sqlite import (
    account_data,
    accounts,
    device_lists,
    e2ee,
    federation,
    federation_inbound,
    federation_queue,
    media,
    rooms,
)
from bastion.storage.sqlite.database import Database

MIXINS = (accounts, rooms, e2ee, media, account_data, federation, device_lists, federation_queue,
          federation_inbound)  # fmt: skip


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
):
    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.db = Database(path, synchronous)
        self._stream_pos = 0
        self._committed_pos = 0
        self._wakeups: list[tuple[str, ...]] = []
        self._lock = threading.Lock()
        self._listeners: list[Callable[[int, set[str]], None]] = []

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
        self.db.close()

    # -- stream positions and wake-ups --------------------------------------------------------
    def next_stream_pos(self, conn: sqlite3.Connection) -> int:
        """A new stream position. Call only inside a write function (the writer thread)."""
        self._stream_pos += 1
        return self._stream_pos

    def wake(self, *keys: str) -> None:
        """Ask the notifier to wake sync waiters on these keys (user IDs, room IDs) once the
        current write batch commits. Call only inside a write function."""
        self._wakeups.append(keys)

    @property
    def current_pos(self) -> int:
        """The highest stream position whose write has committed."""
        return self._committed_pos

    def add_listener(self, fn: Callable[[int, set[str]], None]) -> None:
        """``fn(position, keys)`` runs on the writer thread after each commit."""
        self._listeners.append(fn)

    def _after_commit(self, _results: list) -> None:
        self._committed_pos = self._stream_pos
        keys: set[str] = set()
        for group in self._wakeups:
            keys.update(group)
        self._wakeups = []
        for fn in self._listeners:
            fn(self._committed_pos, keys)
