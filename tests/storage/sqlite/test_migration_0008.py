"""Migration ``synapse_admin``: blocked rooms and room deletions for the
Synapse-compatible admin API. A database at the version before with rows in it (the cbbfc30 fixture,
migrated) keeps every row of every table; the new tables exist, empty; a server started on it
purges one of its rooms through ``DELETE /_synapse/admin/v1/rooms/{roomId}``, and after a
restart hands out no stream position the purged room held."""

from __future__ import annotations

from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from tests.storage.sqlite.test_migration_0005 import _dump, _tables
from tests.storage.sqlite.test_migrations import connect, restore_before
from tests.support.accounts import db_rows, make_user
from tests.support.harness import ServerThread

NEW_TABLES = {"blocked_rooms", "room_deletions", "protected_media"}
NUMBER = next(m.version for m in mig.migrations() if m.name == "synapse_admin")


def _before(tmp_path):
    return restore_before(tmp_path, "synapse_admin")


def test_rows_are_kept_and_the_tables_added(tmp_path):
    _, path = _before(tmp_path)
    old_tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert not NEW_TABLES & set(old_tables)
    before = _dump(path, old_tables)
    assert sum(len(v) for v in before.values()) > 200
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[:NUMBER]) == NUMBER
    c.close()
    assert _dump(path, old_tables) == before
    assert set(_tables(path)) >= NEW_TABLES
    assert all(rows == [] for rows in _dump(path, NEW_TABLES).values())


def test_a_purge_on_the_migrated_database(tmp_path):
    data, path = _before(tmp_path)
    # The fixture's room with the most events.
    room_id = db_rows_at(path, "SELECT room_id FROM events GROUP BY room_id"
                               " ORDER BY COUNT(*) DESC LIMIT 1")[0][0]  # fmt: skip
    srv = ServerThread(data, registration="token").start()
    try:
        admin = make_user(srv, "synadmin", admin=True)
        r = admin.request("DELETE", f"/_synapse/admin/v1/rooms/{room_id}", {"purge": True})
        assert r.status == 200, r.body
        assert db_rows(srv, "SELECT 1 FROM events WHERE room_id = ?", (room_id,)) == []
        top = db_rows(srv, "SELECT top_stream_pos FROM room_deletions")[0][0]
        assert top > 0
    finally:
        srv.stop()
    srv = ServerThread(data, registration="token").start()
    try:
        assert srv.hs.store.current_pos >= top
    finally:
        srv.stop()


def db_rows_at(path, sql: str) -> list:
    c = connect(path)
    try:
        return c.execute(sql).fetchall()
    finally:
        c.close()
