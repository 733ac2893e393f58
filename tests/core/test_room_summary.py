"""Who may see a room's summary (bastion.core.room_summary)."""

from __future__ import annotations

import pytest

from bastion.core.room_summary import allowed_room_ids, summary_visible
from bastion.core.room_versions import get_room_version

V6, V8, V12 = get_room_version("6"), get_room_version("8"), get_room_version("12")


def visible(membership=None, rule="invite", hv="shared", rv=V12, allowed=False) -> bool:
    return summary_visible(membership=membership, join_rule=rule, history_visibility=hv, rv=rv,
                           joined_to_an_allowed_room=allowed)  # fmt: skip


@pytest.mark.parametrize("membership", ["join", "invite"])
def test_members_and_invitees(membership):
    assert visible(membership)


@pytest.mark.parametrize("membership", [None, "leave", "ban", "knock"])
def test_others_not_in_an_invite_room(membership):
    assert not visible(membership)
    assert not visible(membership, rule="private")
    assert not visible(membership, rule=None)
    assert not visible(membership, rule=["public"])


def test_public_knock_and_world_readable():
    assert visible(rule="public") and visible("ban", rule="public")
    assert visible(rule="knock") and visible(rule="knock_restricted")
    assert visible(hv="world_readable")
    # Join rules the room version does not have count for nothing.
    assert not visible(rule="knock", rv=V6)
    assert not visible(rule="knock_restricted", rv=V8)


def test_restricted_needs_an_allowed_room():
    assert not visible(rule="restricted")
    assert visible(rule="restricted", allowed=True)
    assert not visible(rule="restricted", rv=V6, allowed=True)


def test_allowed_room_ids():
    content = {"join_rule": "restricted", "allow": [
        {"type": "m.room_membership", "room_id": "!a:x"}, {"type": "m.room_membership"},
        {"type": "other", "room_id": "!b:x"}, "junk", {"type": "m.room_membership", "room_id": 5},
        {"type": "m.room_membership", "room_id": "!a:x"}, {"type": "m.room_membership",
                                                          "room_id": "!c:x"}]}  # fmt: skip
    assert allowed_room_ids(content, V12) == ["!a:x", "!c:x"]
    assert allowed_room_ids(content, V6) == []
    assert allowed_room_ids({**content, "join_rule": "public"}, V12) == []
    assert allowed_room_ids({**content, "allow": "x"}, V12) == []
    assert allowed_room_ids(None, V12) == []
