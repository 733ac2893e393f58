"""The refresh tokens migration (``0015_refresh_tokens.sql``): on a database at the previous
version with rows in it (the cbbfc30 fixture, migrated), every row of every table is kept, the
access tokens gain an expiry that is empty for all of them (old tokens never expire), the new
table and its indexes exist and are empty, and the store issues, rotates, authenticates and
revokes refresh tokens on it."""

from __future__ import annotations

import asyncio
import sqlite3

from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migration_0005 import _dump, _tables
from tests.storage.sqlite.test_migrations import connect, number_of, restore_before

NAME = "refresh_tokens"


def test_rows_are_kept_and_old_tokens_never_expire(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert "refresh_tokens" not in tables
    before = _dump(path, tables)
    assert before["users"] and before["access_tokens"]
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[: number_of(NAME)]) == number_of(NAME)
    c.close()
    after_tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert sorted(after_tables) == sorted([*tables, "refresh_tokens", "login_tokens"])
    after = _dump(path, tables)
    # Every access token is kept, with an empty expiry (the new last column).
    assert after.pop("access_tokens") == sorted(
        (row + (None,) for row in before.pop("access_tokens")), key=repr
    )
    assert after == before
    conn = sqlite3.connect(str(path))
    try:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(access_tokens)")]
        assert columns[-1] == "expires_ts"
        assert conn.execute("SELECT COUNT(*) FROM refresh_tokens").fetchone()[0] == 0
        indexes = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'refresh_tokens'"
        )}  # fmt: skip
        assert {"refresh_tokens_device", "refresh_tokens_next_access"} <= indexes
        assert conn.execute("SELECT COUNT(*) FROM login_tokens").fetchone()[0] == 0
        indexes = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'login_tokens'"
        )}  # fmt: skip
        assert {"login_tokens_expiry", "login_tokens_user"} <= indexes
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_the_store_uses_the_new_schema(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    conn = sqlite3.connect(str(path))
    try:
        old = conn.execute(
            "SELECT t.user_id, t.device_id FROM access_tokens t JOIN users u"
            " ON u.user_id = t.user_id JOIN devices d ON d.user_id = t.user_id"
            " AND d.device_id = t.device_id WHERE u.deactivated = 0 LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    assert old is not None
    user_id, device_id = old
    store = SqliteStore(path)
    store.open()  # migrates to the newest version

    async def go() -> None:
        store.attach_loop(asyncio.get_running_loop())

        def issue(conn) -> None:
            store.add_device_sync(conn, user_id, device_id, None, "syt_new", 10, None, 1_000)
            store.add_refresh_token_in(conn, "bsr_one", user_id, device_id, "syt_new", 10)

        await store.transaction(issue)
        assert store.get_requester("syt_new", 999).user_id == user_id
        assert store.get_requester("syt_new", 1_000) is None  # expired
        assert store.refresh_token_owner("bsr_one") == user_id
        found = await store.transaction(
            lambda conn: store.rotate_refresh_token_in(conn, "bsr_one", "syt_2", "bsr_2", 5_000, 20)
        )
        assert found == (user_id, device_id)
        assert store.get_requester("syt_new", 0) is None
        assert store.get_requester("syt_2", 4_999).device_id == device_id
        assert store.refresh_token_count(user_id) == 2  # the old one until the new pair is used
        await store.transaction(lambda conn: store.retire_refreshed_in(conn, "syt_2"))
        assert store.refresh_token_count(user_id) == 1
        await store.transaction(lambda conn: store.delete_device_in(conn, user_id, device_id))
        assert store.refresh_token_count(user_id) == 0

        # Login tokens: single use, refused once expired, swept when new ones are issued.
        def logins(conn) -> None:
            store.add_login_token_in(conn, "bsl_once", user_id, 2_000, 100)
            store.add_login_token_in(conn, "bsl_late", user_id, 1_500, 100)
            store.add_login_token_in(conn, "bsl_old", user_id, 300, 100)

        await store.transaction(logins)
        take = store.take_login_token_in
        assert await store.transaction(lambda conn: take(conn, "bsl_once", 1_999)) == user_id
        assert await store.transaction(lambda conn: take(conn, "bsl_once", 1_999)) is None
        assert await store.transaction(lambda conn: take(conn, "bsl_late", 1_500)) is None
        assert store.login_token_count(user_id) == 1  # the expired, unused one
        await store.transaction(
            lambda conn: store.add_login_token_in(conn, "bsl_n", user_id, 5_000, 500)
        )
        assert store.login_token_count(user_id) == 1  # swept; the new one
        await store.transaction(lambda conn: store.revoke_user_tokens_in(conn, user_id))
        assert store.login_token_count(user_id) == 0

    try:
        asyncio.run(go())
    finally:
        store.close()
