"""Migration 12: the index of event relations (issue 11; C-S API "Relationships",
"Threading"; see :mod:`bastion.storage.sqlite.relations`).

``event_relations`` holds one row per stored event whose content carries ``m.relates_to``
with a string ``rel_type`` and ``event_id`` (:func:`bastion.core.relations.relation_of`):
the child's ID (the key: WITHOUT ROWID, one B-tree), its room, the parent's ID, the relation
type, the child's event type, the annotation key of an ``m.annotation``, the sender and the
child's stream position. ``event_relations_parent`` lists a parent's children in stream order;
``event_relations_threads`` (partial: ``m.thread`` rows only) a room's thread replies.

Rejected, soft-failed and outlier events get no row, nor do redacted events (a redacted event
has lost its ``m.relates_to``).

Backfill: every existing event of that kind, read from its stored JSON (only the rows whose
JSON holds the bytes ``m.relates_to`` are parsed).
"""

from __future__ import annotations

import sqlite3

import orjson

from bastion.core.relations import relation_of
from bastion.storage.sqlite.migrations import run_script

SCHEMA = """
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    type TEXT NOT NULL,
    aggregation_key TEXT,
    sender TEXT NOT NULL,
    stream_pos INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX event_relations_parent ON event_relations (relates_to_id, stream_pos);
CREATE INDEX event_relations_threads ON event_relations (room_id, relates_to_id, stream_pos)
    WHERE rel_type = 'm.thread';
"""


def up(conn: sqlite3.Connection) -> None:
    run_script(conn, SCHEMA)
    rows = conn.execute(
        "SELECT event_id, room_id, type, sender, stream_pos, json FROM events"
        " WHERE rejected = 0 AND soft_failed = 0 AND redacted_because IS NULL"
        " AND instr(json, CAST('m.relates_to' AS BLOB)) > 0"
    )
    batch = []
    for event_id, room_id, etype, sender, pos, raw in rows:
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        rel = relation_of(event) if isinstance(event, dict) else None
        if rel is None or rel.parent_id == event_id:
            continue
        batch.append((event_id, room_id, rel.parent_id, rel.rel_type, etype, rel.key, sender, pos))
    conn.executemany(
        "INSERT OR REPLACE INTO event_relations (event_id, room_id, relates_to_id, rel_type,"
        " type, aggregation_key, sender, stream_pos) VALUES (?,?,?,?,?,?,?,?)",
        batch,
    )
