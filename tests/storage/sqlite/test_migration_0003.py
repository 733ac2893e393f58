"""Migration 3 (``0003_stream_position_indexes.sql``): membership changes and receipts get an
index on their stream position. A database at version 2 with rows in it keeps every row, the
range reads of /sync use the new indexes, and what they serve is what the rows say — through
the short-range read and the per-room probe alike, and through /sync itself."""

from __future__ import annotations

import sqlite3

from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite import rooms as rooms_mod
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migrations import V3, as_device, connect, manifest, ok, restore
from tests.support.harness import ServerThread

__all__ = ["manifest"]  # the module fixture, shared

V12_ROOM = "!rOBJn7C6AQsiPwXRGkJRw3NO1UGiFaQURGuYJj58oLo"


def _rows(path, table: str) -> list[tuple]:
    conn = sqlite3.connect(str(path))
    try:
        return [tuple(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY rowid")]  # noqa: S608
    finally:
        conn.close()


def _plan(path, sql: str) -> str:
    conn = sqlite3.connect(str(path))
    try:
        return " ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, (0, 100)))
    finally:
        conn.close()


def _at_version_2(tmp_path):
    data = tmp_path / "data"
    restore(data)
    path = data / "homeserver.db"
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[:1]) == 1  # the cbbfc30 database, stamped
    assert migrate(c, str(path), mig.migrations()[:2]) == 2
    c.close()
    return data, path


def test_version_2_database_keeps_its_rows_and_gets_the_indexes(tmp_path):
    _, path = _at_version_2(tmp_path)
    before = {t: _rows(path, t) for t in ("membership_events", "receipts", "events")}
    assert before["membership_events"] and before["receipts"]
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[:3]) == 3
    c.close()
    assert {t: _rows(path, t) for t in before} == before
    membership_sql = (
        "SELECT room_id, user_id, membership, stream_pos FROM membership_events"
        " WHERE stream_pos > ? AND stream_pos <= ? ORDER BY stream_pos"
    )
    assert "membership_events_pos" in _plan(path, membership_sql)
    receipts_sql = "SELECT DISTINCT room_id FROM receipts WHERE stream_pos > ? AND stream_pos <= ?"
    assert "receipts_pos" in _plan(path, receipts_sql)


def test_changed_rooms_are_served_from_the_old_rows_by_range_and_by_probe(tmp_path, monkeypatch):
    _, path = _at_version_2(tmp_path)
    conn = sqlite3.connect(str(path))
    members = conn.execute(
        "SELECT room_id, user_id, membership, stream_pos FROM membership_events"
    ).fetchall()
    receipts = conn.execute("SELECT room_id, stream_pos FROM receipts").fetchall()
    events = conn.execute("SELECT room_id, stream_pos FROM events").fetchall()
    all_rooms = {r[0] for r in conn.execute("SELECT room_id FROM rooms")}
    top = conn.execute("SELECT MAX(stream_pos) FROM events").fetchone()[0]
    conn.close()
    store = SqliteStore(path)
    store.open()  # migrates to the newest version
    try:
        for short in (True, False):  # the range read, then one probe per room
            monkeypatch.setattr(rooms_mod, "short_range", lambda *_a, s=short: s)
            for since in range(top + 1):
                want = sorted(
                    (r, u, m, p) for r, u, m, p in members if since < p <= top and r in all_rooms
                )
                got = store.get_membership_changes_in_rooms(all_rooms, since, top)
                assert sorted(got) == want, (short, since)
                assert store.receipt_rooms_changed(all_rooms, since, top) == {
                    r for r, p in receipts if since < p <= top
                }, (short, since)
                assert store.rooms_with_events_between(all_rooms, since, top) == {
                    r for r, p in events if since < p <= top
                }, (short, since)
    finally:
        store.close()


def test_a_receipt_alone_brings_its_room_into_an_incremental_sync(tmp_path, manifest):
    data, path = _at_version_2(tmp_path)
    (receipt_pos, event_id) = (
        sqlite3.connect(str(path))
        .execute("SELECT stream_pos, event_id FROM receipts WHERE room_id = ?", (V12_ROOM,))
        .fetchone()
    )
    srv = ServerThread(data, registration="token").start()  # migrates to the newest version
    try:
        ada = as_device(srv, manifest, "ada", "ADADESK")
        resp = ok(ada.request("GET", f"{V3}/sync", query={"since": f"s{receipt_pos - 1}_0"}))
        room = resp["rooms"]["join"][V12_ROOM]
        receipts = [e for e in room["ephemeral"]["events"] if e["type"] == "m.receipt"]
        assert "@bob:localhost" in receipts[0]["content"][event_id]["m.read"]
        # Nothing else of that room happened after the receipt: it is there for the receipt.
        later = (
            sqlite3.connect(str(path))
            .execute(
                "SELECT COUNT(*) FROM events WHERE room_id = ? AND stream_pos > ?",
                (V12_ROOM, receipt_pos),
            )
            .fetchone()[0]
        )
        assert later == 0
        assert room["timeline"]["events"] == []
    finally:
        srv.stop()
