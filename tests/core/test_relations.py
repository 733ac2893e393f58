"""The pure relation rules (core/relations.py): what counts as a relation, which replacement
is bundled, what a thread may start from, which thread an event is in."""

from __future__ import annotations

from bastion.core.relations import (
    THREAD_HOPS,
    Relation,
    latest_replacement,
    may_start_thread_from,
    parse_recurse,
    relation_of,
    thread_path,
)


def ev(content, **kw):
    return {"type": "m.room.message", "sender": "@a:x", "content": content, **kw}


def rel(**kw):
    return ev({"m.relates_to": kw})


def test_relation_of():
    assert relation_of(rel(rel_type="m.thread", event_id="$p")) == Relation("$p", "m.thread", None)
    assert relation_of(rel(rel_type="m.annotation", event_id="$p", key="k")) == Relation(
        "$p", "m.annotation", "k"
    )
    assert relation_of(rel(rel_type="m.reference", event_id="$p", key="k")).key is None
    assert relation_of(rel(rel_type="m.annotation", event_id="$p", key=3)).key is None
    for bad in (
        rel(rel_type=1, event_id="$p"), rel(rel_type="m.thread", event_id=["$p"]),
        rel(rel_type="", event_id="$p"), rel(rel_type="m.thread", event_id=""),
        rel(rel_type="m.thread", event_id="$" + "p" * 5000),
        rel(**{"m.in_reply_to": {"event_id": "$p"}}), ev({"m.relates_to": "x"}), ev([]),
        {"type": "m.room.message"},
    ):  # fmt: skip
        assert relation_of(bad) is None


def test_latest_replacement():
    original = ev({"body": "a"})
    new = {"m.new_content": {"body": "b"}, "m.relates_to": {"rel_type": "m.replace"}}

    def edit(eid, ts, **kw):
        return {**ev(new, origin_server_ts=ts), "event_id": eid, **kw}

    cands = [
        edit("$1", 10), edit("$3", 20), edit("$2", 20),
        edit("$4", 99, sender="@b:x"), edit("$5", 99, type="m.sticker"),
        {**ev({"body": "no new content"}, origin_server_ts=99), "event_id": "$6"},
        edit("$7", 99, state_key=""),
    ]  # fmt: skip
    assert latest_replacement(original, cands) == 1  # ts 20, then the greatest ID
    assert latest_replacement(original, cands[3:]) is None
    encrypted = {"type": "m.room.encrypted", "sender": "@a:x", "content": {}, "event_id": "$e",
                 "origin_server_ts": 1}  # fmt: skip
    assert latest_replacement({**original, "type": "m.room.encrypted"}, [encrypted]) == 0
    assert latest_replacement(rel(rel_type="m.replace", event_id="$o"), cands) is None
    assert latest_replacement({**original, "state_key": ""}, cands) is None


def test_thread_roots_and_recurse():
    assert may_start_thread_from(None) and may_start_thread_from(ev({"body": "x"}))
    assert may_start_thread_from(ev({"m.relates_to": {"m.in_reply_to": {"event_id": "$p"}}}))
    assert not may_start_thread_from(rel(rel_type="m.thread", event_id="$p"))
    assert [parse_recurse(v) for v in (None, "true", "false", "1", "True", "")] == [
        False, True, False, None, None, None,
    ]  # fmt: skip


def test_thread_path():
    """C-S API "Threaded read receipts": in a thread by an ``m.thread`` relation or through
    other relations to an event that has one, at most THREAD_HOPS relations in all; thread
    roots and what relates to them otherwise are in the main timeline."""
    rels = {
        "$reply": Relation("$root", "m.thread", None),
        "$edit": Relation("$reply", "m.replace", None),
        "$reaction": Relation("$edit", "m.annotation", None),
        "$ref": Relation("$root", "m.reference", None),
        "$loop1": Relation("$loop2", "m.reference", None),
        "$loop2": Relation("$loop1", "m.reference", None),
    }
    looked: list[str] = []

    def parent(event_id):
        looked.append(event_id)
        return rels.get(event_id)

    def path(event_id):
        return thread_path(event_id, rels.get(event_id), parent)

    assert THREAD_HOPS == 3
    assert path("$root") == (None, ["$root"])
    assert path("$reply") == ("$root", ["$reply"])
    assert path("$edit") == ("$root", ["$edit", "$reply"])
    # reaction -> edit -> reply -(m.thread)-> root: three hops
    assert path("$reaction") == ("$root", ["$reaction", "$edit", "$reply"])
    # one more is too far
    rels["$far"] = Relation("$reaction", "m.annotation", None)
    looked.clear()
    assert path("$far") == (None, ["$far", "$reaction", "$edit", "$reply"])
    assert looked == ["$reaction", "$edit"]  # the last parent is never looked up
    # related to the root otherwise: the main timeline, with the root on the way
    assert path("$ref") == (None, ["$ref", "$root"])
    # an unknown parent, and a loop
    assert path("$gone") == (None, ["$gone"])
    rels["$orphan"] = Relation("$gone", "m.annotation", None)
    assert path("$orphan") == (None, ["$orphan", "$gone"])
    assert path("$loop1") == (None, ["$loop1", "$loop2"])
