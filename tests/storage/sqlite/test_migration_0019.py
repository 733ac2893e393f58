"""The pending redactions migration (``0019_pending_redactions.sql``): on a database at the
previous version with rows in it (the cbbfc30 fixture, migrated), every row of every table is
kept and the new table exists, empty; the store finds a kept redaction by its target (only
while the redaction itself is stored)."""

from __future__ import annotations

import sqlite3

from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migration_0005 import _dump, _tables
from tests.storage.sqlite.test_migrations import connect, number_of, restore_before

NAME = "pending_redactions"


def test_rows_are_kept_and_the_table_is_added(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert "pending_redactions" not in tables
    before = _dump(path, tables)
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[: number_of(NAME)]) == number_of(NAME)
    c.close()
    assert sorted(t for t in _tables(path) if t != mig.VERSION_TABLE) == sorted(
        [*tables, "pending_redactions"]
    )
    assert _dump(path, tables) == before
    store = SqliteStore(path)
    store.open()
    try:
        conn = sqlite3.connect(str(path), isolation_level=None)
        try:
            assert conn.execute("SELECT COUNT(*) FROM pending_redactions").fetchone()[0] == 0
            stored, room = conn.execute("SELECT event_id, room_id FROM events LIMIT 1").fetchone()
            conn.executemany(
                "INSERT INTO pending_redactions (target_id, redaction_id, room_id) VALUES (?,?,?)",
                [("$target", stored, room), ("$target", "$gone", room)],
            )
        finally:
            conn.close()
        assert store.pending_redactions_of("$target") == [stored]
        assert store.pending_redactions_of("$other") == []
    finally:
        store.close()
