"""The notifications migration (``0016_push_notifications.sql``): on a database at the previous
version with rows in it (the cbbfc30 fixture, migrated), every row of every table is kept, the
three new tables and their indexes exist and are empty, and the store counts, clears and lists
notifications and keeps pushers in them (deactivation deletes a user's pushers)."""

from __future__ import annotations

import asyncio
import sqlite3

from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migration_0005 import _dump, _tables
from tests.storage.sqlite.test_migrations import connect, number_of, restore_before

NAME = "push_notifications"
NEW = ["push_counts", "push_notifications", "pushers"]


def test_rows_are_kept_and_the_tables_are_added(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert not set(NEW) & set(tables)
    before = _dump(path, tables)
    assert before["users"] and before["events"]
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[: number_of(NAME)]) == number_of(NAME)
    c.close()
    after_tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert sorted(after_tables) == sorted([*tables, *NEW])
    assert _dump(path, tables) == before
    conn = sqlite3.connect(str(path))
    try:
        for t in NEW:
            assert conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] == 0  # noqa: S608
        indexes = {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert "pushers_user" in indexes
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_the_store_uses_the_new_tables(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    conn = sqlite3.connect(str(path))
    try:
        user_id, room = conn.execute(
            "SELECT m.user_id, m.room_id FROM current_membership m JOIN users u"
            " ON u.user_id = m.user_id WHERE u.deactivated = 0 AND m.membership = 'join' LIMIT 1"
        ).fetchone()
        # three events of the room: a notification names its event by stream position
        (p1, e1), (p2, e2), (p3, e3) = conn.execute(
            "SELECT stream_pos, event_id FROM events WHERE room_id = ? ORDER BY stream_pos LIMIT 3",
            (room,),
        ).fetchall()
    finally:
        conn.close()
    store = SqliteStore(path)
    store.open()  # migrates to the newest version

    async def go() -> None:
        store.attach_loop(asyncio.get_running_loop())
        rows = [
            (user_id, p1, room, "main", e1, 1, False, '["notify"]'),
            (user_id, p2, room, "$root", e2, 2, True, '["notify"]'),
            (user_id, p3, room, "main", e3, 3, True, '["notify"]'),
        ]
        assert await store.transaction(lambda c: store.add_notifications_in(c, rows)) == 3
        assert store.get_push_counts(user_id, room) == {"main": (2, 1), "$root": (1, 1)}
        assert store.unread_notification_total(user_id) == 3
        # a threaded receipt clears its thread only, up to its position
        await store.transaction(
            lambda c: store.mark_notifications_read_in(c, user_id, room, p1, "main")
        )
        assert store.get_push_counts(user_id, room) == {"main": (1, 1), "$root": (1, 1)}
        assert store.get_read_positions(user_id, room) == {"main": p1, "$root": 0}
        # an older receipt changes nothing
        await store.transaction(
            lambda c: store.mark_notifications_read_in(c, user_id, room, p1 - 1, None)
        )
        assert store.get_push_counts(user_id, room) == {"main": (1, 1), "$root": (1, 1)}
        await store.transaction(
            lambda c: store.mark_notifications_read_in(c, user_id, room, p3, None)
        )
        assert store.get_push_counts(user_id, room) == {"main": (0, 0), "$root": (0, 0)}
        listed, floor = store.get_room_notifications(user_id, room, None, 10, 100, True)
        assert [r["event_id"] for r in listed] == [e3, e2] and floor is None
        listed, floor = store.get_room_notifications(user_id, room, p3, 10, 100, False)
        assert [r["event_id"] for r in listed] == [e2, e1]
        # a look that stops early says where it stopped
        listed, floor = store.get_room_notifications("@else:x", room, None, 10, 2, False)
        assert listed == [] and floor == p2
        # pruning by the events' time: nothing sent before 0, everything before the far future
        assert await store.transaction(lambda c: store.prune_notifications_in(c, room, 0)) == 0
        pruned = await store.transaction(lambda c: store.prune_notifications_in(c, room, 2**50))
        assert pruned == 3
        assert store.get_room_notifications(user_id, room, None, 10, 100, False)[0] == []
        pusher = {"app_id": "a", "pushkey": "k", "kind": "http", "app_display_name": "A",
                  "device_display_name": "D", "lang": "en"}  # fmt: skip
        await store.transaction(
            lambda c: store.set_pusher_in(c, user_id, pusher, '{"url": "x"}', 5, False)
        )
        assert [r["pushkey"] for r in store.get_pushers(user_id)] == ["k"]
        await store.transaction(lambda conn: store.deactivate_user_in(conn, user_id))
        assert store.get_pushers(user_id) == []

    try:
        asyncio.run(go())
    finally:
        store.close()
