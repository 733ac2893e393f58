"""The relations migration (``0012_event_relations.py``): on a database at the previous version
with rows in it (the cbbfc30 fixture, migrated, plus events carrying relations), every row of
every table is kept, ``event_relations`` is backfilled with exactly the accepted, unredacted
events that carry a relation, and the store lists them."""

from __future__ import annotations

import sqlite3

import orjson

from bastion.core.relations import Relation
from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migration_0005 import _dump, _tables
from tests.storage.sqlite.test_migrations import connect, number_of, restore_before

NAME = "event_relations"


def _add_events(path) -> dict[str, str]:
    """Copies of a stored message with other IDs and contents; their parent's ID."""
    conn = sqlite3.connect(str(path))
    conn.row_factory = sqlite3.Row
    try:
        base = dict(conn.execute(
            "SELECT * FROM events WHERE type = 'm.room.message' AND rejected = 0 LIMIT 1"
        ).fetchone())  # fmt: skip
        top = conn.execute("SELECT MAX(stream_pos) FROM events").fetchone()[0]
        parent = base["event_id"]
        pdu = orjson.loads(base["json"])

        def rel(**kw):
            return {"m.relates_to": {"event_id": parent, **kw}}

        cases = [
            ("$thread", "m.room.message", {"body": "r", **rel(rel_type="m.thread")}, {}),
            ("$react", "m.reaction", rel(rel_type="m.annotation", key="👍"), {}),
            ("$redacted", "m.reaction", rel(rel_type="m.annotation", key="k"),
             {"redacted_because": "$redaction"}),
            ("$rejected", "m.room.message", rel(rel_type="m.thread"), {"rejected": 1}),
            ("$soft", "m.room.message", rel(rel_type="m.thread"), {"soft_failed": 1}),
            ("$outlier", "m.room.message", rel(rel_type="m.thread"), {"soft_failed": 2}),
            ("$no_type", "m.room.message", rel(rel_type=7), {}),
            ("$reply", "m.room.message",
             {"m.relates_to": {"m.in_reply_to": {"event_id": parent}}}, {}),
        ]  # fmt: skip
        for i, (eid, etype, content, extra) in enumerate(cases, 1):
            row = {**base, "event_id": eid, "type": etype, "stream_pos": top + i,
                   "json": orjson.dumps({**pdu, "type": etype, "content": content}),
                   "txn_id": None, "txn_user": None, "txn_device": None, **extra}  # fmt: skip
            cols = ",".join(row)
            conn.execute(
                f"INSERT INTO events ({cols}) VALUES ({','.join('?' * len(row))})",  # noqa: S608
                list(row.values()),
            )
        conn.commit()
        return {"parent": parent, "room_id": base["room_id"], "sender": base["sender"]}
    finally:
        conn.close()


def test_rows_are_kept_and_relations_backfilled(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    facts = _add_events(path)
    tables = [t for t in _tables(path) if t != mig.VERSION_TABLE]
    before = _dump(path, tables)
    assert before["events"]
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[: number_of(NAME)]) == number_of(NAME)
    c.close()
    assert [t for t in _tables(path) if t != mig.VERSION_TABLE] == [
        *[t for t in tables if t < "event_relations"], "event_relations",
        *[t for t in tables if t > "event_relations"],
    ]  # fmt: skip
    assert _dump(path, tables) == before
    conn = sqlite3.connect(str(path))
    try:
        rows = conn.execute(
            "SELECT event_id, room_id, relates_to_id, rel_type, type, aggregation_key, sender"
            " FROM event_relations ORDER BY stream_pos"
        ).fetchall()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        sql = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'event_relations'"
        ).fetchone()[0]
    finally:
        conn.close()
    assert sql.rstrip().endswith("WITHOUT ROWID")
    room, parent, sender = facts["room_id"], facts["parent"], facts["sender"]
    assert rows == [
        ("$thread", room, parent, "m.thread", "m.room.message", None, sender),
        ("$react", room, parent, "m.annotation", "m.reaction", "👍", sender),
    ]


def test_the_store_lists_the_backfilled_relations(tmp_path):
    _, path = restore_before(tmp_path, NAME)
    facts = _add_events(path)
    store = SqliteStore(path)
    store.open()  # migrates to the newest version
    try:
        room, parent = facts["room_id"], facts["parent"]
        assert [e for e, _ in store.relation_children(room, [parent])] == ["$react", "$thread"]
        assert [e for e, _ in store.relation_children(room, [parent], rel_type="m.thread")] == [
            "$thread"
        ]
        assert [
            e for e, _ in store.relation_children(room, [parent], backwards=False, limit=1)
        ] == ["$thread"]
        assert store.thread_roots(room, upto=None, cap=None, participant=None, limit=5)[0][0] == (
            parent
        )
        # one event's relation, from its row (none once redacted, none in another room)
        assert store.relation_of_event(room, "$react") == Relation(parent, "m.annotation", "👍")
        assert store.relation_of_event(room, "$thread") == Relation(parent, "m.thread", None)
        assert store.relation_of_event(room, "$redacted") is None
        assert store.relation_of_event(room, parent) is None
        assert store.relation_of_event("!elsewhere:x", "$thread") is None
    finally:
        store.close()
