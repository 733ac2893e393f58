"""Migration 5 (``0005_guard.sql``): the guard's tables. A database at version 4 with rows in it
(the cbbfc30 fixture, migrated) keeps every row of every table; the new tables exist, empty, and
are usable through the store: decisions with their ledger records, reviews, per-room settings,
room cooling and quarantined media; a server started on the database records decisions and
refuses to serve quarantined media."""

from __future__ import annotations

import sqlite3

from bastion.guard.signals import Decision, Signal
from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migrations import connect, restore
from tests.support.accounts import on_server
from tests.support.harness import ServerThread

GUARD_TABLES = {"guard_decisions", "guard_room_settings", "guard_quarantined_media",
                "guard_room_cooling", "guard_rate_overrides", "guard_login_throttles",
                "guard_known_logins", "guard_policy_lists", "server_notice_rooms"}  # fmt: skip
MEDIA_ID = "61isx63VZdiutkzWWn8CNTUb"  # the fixture's one upload


def _tables(path) -> list[str]:
    conn = sqlite3.connect(str(path))
    try:
        return [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name")]  # fmt: skip
    finally:
        conn.close()


def _dump(path, tables) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(str(path))
    try:
        # Sorted in Python: some tables have no rowid.
        return {t: sorted((tuple(r) for r in conn.execute(f'SELECT * FROM "{t}"')), key=repr)  # noqa: S608
                for t in tables}  # fmt: skip
    finally:
        conn.close()


def _at_version_4(tmp_path):
    data = tmp_path / "data"
    restore(data)
    path = data / "homeserver.db"
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[:4]) == 4
    c.close()
    return data, path


def test_rows_are_kept_and_the_guard_tables_added(tmp_path):
    _, path = _at_version_4(tmp_path)
    old_tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    assert not GUARD_TABLES & set(old_tables)
    before = _dump(path, old_tables)
    assert sum(len(v) for v in before.values()) > 200  # a database with rows in it
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[:5]) == 5
    c.close()
    assert _dump(path, old_tables) == before
    assert set(_tables(path)) >= GUARD_TABLES
    assert all(rows == [] for rows in _dump(path, GUARD_TABLES).values())


def test_the_store_uses_the_new_tables(tmp_path):
    _, path = _at_version_4(tmp_path)
    store = SqliteStore(path)
    store.open()  # migrates to the newest version
    try:
        size = store.ledger_size()

        def write(conn):
            did = store.insert_guard_decision_in(
                conn, ts=5, source="detector.x", outcome="hold", status="held", reason="r",
                subject="@ada:localhost", room_id="!r:localhost", event_id=None, origin="localhost",
                score=0.5, actions=["ban"], signals=[{"source": "detector.x"}],
                held={"room_id": "!r:localhost", "type": "m.room.message"}, details={"k": 1},
            )  # fmt: skip
            store.set_guard_room_settings_in(conn, "!r:localhost", {"detectors": {"x": False}}, 5)
            store.set_room_cooling_in(conn, "!r:localhost", "public", 99, "join wave")
            store.set_room_cooling_in(conn, "!r:localhost", "knock", 120, "still")
            assert store.quarantine_media_in(conn, MEDIA_ID, did, "malware", 6)
            assert not store.quarantine_media_in(conn, MEDIA_ID, did, "again", 7)
            assert not store.quarantine_media_in(conn, "unknown", did, "x", 7)
            return did

        did = store.transaction_sync(write)
        d = store.get_guard_decision(did)
        assert d is not None
        assert (d["status"], d["actions"], d["held"]["type"], d["details"]) == (
            "held", ["ban"], "m.room.message", {"k": 1})  # fmt: skip
        assert store.list_guard_decisions(status="held") == [d]
        assert store.list_guard_decisions(status="done") == []
        assert store.get_guard_room_settings("!r:localhost") == {"detectors": {"x": False}}
        cooling = store.get_room_cooling("!r:localhost")
        assert cooling is not None
        assert (cooling["previous_join_rule"], cooling["until_ts"]) == ("public", 120)
        assert store.media_quarantined(MEDIA_ID)

        def review(conn):
            ok = store.review_guard_decision_in(
                conn, did, expected_status="held", status="rejected", reviewed_by="@admin:x",
                reviewed_ts=9, review_reason="no",
            )  # fmt: skip
            again = store.review_guard_decision_in(
                conn, did, expected_status="held", status="approved", reviewed_by="@admin:x",
                reviewed_ts=9, review_reason="no",
            )  # fmt: skip
            store.delete_room_cooling_in(conn, "!r:localhost")
            store.unquarantine_media_in(conn, MEDIA_ID)
            return ok, again

        assert store.transaction_sync(review) == (True, False)
        row = store.get_guard_decision(did)
        assert row is not None and row["status"] == "rejected"
        assert store.get_room_cooling("!r:localhost") is None
        assert not store.media_quarantined(MEDIA_ID)
        assert store.ledger_size() == size  # the store's methods write no record themselves
    finally:
        store.close()


def test_a_server_on_the_migrated_database_records_decisions(tmp_path):
    data, _ = _at_version_4(tmp_path)
    srv = ServerThread(data, registration="token").start()
    try:
        hs = srv.hs
        sig = Signal("detector.x", "block", 0.9, "spam", action="quarantine_media")
        decision = Decision(source="detector.x", outcome="block", reason="spam", ts=hs.now_ms(),
                            subject="@ada:localhost", signals=(sig,), actions=("quarantine_media",))  # fmt: skip
        did = on_server(srv, hs.guard.record(decision))
        row = hs.store.get_guard_decision(did)
        assert row is not None and row["ledger_idx"] is not None
        entry = hs.store.ledger_entry(row["ledger_idx"])
        assert entry is not None and b'"guard.decision"' in entry.entry
        done = on_server(srv, hs.guard.actions.quarantine([MEDIA_ID], did, "spam"))
        assert done == {"done": True, "media_ids": [MEDIA_ID]}
    finally:
        srv.stop()
