"""bastion.core.space_hierarchy: which m.space.child events make children, their order (the
spec's example), and what is kept of another server's answer."""

from __future__ import annotations

from bastion.core.space_hierarchy import (
    child_via,
    order_children,
    remote_summary_visible,
    sanitize_children_state,
    sanitize_summary,
    valid_order,
)


def child(room_id: str, ts: int, **content) -> dict:
    return {"type": "m.space.child", "state_key": room_id, "origin_server_ts": ts,
            "sender": "@a:x", "content": {"via": ["example.org"], **content}}  # fmt: skip


def test_the_spec_example_order():
    events = [
        child("!b:example.org", 1640341000000, order=" "),
        child("!a:example.org", 1640141000000, order="aaaa"),
        child("!c:example.org", 1640841000000, order="first"),
        child("!e:example.org", 1640641000000),
        child("!d:example.org", 1640741000000),
    ]
    got = [e["state_key"] for e in order_children(reversed(events))]
    assert got == ["!b:example.org", "!a:example.org", "!c:example.org", "!e:example.org",
                   "!d:example.org"]  # fmt: skip


def test_ties_and_invalid_orders():
    events = [
        child("!z:x", 5, order="same"),
        child("!y:x", 5, order="same"),
        child("!x:x", 4, order="same"),
        child("!w:x", 1, order="\u00e9"),  # not printable ASCII: as if absent
        child("!v:x", 2, order="x" * 51),  # too long
        child("!u:x", 3, order=7),  # not a string
    ]
    got = [e["state_key"] for e in order_children(events)]
    assert got == ["!x:x", "!y:x", "!z:x", "!w:x", "!v:x", "!u:x"]
    assert valid_order("~ ") == "~ " and valid_order("") is None and valid_order("\x7f") is None


def test_a_child_needs_a_non_empty_via_and_a_room_id():
    events = [
        child("!ok:x", 1),
        {**child("!novia:x", 1), "content": {}},
        {**child("!emptyvia:x", 1), "content": {"via": []}},
        {**child("!badvia:x", 1), "content": {"via": "example.org"}},
        {**child("!numbers:x", 1), "content": {"via": [1, 2]}},
        child("not-a-room", 1),
        {**child("!other:x", 1), "type": "m.space.parent"},
    ]
    assert [e["state_key"] for e in order_children(events)] == ["!ok:x"]
    assert child_via({"via": ["a", "", 3, "a", "b" * 300, "c"]}) == ["a", "c"]
    assert len(child_via({"via": [f"s{i}" for i in range(100)]})) == 10


def test_remote_answers_are_trimmed():
    hostile = {
        "room_id": "!r:x",
        "num_joined_members": True,
        "world_readable": "yes",
        "guest_can_join": True,
        "name": "n" * 5000,
        "topic": "ok",
        "join_rule": ["public"],
        "allowed_room_ids": ["!a:x", "nope", 5],
        "extra": {"secret": 1},
        "children_state": [
            {**child("!c:x", 2), "content": {"via": ["s"], "order": "b", "junk": "x" * 100}},
            child("!d:x", 1, order="a", suggested=True),
            child("!c:x", 3),  # a duplicate
            {"type": "m.room.name", "state_key": "!e:x", "content": {"via": ["s"]}},
            "nonsense",
        ],
    }
    clean = sanitize_summary(hostile, "!r:x")
    assert clean == {
        "room_id": "!r:x", "num_joined_members": 0, "world_readable": False,
        "guest_can_join": True, "topic": "ok", "allowed_room_ids": ["!a:x"],
        "children_state": [
            {"type": "m.space.child", "state_key": "!d:x", "sender": "@a:x",
             "origin_server_ts": 1, "content": {"via": ["example.org"], "order": "a",
                                                "suggested": True}},
            {"type": "m.space.child", "state_key": "!c:x", "sender": "@a:x",
             "origin_server_ts": 2, "content": {"via": ["s"], "order": "b"}},
        ],
    }  # fmt: skip
    assert sanitize_summary(hostile, "!other:x") is None
    assert sanitize_summary({"room_id": "r"}) is None and sanitize_summary([]) is None
    assert sanitize_children_state({"not": "a list"}) == []


def test_who_may_see_a_remote_room():
    def visible(summary, membership=None, allowed=False):
        return remote_summary_visible(
            summary, membership=membership, joined_to_an_allowed_room=allowed
        )

    assert visible({"join_rule": "public"}) and visible({"join_rule": "knock"})
    assert visible({"join_rule": "invite", "world_readable": True})
    assert not visible({"join_rule": "invite"}) and not visible({})
    assert visible({"join_rule": "invite"}, membership="invite")
    assert visible({"join_rule": "invite"}, membership="join")
    assert not visible({"join_rule": "invite"}, membership="leave")
    assert not visible({"join_rule": "restricted"}) and visible(
        {"join_rule": "restricted"}, allowed=True
    )
