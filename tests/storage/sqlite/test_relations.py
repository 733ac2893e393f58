"""The relations index's batched reads (storage/sqlite/relations.py): thread summaries and
children of given types for parents of several rooms in one read, each child counted only in
its parent's room and up to the read cap, and the cheap test of which events have children of
the bundled types."""

from __future__ import annotations

import asyncio

from bastion.storage.sqlite.relations import index_relation_in
from bastion.storage.sqlite.store import SqliteStore

A, B = "!a:example.org", "!b:example.org"
BUNDLED = ("m.thread", "m.replace", "m.reference")


def child(conn, pos: int, room: str, parent: str, rel_type: str, sender: str = "@u:x") -> str:
    event_id = f"$c{pos}"
    rel: dict = {"rel_type": rel_type, "event_id": parent}
    if rel_type == "m.annotation":
        rel["key"] = "+"
    event = {"type": "m.room.message", "sender": sender, "content": {"m.relates_to": rel}}
    index_relation_in(conn, event_id, room, event, pos)
    return event_id


def test_batched_reads_over_rooms(tmp_path):
    store = SqliteStore(tmp_path / "db.sqlite")
    store.open()
    try:

        def fill(conn) -> None:
            child(conn, 1, A, "$ra", "m.thread")
            child(conn, 2, A, "$ra", "m.thread", sender="@me:x")
            child(conn, 3, B, "$rb", "m.thread")
            child(conn, 4, A, "$ra", "m.replace")
            child(conn, 5, B, "$rb", "m.reference")
            child(conn, 6, A, "$ra", "m.thread")  # after the cap below
            child(conn, 7, B, "$ra", "m.thread")  # in another room than its parent
            child(conn, 8, B, "$ra", "m.replace")  # likewise
            child(conn, 9, A, "$liked", "m.annotation")  # not a bundled type

        asyncio.run(store.db.write(fill))
        parents = {"$ra": A, "$rb": B}
        assert store.thread_summaries(parents, "@me:x", None) == {
            "$ra": (3, "$c6", True),
            "$rb": (1, "$c3", False),
        }
        assert store.thread_summaries(parents, "@me:x", 5) == {
            "$ra": (2, "$c2", True),
            "$rb": (1, "$c3", False),
        }
        assert store.thread_summaries({}, "@me:x", None) == {}
        types = ("m.replace", "m.reference")
        assert store.relations_of_types(parents, types, None, 10) == [
            ("$c4", "$ra", "m.replace"),
            ("$c5", "$rb", "m.reference"),
        ]
        assert store.relations_of_types(parents, types, 4, 10) == [("$c4", "$ra", "m.replace")]
        assert store.relations_of_types(parents, types, None, 1) == [("$c4", "$ra", "m.replace")]
        assert store.relations_of_types({"$rb": A}, types, None, 10) == []
        ids = ["$ra", "$rb", "$liked", "$c1", "$unknown"]
        assert store.related_parents(ids, BUNDLED) == {"$ra", "$rb"}
        assert store.related_parents(ids, ("m.annotation",)) == {"$liked"}
        assert store.related_parents([], BUNDLED) == set()
    finally:
        store.close()
