"""The link-tables migration (``0010_link_tables_without_rowid.sql``): on a database at the
previous version with rows in it (the cbbfc30 fixture, migrated), every row of every table is
kept, the four link tables become WITHOUT ROWID with the same columns and keys, the secondary
index on prev events is still there, and the store reads the moved rows."""

from __future__ import annotations

import sqlite3

from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migration_0005 import _dump, _tables
from tests.storage.sqlite.test_migrations import connect, number_of, restore_before

NAME = "link_tables_without_rowid"
LINK_TABLES = ["event_auth", "event_edges", "event_txns", "forward_extremities"]


def _sql(path, kind: str, name: str) -> str | None:
    conn = sqlite3.connect(str(path))
    try:
        row = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = ? AND name = ?", (kind, name)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


def test_rows_are_kept_and_link_tables_lose_their_rowid(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    before = _dump(path, tables)
    assert all(before[t] for t in ("event_auth", "event_edges", "forward_extremities"))
    for table in LINK_TABLES:
        assert "WITHOUT ROWID" not in (_sql(path, "table", table) or "")
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[: number_of(NAME)]) == number_of(NAME)
    c.close()
    assert [t for t in _tables(path) if t != mig.VERSION_TABLE] == tables
    assert _dump(path, tables) == before
    for table in LINK_TABLES:
        assert (_sql(path, "table", table) or "").rstrip().endswith("WITHOUT ROWID")
    assert _sql(path, "index", "event_edges_prev") is not None
    conn = sqlite3.connect(str(path))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def test_the_store_reads_the_moved_rows(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    conn = sqlite3.connect(str(path))
    try:
        txn = conn.execute(
            "SELECT user_id, device_id, scope, txn_id, event_id FROM event_txns LIMIT 1"
        ).fetchone()
        extremity = conn.execute(
            "SELECT room_id, event_id FROM forward_extremities LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    assert txn is not None and extremity is not None
    store = SqliteStore(path)
    store.open()  # migrates to the newest version
    try:
        assert store.get_txn_event(*txn[:4]) == txn[4]
        assert extremity[1] in store.get_forward_extremities(extremity[0])
    finally:
        store.close()
