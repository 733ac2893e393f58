"""Migration 14: the full-text index of server-side search (issue 11; C-S API "Server Side
Search"; see :mod:`bastion.storage.sqlite.search` and :mod:`bastion.core.search`).

``event_search`` is an FTS5 table (unicode61 tokenizer, diacritics removed) with one row per
stored event that carries searchable text: its rowid is the event's stream position
(``events.stream_pos``, unique), its columns ``body``, ``name`` and ``topic`` hold
``content.body`` of an ``m.room.message``, ``content.name`` of an ``m.room.name`` and
``content.topic`` of an ``m.room.topic`` (one of them per row).

``event_search_events`` has the room and sender of each indexed event (keyed by stream
position: a search filters the matches by room without reading the events' rows).

``event_search_pending`` stages what the persist paths index (one plain row per event, in
the sending transaction): an FTS5 write costs a new index segment per transaction, so rows are
moved into ``event_search`` in batches (every 256 staged rows, and before every search).

``event_search`` is an ordinary FTS5 table (it keeps its own copy of the text), not an external-content or
contentless one: deleting a row is then a plain ``DELETE`` that always removes exactly the
tokens that were indexed, whatever happened to the event since, and the erasure's
``optimize`` (storage/sqlite/erasure.py) rewrites the index so no segment keeps them.

Rejected, soft-failed and outlier events get no row, nor do redacted events (their content
is gone) nor encrypted ones (``m.room.encrypted`` carries no searchable key).

Backfill: every existing event of that kind, read from its stored JSON (only the rows of the
three event types are parsed).
"""

from __future__ import annotations

import sqlite3

import orjson

from bastion.core.search import COLUMN_OF_TYPE, searchable_text
from bastion.storage.sqlite.migrations import run_script

SCHEMA = """
CREATE VIRTUAL TABLE event_search USING fts5(
    body, name, topic, tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TABLE event_search_events (
    stream_pos INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL
);
CREATE TABLE event_search_pending (
    seq INTEGER PRIMARY KEY,
    stream_pos INTEGER NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    col TEXT NOT NULL,
    text TEXT NOT NULL
);
"""


def up(conn: sqlite3.Connection) -> None:
    run_script(conn, SCHEMA)
    marks = ",".join("?" * len(COLUMN_OF_TYPE))
    rows = conn.execute(
        "SELECT stream_pos, room_id, sender, json FROM events"
        " WHERE rejected = 0 AND soft_failed = 0 AND redacted_because IS NULL"
        f" AND type IN ({marks})",  # noqa: S608
        list(COLUMN_OF_TYPE),
    )
    batches: dict[str, list[tuple[int, str]]] = {c: [] for c in COLUMN_OF_TYPE.values()}
    meta: list[tuple[int, str, str]] = []
    for pos, room_id, sender, raw in rows:
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        found = searchable_text(event) if isinstance(event, dict) else None
        if found is not None:
            batches[found[0]].append((pos, found[1]))
            meta.append((pos, room_id, sender))
    conn.executemany(
        "INSERT INTO event_search_events (stream_pos, room_id, sender) VALUES (?, ?, ?)", meta
    )
    for column, batch in batches.items():
        conn.executemany(
            f"INSERT INTO event_search (rowid, {column}) VALUES (?, ?)",  # noqa: S608
            batch,
        )
