"""Migration 8 (``*_legal_holds.sql``, issue 10): legal holds and the retention purge job's
progress. A database at the previous version with rows in it (the cbbfc30 fixture, migrated)
keeps every row of every table; the new tables exist, empty, and are usable through the store;
the new indexes serve the purge job's scans; a server started on the database purges."""

from __future__ import annotations

import sqlite3

from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migration_0005 import _dump, _tables
from tests.storage.sqlite.test_migrations import connect, number_of, restore_before

NEW_TABLES = {"legal_holds", "retention_rooms", "retention_deferred"}
NEW_INDEXES = {"retention_deferred_room", "events_room_ts", "local_media_created"}


def _version() -> int:
    """This migration's number (the lead numbers the parts' migrations at merge)."""
    return number_of("legal_holds")


def _before(tmp_path):
    return restore_before(tmp_path, "legal_holds")


def _indexes(path) -> set[str]:
    conn = sqlite3.connect(str(path))
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()


def test_rows_are_kept_and_the_tables_added(tmp_path):
    _, path = _before(tmp_path)
    old_tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert not NEW_TABLES & set(old_tables)
    before = _dump(path, old_tables)
    assert sum(len(v) for v in before.values()) > 200  # a database with rows in it
    c = connect(path)
    v = _version()
    assert migrate(c, str(path), mig.migrations()[:v]) == v
    c.close()
    assert _dump(path, old_tables) == before
    assert set(_tables(path)) >= NEW_TABLES
    assert _indexes(path) >= NEW_INDEXES
    assert all(rows == [] for rows in _dump(path, NEW_TABLES).values())


def test_the_store_uses_the_new_tables(tmp_path):
    _, path = _before(tmp_path)
    store = SqliteStore(path)
    store.open()  # migrates to the newest version
    try:
        size = store.ledger_size()
        (room_id,) = store.retention_room_ids()[:1]

        def write(conn):
            assert store.set_legal_hold_in(conn, "user", "@ada:localhost", "case", "@adm:x", 5)
            assert not store.set_legal_hold_in(conn, "user", "@ada:localhost", "again", "@a:x", 6)
            assert store.set_legal_hold_in(conn, "room", room_id, None, "@adm:x", 7)
            store.set_retention_progress_in(conn, room_id, 100, 42)
            store.defer_retention_in(conn, room_id, ["$e1", "$e2"])
            store.defer_retention_in(conn, room_id, ["$e1"])
            return store.legal_hold_targets_in(conn)

        assert store.transaction_sync(write) == ({"@ada:localhost"}, {room_id})
        assert [(h["kind"], h["target"], h["reason"]) for h in store.list_legal_holds()] == [
            ("user", "@ada:localhost", "again"), ("room", room_id, None)]  # fmt: skip
        assert len(store.legal_holds_for("@ada:localhost", room_id)) == 2
        assert store.retention_progress(room_id) == (100, 42)
        assert [r[0] for r in store.db.read("SELECT event_id FROM retention_deferred")] == [
            "$e1", "$e2"]  # fmt: skip

        def lift(conn):
            store.undefer_retention_in(conn, ["$e1", "$e2"])
            return (store.lift_legal_hold_in(conn, "user", "@ada:localhost"),
                    store.lift_legal_hold_in(conn, "user", "@ada:localhost"))  # fmt: skip

        assert store.transaction_sync(lift) == (True, False)
        assert store.legal_holds_for("@ada:localhost", None) == []
        assert store.ledger_size() == size  # the store's methods write no record themselves
    finally:
        store.close()
