"""The part of the SQLite store every per-area mixin builds on: the database and the global
stream position with its wake-ups (see :mod:`bastion.storage.sqlite.store`)."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from bastion.storage.sqlite.database import Database

if TYPE_CHECKING:
    from bastion.storage.sqlite.accounts import RequesterCache


class StoreBase:
    """The database (``db``), stream positions and wake-ups, shared by every mixin of
    :class:`~bastion.storage.sqlite.store.SqliteStore`, which sets them up."""

    db: Database
    _stream_pos: int
    _wakeups: list[tuple[str, ...]]
    #: Whether every ``events`` insert appends the event's ledger leaf
    #: (:func:`bastion.storage.sqlite.ledger.append_event_leaf`). For benchmarks only (the ledger
    #: on and off in the same run): a server with it off keeps no record of its events.
    ledger_enabled: bool = True
    #: room ID -> room version, remembered by the event leaves (room versions never change).
    ledger_room_versions: dict[str, str]
    #: access token hash -> requester, while no revocation has happened (accounts.py).
    requester_cache: RequesterCache

    def next_stream_pos(self, conn: sqlite3.Connection) -> int:
        """A new stream position. Call only inside a write function (the writer thread)."""
        self._stream_pos += 1
        return self._stream_pos

    def wake(self, *keys: str) -> None:
        """Ask the notifier to wake sync waiters on these keys (user IDs, room IDs) once the
        current write batch commits. Call only inside a write function."""
        self._wakeups.append(keys)
