"""The remote media cache migration (``0017_remote_media.sql``): on a database at the previous
version with rows in it (the cbbfc30 fixture, migrated), every row of every table is kept, the
new table and its index exist and are empty, and the store records, finds, touches, lists and
deletes cached remote files in it."""

from __future__ import annotations

import asyncio
import sqlite3

from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migration_0005 import _dump, _tables
from tests.storage.sqlite.test_migrations import connect, number_of, restore_before

NAME = "remote_media"


def test_rows_are_kept_and_the_table_is_added(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert "remote_media" not in tables
    before = _dump(path, tables)
    assert before["users"] and before["local_media"]
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[: number_of(NAME)]) == number_of(NAME)
    c.close()
    after_tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert sorted(after_tables) == sorted([*tables, "remote_media"])
    assert _dump(path, tables) == before
    conn = sqlite3.connect(str(path))
    try:
        assert conn.execute("SELECT COUNT(*) FROM remote_media").fetchone()[0] == 0
        indexes = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'remote_media'"
        )}  # fmt: skip
        assert "remote_media_last_access" in indexes
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_the_store_uses_the_new_table(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    store = SqliteStore(path)
    store.open()  # migrates to the newest version

    async def go() -> None:
        store.attach_loop(asyncio.get_running_loop())

        def add(conn) -> None:
            for i, (server, ts) in enumerate((("a.example", 1_000), ("b.example:8448", 5_000))):
                store.insert_remote_media_in(
                    conn, server, f"m{i}", ts, content_type="image/png", upload_name=None,
                    size=10 + i, sha256="00" * 32, file_path=f"remote/aa/bb/f{i}",
                    file_key=b"k" * 32 if i else None,
                )  # fmt: skip

        await store.transaction(add)
        row = store.get_remote_media("b.example:8448", "m1")
        assert row is not None and (row["size"], bytes(row["file_key"])) == (11, b"k" * 32)
        assert store.get_remote_media("a.example", "m1") is None  # keyed by both
        old = store.remote_media_accessed_before(2_000, 10)
        assert [(r["server_name"], r["media_id"]) for r in old] == [("a.example", "m0")]
        await store.transaction(lambda c: store.touch_remote_media_in(c, "a.example", "m0", 9_000))
        assert store.remote_media_accessed_before(6_000, 10)[0]["media_id"] == "m1"
        deleted = await store.transaction(
            lambda c: store.delete_remote_media_in(c, [("a.example", "m0"), ("x", "y")])
        )
        assert deleted == 1 and store.get_remote_media("a.example", "m0") is None

    try:
        asyncio.run(go())
    finally:
        store.close()
