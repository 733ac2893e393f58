"""The full-text index of server-side search (C-S API "Server Side Search"; migration 14).

``event_search`` (FTS5, rowid = the event's stream position) has one row per stored event
carrying searchable text (:func:`bastion.core.search.searchable_text`): written by the persist
paths (:func:`index_search_in`, only for such events, never for rejected, soft-failed or
outlier ones; staged in ``event_search_pending`` and moved into the index in batches, see
:func:`flush_search_in`) and deleted with the text itself: when the event is redacted or its content
stripped (erasure, retention), and when its room is purged. After an erasure the index is
rewritten (``optimize``, in :func:`optimize_search_in`, run by the erasure's disk hygiene) so
no old segment of it keeps the erased words.

Which rooms a user searches, and which results they see, is decided by the service
(:mod:`bastion.services.search`); the store finds the candidates.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

import orjson

from bastion.core.search import searchable_text
from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []


#: Staged rows moved into the index at once by the persist path.
FLUSH_EVERY = 256


def index_search_in(conn: sqlite3.Connection, room_id: str, event: dict, pos: int) -> None:
    """Inside a write that persists ``event`` (accepted, in ``room_id``'s timeline) at stream
    position ``pos``: its staged index row when it carries searchable text (a dict lookup and
    nothing more for an event that does not). One plain insert; every :data:`FLUSH_EVERY`
    staged rows they are moved into the index together (an FTS5 write costs a segment per
    transaction: one per batch, not one per message)."""
    found = searchable_text(event)
    if found is None:
        return
    cur = conn.execute(
        "INSERT INTO event_search_pending (stream_pos, room_id, sender, col, text)"
        " VALUES (?, ?, ?, ?, ?)",
        (pos, room_id, event["sender"], *found),
    )
    # (seq counts from 1 again once the staging table is emptied)
    if (cur.lastrowid or 0) >= FLUSH_EVERY:
        flush_search_in(conn)


def flush_search_in(conn: sqlite3.Connection) -> int:
    """Inside a write: move the staged rows into the index; how many there were."""
    conn.execute(
        "INSERT INTO event_search_events (stream_pos, room_id, sender)"
        " SELECT stream_pos, room_id, sender FROM event_search_pending"
    )
    n = conn.execute(
        "INSERT INTO event_search (rowid, body, name, topic)"
        " SELECT stream_pos, CASE col WHEN 'body' THEN text END,"
        " CASE col WHEN 'name' THEN text END, CASE col WHEN 'topic' THEN text END"
        " FROM event_search_pending ORDER BY seq"
    ).rowcount
    conn.execute("DELETE FROM event_search_pending")
    return n


#: The tables of the index and their stream-position columns.
_INDEX_TABLES = (
    ("event_search", "rowid"),
    ("event_search_events", "stream_pos"),
    ("event_search_pending", "stream_pos"),
)


def unindex_search_in(conn: sqlite3.Connection, event_ids: Sequence[str]) -> None:
    """Inside a write that removes the content of ``event_ids`` (redaction, stripping): their
    index rows (staged or not) go with it."""
    args = [(eid,) for eid in event_ids]
    for table, column in _INDEX_TABLES:
        conn.executemany(
            f"DELETE FROM {table} WHERE {column} = (SELECT stream_pos FROM events"  # noqa: S608
            " WHERE event_id = ?)",
            args,
        )


def unindex_room_search_in(conn: sqlite3.Connection, room_id: str) -> None:
    """Inside a write that purges ``room_id`` (before its events are deleted)."""
    for table, column in _INDEX_TABLES:
        conn.execute(
            f"DELETE FROM {table} WHERE {column} IN (SELECT stream_pos FROM events"  # noqa: S608
            " WHERE room_id = ?)",
            (room_id,),
        )


def optimize_search_in(conn: sqlite3.Connection) -> None:
    """Merge the index's segments into one (FTS5 ``optimize``): what deleted rows left in older
    segments is dropped, and the pages it was on are freed (zeroed by ``secure_delete``)."""
    conn.execute("INSERT INTO event_search (event_search) VALUES ('optimize')")


def _where(
    rooms: Mapping[str, int | None], senders: Sequence[str] | None, not_senders: Sequence[str]
) -> tuple[str, list]:
    """The conditions on ``event_search_events m`` of a search and their arguments: in
    ``rooms`` (room ID -> highest readable stream position, None: no cap), of
    ``senders``/not of ``not_senders``. (The index holds accepted, unredacted events only.)"""
    free = [r for r, cap in rooms.items() if cap is None]
    capped = {r: cap for r, cap in rooms.items() if cap is not None}
    sql = " AND (m.room_id IN (SELECT value FROM json_each(?))"
    args: list = [orjson.dumps(free).decode()]
    if capped:
        sql += " OR m.stream_pos <= (SELECT value FROM json_each(?) WHERE key = m.room_id)"
        args.append(orjson.dumps(capped).decode())
    sql += ")"
    if senders is not None:
        sql += " AND m.sender IN (SELECT value FROM json_each(?))"
        args.append(orjson.dumps(list(senders)).decode())
    if not_senders:
        sql += " AND m.sender NOT IN (SELECT value FROM json_each(?))"
        args.append(orjson.dumps(list(not_senders)).decode())
    return sql, args


#: The matches of a search: the index joined to the rooms and senders of its events.
_MATCHES = (
    " FROM event_search s CROSS JOIN event_search_events m ON m.stream_pos = s.rowid"
    " WHERE event_search MATCH ?"
)


class SearchStore(StoreBase):
    async def flush_search_index(self) -> None:
        """Move the staged rows into the index (before a search reads it); nothing to write
        when none are staged."""
        if self.db.read_one("SELECT 1 FROM event_search_pending LIMIT 1") is not None:
            await self.db.write(flush_search_in)

    async def optimize_search_index(self) -> None:
        """Rewrite the index into one segment (FTS5 ``optimize``), so the words of rows deleted
        from it (events stripped by retention) are gone from its older segments too."""
        await self.db.write(optimize_search_in)

    def search_events(
        self, query: str, rooms: Mapping[str, int | None], *, senders: Sequence[str] | None,
        not_senders: Sequence[str], recent: bool, after: tuple[float, int] | None, limit: int,
    ) -> list[tuple[str, int, float]]:  # fmt: skip
        """(event ID, stream position, score) of the indexed events matching the FTS5
        ``query`` (built by :func:`bastion.core.search.fts_query`, never from raw input) in
        ``rooms`` (room ID -> highest readable stream position, None: no cap), best first:
        newest first when ``recent``, else by the index's BM25 score (lower is better), then
        newest first. ``after`` (score, position): the last result of the previous page."""
        if not rooms:
            return []
        where, args = _where(rooms, senders, not_senders)
        if recent:
            if after is not None:
                where += " AND s.rowid < ?"
                args.append(after[1])
            order = "pos DESC"
        else:
            order = "score, pos DESC"
        sql = "SELECT s.rowid AS pos, bm25(event_search) AS score" + _MATCHES + where
        if after is not None and not recent:
            sql = f"SELECT * FROM ({sql}) WHERE score > ? OR (score = ? AND pos < ?)"  # noqa: S608
            args += [after[0], after[0], after[1]]
        rows = self.db.read(
            f"SELECT e.event_id, x.pos, x.score FROM ({sql} ORDER BY {order} LIMIT ?) x"  # noqa: S608
            f" JOIN events e ON e.stream_pos = x.pos ORDER BY {order.replace('pos', 'x.pos')}",
            [query, *args, limit],
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def search_count(
        self, query: str, rooms: Mapping[str, int | None], *, senders: Sequence[str] | None,
        not_senders: Sequence[str],
    ) -> int:  # fmt: skip
        """How many indexed events :meth:`search_events` would list in all (before the
        reader's history visibility is applied: the spec's approximate ``count``)."""
        if not rooms:
            return 0
        where, args = _where(rooms, senders, not_senders)
        row = self.db.read_one("SELECT COUNT(*)" + _MATCHES + where, [query, *args])
        return row[0] if row else 0
