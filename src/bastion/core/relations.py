"""Event relationships (C-S API "Relationships", "Threading", "Event annotations and
reactions"): which relation an event carries, and the bounds of the relations API.

An event relates to another through ``content["m.relates_to"]`` with a string ``rel_type``
and a string ``event_id`` (the parent). Only such events are indexed: a relation without
either (a plain ``m.in_reply_to`` reply, for instance) is no relation the API lists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

#: How deep ``recurse=true`` follows relations of relations (C-S API "GET
#: /_matrix/client/v1/rooms/{roomId}/relations/{eventId}": the depth is the server's choice).
MAX_RECURSION_DEPTH = 3

#: Page sizes of /relations and /threads: the default and the ceiling a request is clamped to.
DEFAULT_LIMIT = 50
MAX_LIMIT = 100

#: The longest parent ID, relation type or annotation key indexed (the event itself is at
#: most 64 KiB; these bound the index rows).
MAX_FIELD = 1024

THREAD = "m.thread"
ANNOTATION = "m.annotation"

#: The thread ID of the main timeline in receipts and notification counts (C-S API "Receipts",
#: "Threaded read receipts").
MAIN_TIMELINE = "main"
#: Relations followed at most to find the thread an event is in (C-S API "Push Notifications",
#: "Marking notifications as read": "a maximum of 3 hops").
THREAD_HOPS = 3


class Relation(NamedTuple):
    parent_id: str
    rel_type: str
    key: str | None  #: the annotation key of an ``m.annotation``, else None


def relation_of(event: dict[str, Any]) -> Relation | None:
    """The relation ``event`` carries (C-S API "Relationships": ``m.relates_to`` with a
    string ``rel_type`` and ``event_id``), or None."""
    content = event.get("content")
    if type(content) is not dict:
        return None
    rel = content.get("m.relates_to")
    if type(rel) is not dict:
        return None
    parent, rel_type = rel.get("event_id"), rel.get("rel_type")
    if type(parent) is not str or type(rel_type) is not str:
        return None
    if not parent or not rel_type or len(parent) > MAX_FIELD or len(rel_type) > MAX_FIELD:
        return None
    key = rel.get("key") if rel_type == ANNOTATION else None
    if type(key) is not str or len(key) > MAX_FIELD:
        key = None
    return Relation(parent, rel_type, key)


def parse_recurse(value: str | None) -> bool | None:
    """The ``recurse`` query parameter (a boolean: ``true`` or ``false``); None when it is
    neither."""
    if value is None:
        return False
    return {"true": True, "false": False}.get(value)


def is_valid_replacement(original: dict[str, Any], replacement: dict[str, Any]) -> bool:
    """Whether ``replacement`` (an ``m.replace`` child of ``original``) may replace it (C-S
    API "Event replacements", "Validity of replacement events": same sender and type, no
    state key on either, the original no replacement itself, ``m.new_content`` present unless
    the replacement is encrypted)."""
    if replacement.get("sender") != original.get("sender"):
        return False
    if replacement.get("type") != original.get("type"):
        return False
    if "state_key" in original or "state_key" in replacement:
        return False
    rel = relation_of(original)
    if rel is not None and rel.rel_type == "m.replace":
        return False
    if replacement.get("type") == "m.room.encrypted":
        return True
    content = replacement.get("content")
    return type(content) is dict and type(content.get("m.new_content")) is dict


def latest_replacement(original: dict[str, Any], candidates: list[dict[str, Any]]) -> int | None:
    """The index in ``candidates`` of the replacement to bundle: the valid one with the
    greatest ``origin_server_ts``, ties broken by the greatest event ID (C-S API "Event
    replacements", "Server behaviour"); None when none is valid. Each candidate is a PDU with
    its ``event_id``."""
    best: int | None = None
    best_key: tuple[int, str] = (0, "")
    for i, ev in enumerate(candidates):
        if not is_valid_replacement(original, ev):
            continue
        ts = ev.get("origin_server_ts")
        key = (ts if type(ts) is int else 0, str(ev.get("event_id", "")))
        if best is None or key > best_key:
            best, best_key = i, key
    return best


def may_start_thread_from(parent: dict[str, Any] | None) -> bool:
    """Whether an ``m.thread`` relation may target ``parent`` (C-S API "Threading",
    "Validation of m.thread relationships": not an event that itself carries a relation).
    An unknown parent (None) is not refused here: the event may be one this server has not
    received yet."""
    return parent is None or relation_of(parent) is None


def thread_path(
    event_id: str, rel: Relation | None, parent_relation: Callable[[str], Relation | None]
) -> tuple[str | None, list[str]]:
    """The thread an event is in, and the events on the way to it (C-S API "Receipts",
    "Threaded read receipts"; "Push Notifications", "Marking notifications as read"): an event
    is in a thread when it has an ``m.thread`` relation, or when, following its other relations
    (at most :data:`THREAD_HOPS` in all), an event it relates to has one. ``rel`` is the event's
    relation; ``parent_relation`` gives the relation of an event it reaches (None: none, or
    unknown). Returns the thread root (None: the main timeline, where thread roots and the
    events relating to them by other relations are) and the IDs of the event and of those it
    reached by other relations, the event first."""
    path = [event_id]
    for hop in range(THREAD_HOPS):
        if rel is None:
            break
        if rel.rel_type == THREAD:
            return rel.parent_id, path
        if rel.parent_id in path:  # a loop
            break
        path.append(rel.parent_id)
        if hop + 1 < THREAD_HOPS:
            rel = parent_relation(rel.parent_id)
    return None, path
