"""Whether a received redaction is applied to the event it names (room versions v3+ "Handling
redactions"; C-S API "Redactions"). Pure.

The auth rules accept a redaction without looking at its target (the target may not be known
yet), so a redaction can be accepted into the room and still not apply: "Servers MUST only apply
redactions to events where the sender's domains match, or the sender of the redaction has the
appropriate permissions per the power levels." A redaction never applies across rooms, and a
state event keeps its redacted form's keys like every redacted event (core/events.py redact).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bastion.core.identifiers import server_name_of
from bastion.core.power_levels import named_level, user_power_level
from bastion.core.room_versions import RoomVersion

__all__ = ["may_apply_redaction", "redaction_target_id"]


def redaction_target_id(redaction: Mapping[str, Any], rv: RoomVersion) -> str | None:
    """The event ID an ``m.room.redaction`` names: ``content.redacts`` in room versions that
    moved it there (v11+), the top-level ``redacts`` before (either accepted when present)."""
    if redaction.get("type") != "m.room.redaction":
        return None
    content = redaction.get("content")
    inner = content.get("redacts") if isinstance(content, Mapping) else None
    outer = redaction.get("redacts")
    first, second = (inner, outer) if rv.redacts_in_content else (outer, inner)
    for value in (first, second):
        if isinstance(value, str) and value:
            return value
    return None


def may_apply_redaction(
    redaction: Mapping[str, Any],
    target: Mapping[str, Any],
    create: Mapping[str, Any] | None,
    pl_content: Mapping[str, Any] | None,
    rv: RoomVersion,
) -> bool:
    """True when ``redaction`` (accepted into the room) may redact ``target``: both in the same
    room, and the redaction's sender on the target sender's server or, by the power levels in
    force for the redaction (``create`` and ``pl_content``: the content of the room's create
    event and power levels then), allowed to redact other users' events."""
    if redaction.get("room_id") != target.get("room_id"):
        return False
    sender = redaction.get("sender")
    if not isinstance(sender, str):
        return False
    server = server_name_of(sender)
    if server is not None and server == server_name_of(target.get("sender")):
        return True
    return user_power_level(sender, create, pl_content, rv) >= named_level(pl_content, "redact", rv)
