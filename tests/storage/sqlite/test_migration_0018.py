"""The directory generation migration (``0018_directory_generation.sql``): on a database at the
previous version with rows in it (the cbbfc30 fixture, migrated), every row of every table is
kept and the counter starts at 0; its triggers move it for every change the user directory
shows (an account created, deactivated or deleted, a profile field, a membership) and not for
others (a room forgotten, a password change), whoever writes."""

from __future__ import annotations

import sqlite3

from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migration_0005 import _dump, _tables
from tests.storage.sqlite.test_migrations import connect, number_of, restore_before

NAME = "directory_generation"


def _n(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT n FROM directory_generation").fetchone()[0]


def test_rows_are_kept_and_the_triggers_move_the_counter(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    before = _dump(path, tables)
    assert before["users"] and before["current_membership"] and before["profiles"]
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[: number_of(NAME)]) == number_of(NAME)
    c.close()
    assert _dump(path, tables) == before
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        assert _n(conn) == 0
        user, pw = conn.execute("SELECT user_id, password_hash FROM users LIMIT 1").fetchone()
        room = conn.execute(
            "SELECT room_id FROM current_membership WHERE user_id = ?", (user,)
        ).fetchone()[0]  # fmt: skip
        steps = [
            ("UPDATE users SET password_hash = ? WHERE user_id = ?", (pw, user), 0),
            ("UPDATE current_membership SET forgotten = 1 WHERE user_id = ?", (user,), 0),
            ("UPDATE users SET deactivated = 1 WHERE user_id = ?", (user,), 1),
            (
                "INSERT OR REPLACE INTO profiles (user_id, key, value) VALUES (?, 'displayname',"
                " '\"New\"')",
                (user,),
                1,
            ),  # fmt: skip
            ("DELETE FROM profiles WHERE user_id = ?", (user,), 1),
            (
                "UPDATE current_membership SET membership = 'leave' WHERE user_id = ? AND"
                " room_id = ?",
                (user, room),
                1,
            ),  # fmt: skip
            ("DELETE FROM current_membership WHERE user_id = ? AND room_id = ?", (user, room), 1),
        ]
        for sql, args, moves in steps:
            n = _n(conn)
            conn.execute(sql, args)
            assert (_n(conn) > n) == bool(moves), sql
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_the_store_reads_the_counter(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    store = SqliteStore(path)
    store.open()  # migrates to the newest version
    try:
        first = store.user_directory_generation()
        conn = sqlite3.connect(str(path), isolation_level=None)
        try:
            user = conn.execute("SELECT user_id FROM users LIMIT 1").fetchone()[0]
            conn.execute(
                "INSERT OR REPLACE INTO profiles (user_id, key, value)"
                " VALUES (?, 'displayname', '\"Another\"')", (user,),
            )  # fmt: skip
        finally:
            conn.close()
        assert store.user_directory_generation() > first
        names = {e.user_id: e.display_name for e in store.user_directory_local_entries()}
        assert names[user] == "Another"
    finally:
        store.close()
