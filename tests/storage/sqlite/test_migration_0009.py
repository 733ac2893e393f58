"""The erasure migration (``NNNN_erasure.sql``, numbered 0007 in the compliance contract: the
next free number at merge): a database at the previous version with rows in it (the cbbfc30
fixture, migrated) keeps every row of every table and gains ``erased_users``, empty; the store
uses it, and ``bastion admin erase-user`` erases one of the fixture's users on the migrated
database."""

from __future__ import annotations

import json
import sqlite3

from bastion.cli import main
from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migration_0005 import MEDIA_ID, _dump, _tables
from tests.storage.sqlite.test_migrations import connect, restore_before

#: The version of the erasure migration.
VERSION = [m.name for m in mig.migrations()].index("erasure") + 1


def _at_previous_version(tmp_path):
    return restore_before(tmp_path, "erasure")


def test_rows_are_kept_and_erased_users_added(tmp_path):
    _, path = _at_previous_version(tmp_path)
    old_tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert "erased_users" not in old_tables
    before = _dump(path, old_tables)
    assert sum(len(v) for v in before.values()) > 200
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[:VERSION]) == VERSION
    c.close()
    assert _dump(path, old_tables) == before
    assert _dump(path, ["erased_users"]) == {"erased_users": []}


def test_the_store_uses_the_new_table(tmp_path):
    _, path = _at_previous_version(tmp_path)
    store = SqliteStore(path)
    store.open()
    try:
        assert not store.is_user_erased("@ada:localhost")
        store.transaction_sync(
            lambda conn: store.mark_user_erased_in(conn, "@ada:localhost", 5, False)
        )
        # Erased again (with redactions this time): one row, the flag kept once set.
        store.transaction_sync(
            lambda conn: store.mark_user_erased_in(conn, "@ada:localhost", 6, True)
        )
        store.transaction_sync(
            lambda conn: store.mark_user_erased_in(conn, "@ada:localhost", 7, False)
        )
        assert store.is_user_erased("@ada:localhost")
        assert not store.is_user_erased("@bob:localhost")
    finally:
        store.close()
    c = sqlite3.connect(str(path))
    assert c.execute("SELECT * FROM erased_users").fetchall() == [("@ada:localhost", 7, 1)]
    c.close()


def test_erase_a_user_of_the_migrated_database(tmp_path, capsys):
    data, path = _at_previous_version(tmp_path)
    c = sqlite3.connect(str(path))
    ada_events = [r[0] for r in c.execute("SELECT json FROM events WHERE sender = ?"
                                          " AND type = 'm.room.message'", ("@ada:localhost",))]  # fmt: skip
    bob_before = c.execute("SELECT event_id, json FROM events WHERE sender = '@bob:localhost'"
                           " AND type = 'm.room.message'").fetchall()  # fmt: skip
    c.close()
    assert ada_events and any(json.loads(e)["content"] for e in ada_events)
    capsys.readouterr()
    assert main(["admin", "erase-user", "@ada:localhost", "--data-dir", str(data)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["media"] == 1 and out["counts"]["events_stripped"] >= len(ada_events)
    c = sqlite3.connect(str(path))
    try:
        assert c.execute("SELECT user_id FROM erased_users").fetchall() == [("@ada:localhost",)]
        rows = c.execute("SELECT json FROM events WHERE sender = ? AND type = 'm.room.message'",
                         ("@ada:localhost",)).fetchall()  # fmt: skip
        assert rows and all(json.loads(r[0])["content"] == {} for r in rows)
        assert (
            c.execute("SELECT 1 FROM local_media WHERE media_id = ?", (MEDIA_ID,)).fetchall() == []
        )
        # Bob's events are untouched.
        bob = c.execute("SELECT event_id, json FROM events WHERE sender = '@bob:localhost'"
                        " AND type = 'm.room.message'").fetchall()  # fmt: skip
        assert bob == bob_before and any(json.loads(r[1])["content"] for r in bob)
    finally:
        c.close()
    assert not list((data / "media").rglob(MEDIA_ID))
