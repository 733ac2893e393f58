"""The OpenID tokens migration (``0013_openid_tokens.sql``): on a database at the previous
version with rows in it (the cbbfc30 fixture, migrated), every row of every table is kept, the
new table and its indexes exist and are empty, and the store issues, finds and deletes tokens
in it (by expiry and by user)."""

from __future__ import annotations

import asyncio
import sqlite3

from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migration_0005 import _dump, _tables
from tests.storage.sqlite.test_migrations import connect, number_of, restore_before

NAME = "openid_tokens"


def test_rows_are_kept_and_the_table_is_added(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert "openid_tokens" not in tables
    before = _dump(path, tables)
    assert before["users"] and before["access_tokens"]
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[: number_of(NAME)]) == number_of(NAME)
    c.close()
    after_tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert sorted(after_tables) == sorted([*tables, "openid_tokens"])
    assert _dump(path, tables) == before
    conn = sqlite3.connect(str(path))
    try:
        assert conn.execute("SELECT COUNT(*) FROM openid_tokens").fetchone()[0] == 0
        indexes = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'openid_tokens'"
        )}  # fmt: skip
        assert {"openid_tokens_expiry", "openid_tokens_user"} <= indexes
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_the_store_uses_the_new_table(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    conn = sqlite3.connect(str(path))
    try:
        (user_id,) = conn.execute(
            "SELECT user_id FROM users WHERE deactivated = 0 LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    store = SqliteStore(path)
    store.open()  # migrates to the newest version

    async def go() -> None:
        store.attach_loop(asyncio.get_running_loop())

        def add(conn) -> None:
            store.add_openid_token_in(conn, "live-token", user_id, 2_000)
            store.add_openid_token_in(conn, "old-token", user_id, 500)
            store.add_openid_token_in(conn, "gone-token", "@x:elsewhere", 400)

        await store.transaction(add)
        assert store.get_openid_token("live-token") == (user_id, 2_000, True)
        assert store.get_openid_token("gone-token") == ("@x:elsewhere", 400, False)  # no account
        assert store.get_openid_token("nope") is None
        deleted = await store.transaction(
            lambda conn: store.delete_expired_openid_tokens_in(conn, 1_000, 1)
        )
        assert deleted == 1 and store.get_openid_token("gone-token") is None  # oldest first
        assert store.openid_token_count() == 2
        await store.transaction(lambda conn: store.deactivate_user_in(conn, user_id))
        assert store.openid_token_count() == 0

    try:
        asyncio.run(go())
    finally:
        store.close()
