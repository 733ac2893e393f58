"""The index of event relations (C-S API "Relationships", "Threading"; migration 12).

``event_relations`` has one row per stored event that carries a relation
(:func:`bastion.core.relations.relation_of`): written by the persist paths
(:func:`index_relation_in`, only for such events, never for rejected, soft-failed or outlier
ones) and removed with the relation itself: when the child is redacted or its content
stripped (erasure, retention), and when its room is purged. What the API lists is read from
here; the events themselves from ``events``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

import orjson

from bastion.core.relations import THREAD, Relation, relation_of
from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []


def index_relation_in(
    conn: sqlite3.Connection, event_id: str, room_id: str, event: dict, pos: int
) -> None:
    """Inside a write that persists ``event`` (accepted, in the room's timeline) at stream
    position ``pos``: its row of ``event_relations`` when it carries a relation (a dict
    lookup and nothing more for an event that does not)."""
    rel = relation_of(event)
    if rel is None or rel.parent_id == event_id:
        return
    conn.execute(
        "INSERT OR REPLACE INTO event_relations (event_id, room_id, relates_to_id, rel_type,"
        " type, aggregation_key, sender, stream_pos) VALUES (?,?,?,?,?,?,?,?)",
        (event_id, room_id, rel.parent_id, rel.rel_type, event["type"], rel.key,
         event["sender"], pos),
    )  # fmt: skip


def unindex_relations_in(conn: sqlite3.Connection, event_ids: Sequence[str]) -> None:
    """Inside a write that removes the content of ``event_ids`` (redaction, stripping): their
    relation rows go with it."""
    conn.executemany(
        "DELETE FROM event_relations WHERE event_id = ?", [(eid,) for eid in event_ids]
    )


class RelationsStore(StoreBase):
    def relation_of_event(self, room_id: str, event_id: str) -> Relation | None:
        """The relation a stored event of ``room_id`` carries (its index row), or None: none,
        gone with its content, or no such event in the room."""
        row = self.db.read_one(
            "SELECT relates_to_id, rel_type, aggregation_key FROM event_relations"
            " WHERE event_id = ? AND room_id = ?",
            (event_id, room_id),
        )
        return None if row is None else Relation(row[0], row[1], row[2])

    def relation_children(
        self, room_id: str, parent_ids: Sequence[str], *, rel_type: str | None = None,
        event_type: str | None = None, after: int | None = None, upto: int | None = None,
        backwards: bool = True, limit: int = 50,
    ) -> list[tuple[str, int]]:  # fmt: skip
        """(event ID, stream position) of the events of ``room_id`` relating directly to one of
        ``parent_ids``, with ``after < stream_pos <= upto``, of ``rel_type`` and ``event_type``
        when given; newest first when ``backwards``, at most ``limit``."""
        if not parent_ids:
            return []
        marks = ",".join("?" * len(parent_ids))
        sql = (
            "SELECT event_id, stream_pos FROM event_relations"
            f" WHERE relates_to_id IN ({marks}) AND room_id = ?"  # noqa: S608
        )
        args: list = [*parent_ids, room_id]
        for cond, value in (
            ("rel_type = ?", rel_type), ("type = ?", event_type), ("stream_pos > ?", after),
            ("stream_pos <= ?", upto),
        ):  # fmt: skip
            if value is not None:
                sql += " AND " + cond
                args.append(value)
        sql += " ORDER BY stream_pos " + ("DESC" if backwards else "ASC") + " LIMIT ?"
        args.append(limit)
        return [(r[0], r[1]) for r in self.db.read(sql, args)]

    def relation_descendants(
        self, room_id: str, parent_id: str, depth: int, *, rel_type: str | None = None,
        event_type: str | None = None, after: int | None = None, upto: int | None = None,
        backwards: bool = True, limit: int = 50,
    ) -> list[tuple[str, int]]:  # fmt: skip
        """:meth:`relation_children` over relations of relations too, up to ``depth`` steps
        from ``parent_id`` (the filters apply to every event returned, direct or not; the
        events followed are any of the room's relations)."""
        sql = (
            "WITH RECURSIVE tree(event_id, depth) AS ("
            " SELECT event_id, 1 FROM event_relations WHERE relates_to_id = ? AND room_id = ?"
            " UNION"
            " SELECT r.event_id, tree.depth + 1 FROM event_relations r"
            " JOIN tree ON r.relates_to_id = tree.event_id"
            " WHERE tree.depth < ? AND r.room_id = ?)"
            " SELECT DISTINCT r.event_id, r.stream_pos FROM tree"
            " JOIN event_relations r ON r.event_id = tree.event_id WHERE 1"
        )
        args: list = [parent_id, room_id, depth, room_id]
        for cond, value in (
            ("r.rel_type = ?", rel_type), ("r.type = ?", event_type),
            ("r.stream_pos > ?", after), ("r.stream_pos <= ?", upto),
        ):  # fmt: skip
            if value is not None:
                sql += " AND " + cond
                args.append(value)
        sql += " ORDER BY r.stream_pos " + ("DESC" if backwards else "ASC") + " LIMIT ?"
        args.append(limit)
        return [(r[0], r[1]) for r in self.db.read(sql, args)]

    def thread_roots(
        self, room_id: str, *, upto: int | None, cap: int | None, participant: str | None,
        limit: int,
    ) -> list[tuple[str, int]]:  # fmt: skip
        """(root event ID, position of its latest reply) of the room's threads (events of the
        room with ``m.thread`` children), latest activity first: replies at positions up to
        ``cap`` count; threads whose latest reply is at or below ``upto``; with
        ``participant``, only the threads they started or replied to."""
        sql = (
            "SELECT t.relates_to_id, MAX(t.stream_pos) AS latest FROM event_relations t"
            " JOIN events e ON e.event_id = t.relates_to_id AND e.room_id = t.room_id"
            " AND e.rejected = 0 AND e.soft_failed = 0"
            # (a literal: the partial index event_relations_threads serves only this)
            " WHERE t.room_id = ? AND t.rel_type = 'm.thread'"
        )
        args: list = [room_id]
        if cap is not None:
            sql += " AND t.stream_pos <= ?"
            args.append(cap)
        if participant is not None:
            sql += (
                " AND (e.sender = ? OR EXISTS (SELECT 1 FROM event_relations p"
                " WHERE p.room_id = t.room_id AND p.relates_to_id = t.relates_to_id"
                " AND p.rel_type = ? AND p.sender = ?))"
            )
            args += [participant, THREAD, participant]
        sql += " GROUP BY t.relates_to_id"
        if upto is not None:
            sql += " HAVING latest <= ?"
            args.append(upto)
        sql += " ORDER BY latest DESC LIMIT ?"
        args.append(limit)
        return [(r[0], r[1]) for r in self.db.read(sql, args)]

    def thread_summaries(
        self, parents: Mapping[str, str], user_id: str, cap: int | None
    ) -> dict[str, tuple[int, str, bool]]:
        """For those of ``parents`` (event ID -> its room) with ``m.thread`` children in their
        room at positions up to ``cap``: (count, ID of the latest child, whether ``user_id``
        sent one), in one read for every room."""
        if not parents:
            return {}
        sql = (
            # (SQLite: with MAX the only min/max aggregate, the bare event_id is that of the row
            # holding MAX(stream_pos))
            "SELECT r.relates_to_id, COUNT(*), MAX(r.stream_pos), r.event_id, SUM(r.sender = ?)"
            " FROM json_each(?) j JOIN event_relations r"
            " ON r.room_id = j.value AND r.relates_to_id = j.key"
            # (a literal: the partial index event_relations_threads serves it)
            " WHERE r.rel_type = 'm.thread'"
        )
        args: list = [user_id, orjson.dumps(dict(parents)).decode()]
        if cap is not None:
            sql += " AND r.stream_pos <= ?"
            args.append(cap)
        sql += " GROUP BY r.relates_to_id"
        return {r[0]: (r[1], r[3], bool(r[4])) for r in self.db.read(sql, args)}

    def relations_of_types(
        self, parents: Mapping[str, str], rel_types: Sequence[str], cap: int | None,
        limit: int,
    ) -> list[tuple[str, str, str]]:  # fmt: skip
        """(child ID, parent ID, relation type) of the children of ``parents`` (event ID ->
        its room) in their room with one of ``rel_types``, at positions up to ``cap``, oldest
        first, at most ``limit``; in one read for every room."""
        if not parents or not rel_types:
            return []
        types = ",".join("?" * len(rel_types))
        sql = (
            "SELECT r.event_id, r.relates_to_id, r.rel_type FROM json_each(?) j"
            " JOIN event_relations r ON r.relates_to_id = j.key AND r.room_id = j.value"
            f" WHERE r.rel_type IN ({types})"  # noqa: S608
        )
        args: list = [orjson.dumps(dict(parents)).decode(), *rel_types]
        if cap is not None:
            sql += " AND r.stream_pos <= ?"
            args.append(cap)
        sql += " ORDER BY r.stream_pos LIMIT ?"
        args.append(limit)
        return [(r[0], r[1], r[2]) for r in self.db.read(sql, args)]

    def related_parents(self, parent_ids: Sequence[str], rel_types: Sequence[str]) -> set[str]:
        """Those of ``parent_ids`` with at least one child of one of ``rel_types`` (in any
        room, at any position: a cheap test before the reads that apply both), in one read:
        one probe of ``event_relations_parent`` per ID, however many there are."""
        if not parent_ids or not rel_types:
            return set()
        types = ",".join("?" * len(rel_types))
        rows = self.db.read(
            "SELECT value FROM json_each(?) WHERE EXISTS (SELECT 1 FROM event_relations"
            f" WHERE relates_to_id = value AND rel_type IN ({types}))",  # noqa: S608
            (orjson.dumps(list(parent_ids)).decode(), *rel_types),
        )
        return {r[0] for r in rows}
