"""The quarantined remote media migration (``0020_quarantined_remote_media.sql``): on a database
at the previous version with rows in it (the cbbfc30 fixture, migrated), every row of every
table is kept and the new table exists, empty; the store quarantines a remote mxc:// URI, cached
or not, dropping the cached row and keeping what it said, and releases it."""

from __future__ import annotations

import asyncio
import sqlite3

from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migration_0005 import _dump, _tables
from tests.storage.sqlite.test_migrations import connect, number_of, restore_before

NAME = "quarantined_remote_media"


def test_rows_are_kept_and_the_table_is_added(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert "quarantined_remote_media" not in tables
    before = _dump(path, tables)
    assert before["users"] and before["local_media"]
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[: number_of(NAME)]) == number_of(NAME)
    c.close()
    after_tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert sorted(after_tables) == sorted([*tables, "quarantined_remote_media"])
    assert _dump(path, tables) == before
    conn = sqlite3.connect(str(path))
    try:
        assert conn.execute("SELECT COUNT(*) FROM quarantined_remote_media").fetchone()[0] == 0
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_the_store_quarantines_cached_and_uncached_remote_media(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    store = SqliteStore(path)
    store.open()  # migrates to the newest version

    async def go() -> None:
        store.attach_loop(asyncio.get_running_loop())

        def cache(conn) -> None:
            store.insert_remote_media_in(
                conn, "a.example", "cached", 1_000, content_type="image/png",
                upload_name="x.png", size=12, sha256="ab" * 32, file_path="remote/aa/bb/f",
                file_key=b"k" * 32,
            )  # fmt: skip

        await store.transaction(cache)
        assert store.remote_media_quarantine("a.example", "cached") is None

        def quarantine(conn):
            return [
                store.quarantine_remote_media_in(conn, "a.example", "cached", None, "bad", 5),
                store.quarantine_remote_media_in(conn, "a.example", "cached", 7, "again", 6),
                store.quarantine_remote_media_in(conn, "b.example:8448", "never", 3, "x", 6),
                store.remote_media_quarantined_in(conn, "b.example:8448", "never"),
                store.remote_media_quarantined_in(conn, "a.example", "never"),
            ]

        got = await store.transaction(quarantine)
        assert got == [(True, "remote/aa/bb/f"), (False, None), (True, None), True, False]
        # The cached row (and its key) is gone; what it said is kept with the quarantine.
        assert store.get_remote_media("a.example", "cached") is None
        q = store.remote_media_quarantine("a.example", "cached")
        assert q is not None
        assert (q["reason"], q["decision_id"], q["ts"], q["content_type"], q["upload_name"],
                q["size"], q["sha256"], q["fetched_ts"], q["last_access_ts"]) == (
            "bad", None, 5, "image/png", "x.png", 12, "ab" * 32, 1_000, 1_000)  # fmt: skip
        never = store.remote_media_quarantine("b.example:8448", "never")
        assert never is not None and never["decision_id"] == 3 and never["size"] is None

        def release(conn):
            return [
                store.unquarantine_remote_media_in(conn, "a.example", "cached"),
                store.unquarantine_remote_media_in(conn, "a.example", "cached"),
            ]

        assert await store.transaction(release) == [True, False]
        assert store.remote_media_quarantine("a.example", "cached") is None
        assert store.remote_media_quarantine("b.example:8448", "never") is not None

    try:
        asyncio.run(go())
    finally:
        store.close()
