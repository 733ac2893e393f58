"""The purge job's reads (storage/sqlite/retention.py) on a room with many events: each is an
index search (no scan of ``events`` or ``local_media``, no temporary sort), and a run pages
through them without reading the room's old history again."""

from __future__ import annotations

import sqlite3

import pytest

from bastion.storage.sqlite.store import SqliteStore

ROOM = "!big:localhost"
N = 5000


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "homeserver.db")
    s.open()
    conn = sqlite3.connect(str(tmp_path / "homeserver.db"))
    with conn:
        conn.execute("INSERT INTO rooms (room_id, room_version, creator, created_ts, is_public) VALUES"
                     " (?, '12', '@a:localhost', 0, 0)", (ROOM,))  # fmt: skip
        conn.executemany(
            "INSERT INTO events (event_id, room_id, stream_pos, depth, type, state_key, sender,"
            " origin_server_ts, json) VALUES (?, ?, ?, ?, 'm.room.message', NULL, ?, ?, '{}')",
            [(f"$e{i}", ROOM if i % 10 else "!other:localhost", i + 1, i, "@a:localhost",
              1000 + i) for i in range(N)],
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO local_media (media_id, user_id, created_ts) VALUES (?, ?, ?)",
            [(f"m{i}", "@a:localhost", i) for i in range(N)],
        )
    conn.close()
    try:
        yield s
    finally:
        s.close()


def _plans(store: SqliteStore, fn) -> tuple[object, list[str]]:
    """Run ``fn(conn)`` in a write, and the query plan of every SELECT it ran."""
    statements: list[str] = []

    def run(conn):
        conn.set_trace_callback(statements.append)
        try:
            return fn(conn)
        finally:
            conn.set_trace_callback(None)

    result = store.transaction_sync(run)
    plans = []
    conn = sqlite3.connect(str(store.db.path))
    try:
        for sql in statements:
            if sql.lstrip().upper().startswith("SELECT"):
                rows = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
                plans.append(" | ".join(r[3] for r in rows))
    finally:
        conn.close()
    return result, plans


def _indexed(plan: str, index: str) -> None:
    assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
    assert "SCAN e " not in plan + " " and "SCAN events" not in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_the_aged_scan_uses_the_age_index(store):
    rows, plans = _plans(store, lambda c: store.retention_aged_in(c, ROOM, 1500, 1600, N, None, 20))
    assert len(rows) == 20 and all(1500 <= r["origin_server_ts"] < 1600 for r in rows)
    (plan,) = plans
    _indexed(plan, "events_room_ts")
    # The next page starts after the last key.
    last = (rows[-1]["origin_server_ts"], rows[-1]["stream_pos"])
    more = store.transaction_sync(
        lambda c: store.retention_aged_in(c, ROOM, 1500, 1600, N, last, 1000)
    )
    assert len(more) == 90 - 20 and more[0]["origin_server_ts"] > last[0]


def test_the_new_scan_uses_the_position_index(store):
    (rows, last), plans = _plans(
        store, lambda c: store.retention_new_in(c, ROOM, 3000, N, 10**9, 50)
    )
    assert len(rows) == 50 and all(3000 < r["stream_pos"] <= last for r in rows)
    assert len(plans) == 2
    for plan in plans:
        _indexed(plan, "events_room_pos")


def test_media_and_deferred_scans_are_indexed(store):
    rows, (plan,) = _plans(store, lambda c: store.local_media_created_before_in(c, 100, None, 10))
    assert [r["media_id"] for r in rows] == [f"m{i}" for i in range(10)]
    _indexed(plan, "local_media_created")
    store.transaction_sync(lambda c: store.defer_retention_in(c, ROOM, ["$e1", "$e2"]))
    rows, (plan,) = _plans(store, lambda c: store.retention_deferred_in(c, ROOM, "", 10))
    assert [r["event_id"] for r in rows] == ["$e1", "$e2"]
    assert "retention_deferred_room" in plan and "SCAN d" not in plan, plan
