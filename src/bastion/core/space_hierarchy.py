"""Space hierarchies (C-S API "Spaces", ``GET /v1/rooms/{roomId}/hierarchy``, and S-S API
"Spaces", ``GET /v1/hierarchy/{roomId}``; space_hierarchy.yaml, v1.2, fields of v1.15). Pure:
which ``m.space.child`` events make a room a child, in which order, what a summary received from
another server may hold, and who may see a room known only from such a summary.

A child is an ``m.space.child`` state event whose ``via`` is a non-empty list of server names
(Spaces, "m.space.child relationship": without a valid ``via`` the room is not a child). The
children are ordered as "Ordering of children within a space" says: those with a valid
``order`` (printable ASCII, ``\\x20``-``\\x7E``, at most 50 characters) first, by that string;
then the others; ties broken by the event's ``origin_server_ts`` and then by room ID.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MAX_CHILDREN",
    "child_via",
    "is_suggested",
    "order_children",
    "remote_summary_visible",
    "sanitize_children_state",
    "sanitize_summary",
    "stripped_child",
    "valid_order",
]

#: The ``m.space.child`` events of one room looked at, at most (a hostile space may hold many).
MAX_CHILDREN = 500
#: The ``via`` servers of one child kept, at most.
MAX_VIA = 10
#: The longest server name, room ID or alias kept from another server's answer.
MAX_ID_LEN = 255
#: The longest name, topic, URL or other string kept from another server's answer.
MAX_TEXT_LEN = 4096
#: The rooms of an ``allowed_room_ids`` list kept from another server's answer, at most.
MAX_ALLOWED = 50

SPACE_CHILD = "m.space.child"


def valid_order(value: Any) -> str | None:
    """The ``order`` of an ``m.space.child`` content when valid, else None (an invalid order
    is treated as absent)."""
    if not isinstance(value, str) or not 0 < len(value) <= 50:
        return None
    if all(0x20 <= ord(ch) <= 0x7E for ch in value):
        return value
    return None


def child_via(content: Any) -> list[str]:
    """The servers of a child's ``via`` (empty: not a child). Entries that are not non-empty
    strings of a plausible length are dropped; at most :data:`MAX_VIA` are kept."""
    via = content.get("via") if isinstance(content, Mapping) else None
    if not isinstance(via, list):
        return []
    out: list[str] = []
    for server in via:
        if isinstance(server, str) and 0 < len(server) <= MAX_ID_LEN and server not in out:
            out.append(server)
            if len(out) == MAX_VIA:
                break
    return out


def is_suggested(content: Any) -> bool:
    return isinstance(content, Mapping) and content.get("suggested") is True


def _is_room_id(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("!") and 1 < len(value) <= MAX_ID_LEN


def _ts(event: Mapping[str, Any]) -> int:
    ts = event.get("origin_server_ts")
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else 0


def order_children(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The ``m.space.child`` events that make a child (a room ID as state key, a non-empty
    ``via``), in the spec's order."""
    children = [
        e
        for e in events
        if e.get("type") == SPACE_CHILD
        and _is_room_id(e.get("state_key"))
        and child_via(e.get("content"))
    ]

    def key(e: Mapping[str, Any]) -> tuple[int, str, int, str]:
        order = valid_order((e.get("content") or {}).get("order"))
        return (0 if order is not None else 1, order or "", _ts(e), e["state_key"])

    return sorted(children, key=key)


def stripped_child(event: Mapping[str, Any]) -> dict[str, Any]:
    """A child event as ``children_state`` shows it: stripped state with ``origin_server_ts``."""
    return {
        "type": SPACE_CHILD,
        "state_key": event["state_key"],
        "content": event.get("content") or {},
        "sender": event.get("sender", ""),
        "origin_server_ts": _ts(event),
    }


def sanitize_children_state(value: Any) -> list[dict[str, Any]]:
    """The ``children_state`` of another server's answer, kept to what makes a child: each
    entry rebuilt from its valid parts (``via``, a string ``order``, ``suggested``), the
    others dropped; ordered, at most :data:`MAX_CHILDREN`."""
    if not isinstance(value, list):
        return []
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    for e in value[: MAX_CHILDREN * 2]:
        if not isinstance(e, Mapping) or e.get("type") != SPACE_CHILD:
            continue
        room_id, content = e.get("state_key"), e.get("content")
        via = child_via(content)
        if not isinstance(room_id, str) or not _is_room_id(room_id) or not via or room_id in seen:
            continue
        assert isinstance(content, Mapping)  # child_via found a list in it
        seen.add(room_id)
        clean: dict[str, Any] = {"via": via}
        order = valid_order(content.get("order"))
        if order is not None:
            clean["order"] = order
        if content.get("suggested") is True:
            clean["suggested"] = True
        sender = e.get("sender")
        kept.append({
            "type": SPACE_CHILD, "state_key": room_id, "content": clean,
            "sender": sender if isinstance(sender, str) and len(sender) <= MAX_ID_LEN else "",
            "origin_server_ts": _ts(e),
        })  # fmt: skip
    return [dict(c) for c in order_children(kept)[:MAX_CHILDREN]]


_TEXT_FIELDS = {
    "name": MAX_TEXT_LEN, "topic": MAX_TEXT_LEN, "avatar_url": MAX_TEXT_LEN,
    "canonical_alias": MAX_ID_LEN, "join_rule": MAX_ID_LEN, "room_type": MAX_ID_LEN,
    "room_version": MAX_ID_LEN, "encryption": MAX_ID_LEN,
}  # fmt: skip


def sanitize_summary(value: Any, room_id: str | None = None) -> dict[str, Any] | None:
    """A room summary from another server's answer, kept to the fields of the spec's
    ``RoomSummary`` with the right types (``children_state`` through
    :func:`sanitize_children_state`); None when it is not one, or is not ``room_id``'s."""
    if not isinstance(value, Mapping):
        return None
    rid = value.get("room_id")
    if not _is_room_id(rid) or (room_id is not None and rid != room_id):
        return None
    members = value.get("num_joined_members")
    out: dict[str, Any] = {
        "room_id": rid,
        "num_joined_members": members
        if isinstance(members, int) and not isinstance(members, bool) and 0 <= members < 2**53
        else 0,
        "world_readable": value.get("world_readable") is True,
        "guest_can_join": value.get("guest_can_join") is True,
    }
    for name, limit in _TEXT_FIELDS.items():
        v = value.get(name)
        if isinstance(v, str) and len(v) <= limit:
            out[name] = v
    allowed = value.get("allowed_room_ids")
    if isinstance(allowed, list):
        ids = [r for r in allowed[:MAX_ALLOWED] if _is_room_id(r)]
        if ids:
            out["allowed_room_ids"] = ids
    out["children_state"] = sanitize_children_state(value.get("children_state"))
    return out


def remote_summary_visible(
    summary: Mapping[str, Any], *, membership: str | None, joined_to_an_allowed_room: bool
) -> bool:
    """Whether a user may see a room this server knows only from another server's summary:
    the same conditions as :func:`bastion.core.room_summary.summary_visible`, on the join rule
    and ``world_readable`` the summary states (the answering server is in the room and vouches
    for its rules; it revealed the room to this server already)."""
    if membership in ("join", "invite") or summary.get("world_readable") is True:
        return True
    rule = summary.get("join_rule")
    if rule in ("public", "knock", "knock_restricted"):
        return True
    return rule == "restricted" and joined_to_an_allowed_room
