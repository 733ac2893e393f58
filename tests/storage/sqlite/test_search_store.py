"""The search index's staging (storage/sqlite/search.py): the persist path stages rows and
moves them into the FTS5 index every ``FLUSH_EVERY`` rows; a search first moves the rest;
unindexing removes a row wherever it is."""

from __future__ import annotations

import asyncio

from bastion.core.search import fts_query
from bastion.storage.sqlite.search import (
    FLUSH_EVERY,
    index_search_in,
    unindex_room_search_in,
    unindex_search_in,
)
from bastion.storage.sqlite.store import SqliteStore

ROOM = "!r:example.org"


def _counts(store) -> tuple[int, int]:
    """(indexed, staged) rows; the rooms and senders of the indexed ones are kept with them."""
    indexed = store.db.read_one("SELECT COUNT(*) FROM event_search")[0]
    assert store.db.read_one("SELECT COUNT(*) FROM event_search_events")[0] == indexed
    return indexed, store.db.read_one("SELECT COUNT(*) FROM event_search_pending")[0]


def _add(conn, pos: int, event: dict) -> None:
    conn.execute(
        "INSERT INTO rooms (room_id, room_version, creator, created_ts, is_public)"
        " VALUES (?, '10', '@a:example.org', 0, 0) ON CONFLICT DO NOTHING",
        (ROOM,),
    )
    conn.execute(
        "INSERT INTO events (event_id, room_id, stream_pos, depth, type, sender,"
        " origin_server_ts, json) VALUES (?, ?, ?, 1, ?, '@a:example.org', 0, x'7b7d')",
        (f"$e{pos}", ROOM, pos, event["type"]),
    )
    index_search_in(conn, ROOM, {**event, "sender": "@a:example.org"}, pos)


def test_staged_rows_move_into_the_index_in_batches(tmp_path):
    store = SqliteStore(tmp_path / "db.sqlite")
    store.open()
    try:

        async def run():
            msg = {"type": "m.room.message", "content": {"body": "heron words"}}
            enc = {"type": "m.room.encrypted", "content": {"body": "heron"}}
            for pos in range(1, FLUSH_EVERY + 11):
                await store.db.write(lambda c, p=pos: _add(c, p, msg))
            await store.db.write(lambda c: _add(c, 10_000, enc))  # never indexed
            assert _counts(store) == (FLUSH_EVERY, 10)
            # unindexing reaches staged and indexed rows alike
            await store.db.write(lambda c: unindex_search_in(c, ["$e1", f"$e{FLUSH_EVERY + 5}"]))
            assert _counts(store) == (FLUSH_EVERY - 1, 9)
            await store.flush_search_index()
            assert _counts(store) == (FLUSH_EVERY + 8, 0)
            query = fts_query(["heron"], ["body"])
            assert store.search_count(query, {ROOM: None}, senders=None, not_senders=[]) == (
                FLUSH_EVERY + 8
            )
            await store.db.write(lambda c: _add(c, 20_000, msg))
            await store.db.write(lambda c: unindex_room_search_in(c, ROOM))
            assert _counts(store) == (0, 0)

        asyncio.run(run())
    finally:
        store.close()
