"""Who may see a room's summary (C-S API "Room Summaries", ``GET /v1/room_summary/
{roomIdOrAlias}``, room_summary.yaml, v1.15, MSC3266). Pure: the caller gathers the room's join
rule, history visibility and the requester's memberships.

A summary is shown to a user who is joined to or invited to the room; to anyone when the room is
one they could preview or join by themselves: join rule ``public``, ``knock`` or
``knock_restricted`` (where the room version has them), or ``world_readable`` history; and, for
a ``restricted`` or ``knock_restricted`` room, to a user joined to one of the rooms its join
rule allows (they may join it). Everyone else is answered as if the room did not exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bastion.core.room_versions import RoomVersion

__all__ = ["allowed_room_ids", "summary_visible"]


def _rule_in_version(rule: str | None, rv: RoomVersion) -> str | None:
    """The join rule as the room's version understands it (None: one it does not have)."""
    if rule in ("public", "invite", "private"):
        return rule
    if rule == "knock" and rv.knock_join_rule:
        return rule
    if rule == "restricted" and rv.restricted_join_rule:
        return rule
    if rule == "knock_restricted" and rv.knock_restricted_join_rule:
        return rule
    return None


def allowed_room_ids(join_rules: Mapping[str, Any] | None, rv: RoomVersion) -> list[str]:
    """The rooms a ``restricted`` / ``knock_restricted`` join rule allows (``m.room_membership``
    entries); empty for any other rule."""
    content = join_rules or {}
    if _rule_in_version(content.get("join_rule"), rv) not in ("restricted", "knock_restricted"):
        return []
    allow = content.get("allow")
    out: list[str] = []
    for entry in allow if isinstance(allow, list) else []:
        if (
            isinstance(entry, Mapping)
            and entry.get("type") == "m.room_membership"
            and isinstance(entry.get("room_id"), str)
            and entry["room_id"] not in out
        ):
            out.append(entry["room_id"])
    return out


def summary_visible(
    *,
    membership: str | None,
    join_rule: str | None,
    history_visibility: str | None,
    rv: RoomVersion,
    joined_to_an_allowed_room: bool,
) -> bool:
    """Whether a user with ``membership`` in the room may see its summary (see the module)."""
    if membership in ("join", "invite"):
        return True
    if history_visibility == "world_readable":
        return True
    rule = _rule_in_version(join_rule, rv)
    if rule in ("public", "knock", "knock_restricted"):
        return True
    return rule == "restricted" and joined_to_an_allowed_room
