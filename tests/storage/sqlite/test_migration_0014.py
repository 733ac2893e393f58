"""The search migration (``0014_search.py``): on a database at the previous version with rows
in it (the cbbfc30 fixture, migrated, plus events with searchable text), every row of every
table is kept, ``event_search`` is backfilled with exactly the accepted, unredacted events
carrying searchable text, and the store finds them."""

from __future__ import annotations

import sqlite3

import orjson

from bastion.core.search import fts_query
from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migration_0005 import _dump, _tables
from tests.storage.sqlite.test_migrations import connect, number_of, restore_before

NAME = "search"
SHADOW = ["event_search", "event_search_config", "event_search_content", "event_search_data",
          "event_search_docsize", "event_search_events", "event_search_idx",
          "event_search_pending"]  # fmt: skip


def _add_events(path) -> dict:
    """Copies of a stored message with other IDs, types and contents."""
    conn = sqlite3.connect(str(path))
    conn.row_factory = sqlite3.Row
    try:
        base = dict(conn.execute(
            "SELECT * FROM events WHERE type = 'm.room.message' AND rejected = 0 LIMIT 1"
        ).fetchone())  # fmt: skip
        top = conn.execute("SELECT MAX(stream_pos) FROM events").fetchone()[0]
        pdu = orjson.loads(base["json"])
        cases = [
            ("$body", "m.room.message", None, {"msgtype": "m.text", "body": "Capybara Räder"}),
            ("$name", "m.room.name", "", {"name": "capybara room"}),
            ("$topic", "m.room.topic", "", {"topic": "capybaras only"}),
            ("$redacted", "m.room.message", None, {"body": "capybara gone"}),
            ("$rejected", "m.room.message", None, {"body": "capybara rejected"}),
            ("$soft", "m.room.message", None, {"body": "capybara soft"}),
            ("$outlier", "m.room.message", None, {"body": "capybara outlier"}),
            ("$encrypted", "m.room.encrypted", None, {"ciphertext": "capybara"}),
            ("$not_text", "m.room.message", None, {"body": 7}),
            ("$blank", "m.room.message", None, {"body": "   "}),
            ("$other", "m.reaction", None, {"body": "capybara"}),
        ]
        extra = {"$redacted": {"redacted_because": "$r"}, "$rejected": {"rejected": 1},
                 "$soft": {"soft_failed": 1}, "$outlier": {"soft_failed": 2}}  # fmt: skip
        positions = {}
        for i, (eid, etype, state_key, content) in enumerate(cases, 1):
            ev = {**pdu, "type": etype, "content": content}
            if state_key is not None:
                ev["state_key"] = state_key
            row = {**base, "event_id": eid, "type": etype, "state_key": state_key,
                   "stream_pos": top + i, "json": orjson.dumps(ev), "txn_id": None,
                   "txn_user": None, "txn_device": None, **extra.get(eid, {})}  # fmt: skip
            positions[eid] = top + i
            cols = ",".join(row)
            conn.execute(
                f"INSERT INTO events ({cols}) VALUES ({','.join('?' * len(row))})",  # noqa: S608
                list(row.values()),
            )
        conn.commit()
        return {"room_id": base["room_id"], "positions": positions}
    finally:
        conn.close()


def test_rows_are_kept_and_the_index_backfilled(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    facts = _add_events(path)
    tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    before = _dump(path, tables)
    assert before["events"]
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[: number_of(NAME)]) == number_of(NAME)
    c.close()
    assert sorted(t for t in _tables(path) if t != mig.VERSION_TABLE) == sorted(tables + SHADOW)
    assert _dump(path, tables) == before
    conn = sqlite3.connect(str(path))
    try:
        rows = conn.execute(
            "SELECT rowid, body, name, topic FROM event_search WHERE event_search MATCH 'capybara*'"
            " ORDER BY rowid"
        ).fetchall()
        # diacritics are folded: "rader" finds "Räder"
        folded = conn.execute("SELECT rowid FROM event_search WHERE event_search MATCH 'rader'")
        folded_rows = folded.fetchall()
        # the fixture's own messages are indexed too
        total = conn.execute("SELECT COUNT(*) FROM event_search").fetchone()[0]
        expected = sum(
            conn.execute(
                f"SELECT COUNT(*) FROM events WHERE type = '{etype}' AND rejected = 0"  # noqa: S608
                " AND soft_failed = 0 AND redacted_because IS NULL"
                f" AND json_type(json, '$.content.{field}') = 'text'"
                f" AND trim(json_extract(json, '$.content.{field}')) != ''"
            ).fetchone()[0]
            for etype, field in (("m.room.message", "body"), ("m.room.name", "name"),
                                 ("m.room.topic", "topic"))
        )  # fmt: skip
        meta = conn.execute("SELECT COUNT(*) FROM event_search_events").fetchone()[0]
        meta_room = conn.execute(
            "SELECT COUNT(*) FROM event_search_events m JOIN events e"
            " ON e.stream_pos = m.stream_pos AND e.room_id = m.room_id AND e.sender = m.sender"
            " WHERE e.event_id IN ('$body', '$name', '$topic')"
        ).fetchone()[0]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    pos = facts["positions"]
    assert rows == [
        (pos["$body"], "Capybara Räder", None, None),
        (pos["$name"], None, "capybara room", None),
        (pos["$topic"], None, None, "capybaras only"),
    ]
    assert folded_rows == [(pos["$body"],)]
    assert total == expected and total > 3
    assert meta == total and meta_room == 3


def test_the_store_finds_the_backfilled_events(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    facts = _add_events(path)
    store = SqliteStore(path)
    store.open()  # migrates to the newest version
    try:
        room = facts["room_id"]
        query = fts_query(["capybara"], ["body", "name", "topic"])
        hits = store.search_events(query, {room: None}, senders=None, not_senders=[],
                                   recent=True, after=None, limit=10)  # fmt: skip
        assert [h[0] for h in hits] == ["$topic", "$name", "$body"]
        assert store.search_count(query, {room: None}, senders=None, not_senders=[]) == 3
        capped = store.search_events(query, {room: facts["positions"]["$name"]}, senders=None,
                                     not_senders=[], recent=True, after=None, limit=10)  # fmt: skip
        assert [h[0] for h in capped] == ["$name", "$body"]
        assert store.search_events(query, {"!other:x": None}, senders=None, not_senders=[],
                                   recent=False, after=None, limit=10) == []  # fmt: skip
    finally:
        store.close()
