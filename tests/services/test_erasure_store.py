"""The erasure's row deletions in the store (storage/sqlite/erasure.py) for what the end-to-end
tests of test_erasure.py do not reach through the client API: EDUs queued for other servers,
reports the user filed that reached the guard's queue, and the writer's maintenance step."""

from __future__ import annotations

import json
import sqlite3

import pytest

from bastion.storage.sqlite.store import SqliteStore

ALICE, BOB = "@alice:localhost", "@bob:localhost"


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "homeserver.db")
    s.open()
    yield s
    s.close()


def _edus(store: SqliteStore) -> list[tuple[str, dict]]:
    return [(r[0], json.loads(r[1])) for r in store.db.read(
        "SELECT edu_type, content FROM federation_outbound_edus ORDER BY id")]  # fmt: skip


def test_queued_edus_from_or_about_the_user_go(store):
    queued = [
        ("m.direct_to_device", {"sender": ALICE, "type": "m.x", "message_id": "1",
                                "messages": {"@z:remote": {"D": {"secret": 1}}}}),
        ("m.direct_to_device", {"sender": BOB, "type": "m.x", "message_id": "2",
                                "messages": {ALICE: {"D": {}}}}),
        ("m.typing", {"room_id": "!r:localhost", "user_id": ALICE, "typing": True}),
        ("m.presence", {"push": [{"user_id": ALICE, "status_msg": "secret"},
                                 {"user_id": BOB, "presence": "online"}]}),
        ("m.presence", {"push": [{"user_id": ALICE, "status_msg": "secret"}]}),
        ("m.receipt", {"!r:localhost": {"m.read": {ALICE: {"event_ids": ["$a"]},
                                                   BOB: {"event_ids": ["$b"]}}}}),
        ("m.device_list_update", {"user_id": ALICE, "device_id": "D", "deleted": True}),
    ]  # fmt: skip

    def fn(conn: sqlite3.Connection):
        for etype, content in queued:
            store.enqueue_edu_in(conn, "remote.example", etype, content, None)
        return store.erase_user_rows_in(conn, ALICE, now_ms=1, actor="cli", media_ids=[])

    counts = store.transaction_sync(fn)
    assert counts["federation_edus"] == 5
    assert _edus(store) == [
        queued[1],  # Bob's message to alice: Bob's words (her inbox copy goes with device_inbox)
        ("m.presence", {"push": [{"user_id": BOB, "presence": "online"}]}),
        ("m.receipt", {"!r:localhost": {"m.read": {BOB: {"event_ids": ["$b"]}}}}),
        queued[6],  # the device-list update tells the other server the device is gone
    ]


def test_reports_the_user_filed_lose_their_reason(store):
    def fn(conn: sqlite3.Connection):
        for reporter in (ALICE, BOB):
            store.insert_guard_decision_in(
                conn, ts=1, source="report", outcome="warn", status="open",
                reason="a user reported user @x:localhost: secret words", subject="@x:localhost",
                room_id=None, event_id=None, origin="localhost", score=0.5, actions=[],
                signals=[{"source": "report", "reason": "a user reported user @x:localhost: "
                          "secret words", "evidence": {"kind": "user"}}], held=None,
                details={"reporter": reporter, "report_reason": "secret words", "kind": "user"},
            )  # fmt: skip
        return store.erase_user_rows_in(conn, ALICE, now_ms=1, actor="cli", media_ids=[])

    assert store.transaction_sync(fn)["guard_reports"] == 1
    rows = store.list_guard_decisions()
    by = {r["details"]["reporter"]: r for r in rows}
    assert "secret" not in json.dumps(by[ALICE], default=str)
    assert by[ALICE]["reason"] == "a user reported user @x:localhost"
    assert by[BOB]["details"]["report_reason"] == "secret words"


def test_compaction_runs_outside_a_transaction_and_truncates_the_wal(store):
    store.transaction_sync(lambda conn: store.mark_user_erased_in(conn, ALICE, 1, False))
    wal = store.db.path.with_name(store.db.path.name + "-wal")
    assert wal.stat().st_size > 0
    out = store.compact_database_sync()
    assert set(out) == {"checkpoint_s", "vacuum_s", "bytes_before", "bytes_after"}
    assert wal.stat().st_size == 0
    # The writer goes on with ordinary batches; a failing maintenance step is handed back.
    store.transaction_sync(lambda conn: store.mark_user_erased_in(conn, BOB, 2, False))
    with pytest.raises(sqlite3.OperationalError):
        store.db.maintain_sync(lambda conn: conn.execute("SELECT * FROM no_such_table"))
    assert store.is_user_erased(BOB)
    assert store.db.read_one("PRAGMA secure_delete")[0] == 1


def test_keys_and_signatures_of_and_on_the_user_go(store):
    def fn(conn: sqlite3.Connection):
        store.set_cross_signing_key_in(conn, ALICE, "master", "PUBA", {"k": 1}, 1)
        store.set_cross_signing_key_in(conn, BOB, "master", "PUBB", {"k": 2}, 2)
        store.add_signature_in(conn, BOB, "PUBB", ALICE, "ed25519:PUBA", "sig1")  # hers on his
        store.add_signature_in(conn, ALICE, "PUBA", BOB, "ed25519:PUBB", "sig2")  # his on hers
        store.add_signature_in(conn, BOB, "DEV", BOB, "ed25519:PUBB", "sig3")
        return store.erase_user_rows_in(conn, ALICE, now_ms=1, actor="cli", media_ids=[])

    counts = store.transaction_sync(fn)
    assert (counts["cross_signing_keys"], counts["signatures"]) == (1, 2)
    rows = store.db.read("SELECT user_id FROM e2e_cross_signing_keys")
    assert [r[0] for r in rows] == [BOB]
    assert [tuple(r) for r in store.db.read("SELECT signature FROM e2e_signatures")] == [("sig3",)]
