"""Filters (C-S API "Filtering"; ``definitions/sync_filter.yaml``, ``room_event_filter.yaml``,
``event_filter.yaml``; POST/GET ``/user/{userId}/filter``).

The pure part: :func:`parse_filter` validates a filter object and returns it *normalised* — every
field present, with its default — so callers never test for absence:

.. code-block:: python

    {
      "event_fields": None | [str],          # None: all fields
      "event_format": "client" | "federation",
      "presence": EventFilter,
      "account_data": EventFilter,
      "room": {
        "rooms": None | [room_id],           # None: every room
        "not_rooms": [room_id],
        "include_leave": bool,
        "ephemeral": RoomEventFilter,
        "state": RoomEventFilter,
        "timeline": RoomEventFilter,
        "account_data": RoomEventFilter,
      },
    }

    EventFilter = {"limit": None | int, "types": None | [str], "not_types": [str],
                   "senders": None | [user_id], "not_senders": [user_id]}
    RoomEventFilter = EventFilter + {"rooms": None | [room_id], "not_rooms": [room_id],
                   "contains_url": None | bool, "lazy_load_members": bool,
                   "include_redundant_members": bool, "unread_thread_notifications": bool}

``limit`` is ``None`` when the client gave none (the caller applies its own default); a given
limit must be an integer greater than 0 and is capped at :data:`MAX_LIMIT`.

The shell part is :class:`Filters` (``hs.filters``): stores uploaded filters and resolves the
``filter`` query parameter, which is either a filter ID or inline JSON (matrix-nio sends inline,
URL-encoded JSON; matrix-js-sdk uploads a filter and sends its ID).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.core.canonical_json import canonical_json, parse_json
from bastion.core.glob import star_match
from bastion.errors import MatrixError, bad_json, invalid_param, too_large

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: The largest ``limit`` honoured; larger values are capped (event_filter.yaml: "impose a maximum
#: value to avoid resource exhaustion").
MAX_LIMIT = 1000
#: At most this many entries in any list of a filter, and this many bytes of filter JSON.
MAX_LIST = 1000
MAX_FILTER_BYTES = 65536

_EVENT_FILTER_KEYS = ("limit", "types", "not_types", "senders", "not_senders")
_ROOM_EVENT_FILTER_KEYS = (
    "rooms",
    "not_rooms",
    "contains_url",
    "lazy_load_members",
    "include_redundant_members",
    "unread_thread_notifications",
)


def _field_message(field: str, what: str) -> str:
    return f"filter field {field!r} {what}"


def _str_list(value: Any, field: str, prefix: str | None = None) -> list[str]:
    if not isinstance(value, list):
        raise bad_json(_field_message(field, "must be an array of strings"))
    if len(value) > MAX_LIST:
        raise invalid_param(_field_message(field, f"has more than {MAX_LIST} entries"))
    for item in value:
        if not isinstance(item, str):
            raise bad_json(_field_message(field, "must be an array of strings"))
        if prefix is not None and not item.startswith(prefix):
            raise invalid_param(_field_message(field, f"entries must start with {prefix!r}"))
    return list(value)


def _opt_bool(obj: dict, key: str, path: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad_json(_field_message(f"{path}{key}", "must be a boolean"))
    return value


def _event_filter(obj: Any, path: str, room: bool) -> dict:
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise bad_json(_field_message(path.rstrip("."), "must be an object"))
    out: dict[str, Any] = {}
    limit = obj.get("limit")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise bad_json(_field_message(f"{path}limit", "must be an integer"))
        if limit < 1:
            raise invalid_param(_field_message(f"{path}limit", "must be greater than 0"))
        limit = min(limit, MAX_LIMIT)
    out["limit"] = limit
    types = obj.get("types")
    out["types"] = None if types is None else _str_list(types, f"{path}types")
    out["not_types"] = _str_list(obj.get("not_types") or [], f"{path}not_types")
    senders = obj.get("senders")
    out["senders"] = None if senders is None else _str_list(senders, f"{path}senders", "@")
    out["not_senders"] = _str_list(obj.get("not_senders") or [], f"{path}not_senders", "@")
    if room:
        rooms = obj.get("rooms")
        out["rooms"] = None if rooms is None else _str_list(rooms, f"{path}rooms", "!")
        out["not_rooms"] = _str_list(obj.get("not_rooms") or [], f"{path}not_rooms", "!")
        out["contains_url"] = _opt_bool(obj, "contains_url", path)
        for key in ("lazy_load_members", "include_redundant_members"):
            out[key] = bool(_opt_bool(obj, key, path))
        out["unread_thread_notifications"] = bool(
            _opt_bool(obj, "unread_thread_notifications", path)
        )
    return out


def parse_filter(obj: Any) -> dict:
    """Validate a filter object (``sync_filter.yaml``) and return it normalised.

    Raises ``M_BAD_JSON`` for a field of the wrong type and ``M_INVALID_PARAM`` for a value out
    of range; the message names the field. Unknown keys are ignored (the schema allows them).
    """
    if not isinstance(obj, dict):
        raise bad_json("a filter must be a JSON object")
    out: dict[str, Any] = {}
    fields = obj.get("event_fields")
    out["event_fields"] = None if fields is None else _str_list(fields, "event_fields")
    fmt = obj.get("event_format", "client")
    if fmt is None:
        fmt = "client"
    if not isinstance(fmt, str):
        raise bad_json(_field_message("event_format", "must be a string"))
    if fmt not in ("client", "federation"):
        raise invalid_param(_field_message("event_format", "must be 'client' or 'federation'"))
    out["event_format"] = fmt
    out["presence"] = _event_filter(obj.get("presence"), "presence.", room=False)
    out["account_data"] = _event_filter(obj.get("account_data"), "account_data.", room=False)
    room = obj.get("room")
    if room is None:
        room = {}
    if not isinstance(room, dict):
        raise bad_json(_field_message("room", "must be an object"))
    r: dict[str, Any] = {}
    rooms = room.get("rooms")
    r["rooms"] = None if rooms is None else _str_list(rooms, "room.rooms", "!")
    r["not_rooms"] = _str_list(room.get("not_rooms") or [], "room.not_rooms", "!")
    r["include_leave"] = bool(_opt_bool(room, "include_leave", "room."))
    for key in ("ephemeral", "state", "timeline", "account_data"):
        r[key] = _event_filter(room.get(key), f"room.{key}.", room=True)
    out["room"] = r
    return out


#: The normalised empty filter: everything allowed.
def default_filter() -> dict:
    return parse_filter({})


# -- matching -------------------------------------------------------------------------------


def matches_glob(value: str, pattern: str) -> bool:
    """``*`` matches any sequence of characters (event_filter.yaml ``types``/``not_types``);
    linear (:mod:`bastion.core.glob`: a filter is chosen by the client). Only ``*`` is a
    wildcard here."""
    if "*" not in pattern:
        return value == pattern
    return star_match(pattern, value)


def event_filter_allows(event_filter: dict, event: dict, room_id: str | None = None) -> bool:
    """Whether a normalised (Room)EventFilter lets ``event`` through.

    ``not_*`` lists win over the positive lists. A field the event lacks (ephemeral and
    account-data events have no ``sender``; global events have no room) is not filtered on.
    ``room_id`` overrides the event's own ``room_id`` (sync strips it from room events).
    """
    etype = event.get("type")
    if isinstance(etype, str):
        if any(matches_glob(etype, p) for p in event_filter.get("not_types") or ()):
            return False
        types = event_filter.get("types")
        if types is not None and not any(matches_glob(etype, p) for p in types):
            return False
    sender = event.get("sender")
    if isinstance(sender, str):
        if sender in (event_filter.get("not_senders") or ()):
            return False
        senders = event_filter.get("senders")
        if senders is not None and sender not in senders:
            return False
    rid = room_id if room_id is not None else event.get("room_id")
    if isinstance(rid, str) and not _room_ok(event_filter, rid):
        return False
    contains_url = event_filter.get("contains_url")
    if contains_url is not None:
        content = event.get("content")
        has_url = isinstance(content, dict) and isinstance(content.get("url"), str)
        if has_url != contains_url:
            return False
    return True


def event_filter_is_open(event_filter: dict) -> bool:
    """Whether a normalised (Room)EventFilter lets every event through (none of the lists or
    ``contains_url`` that :func:`event_filter_allows` tests), so callers may skip it."""
    return (
        not event_filter.get("not_types")
        and event_filter.get("types") is None
        and not event_filter.get("not_senders")
        and event_filter.get("senders") is None
        and not event_filter.get("not_rooms")
        and event_filter.get("rooms") is None
        and event_filter.get("contains_url") is None
    )


def _room_ok(f: dict, room_id: str) -> bool:
    if room_id in (f.get("not_rooms") or ()):
        return False
    rooms = f.get("rooms")
    return rooms is None or room_id in rooms


def room_allowed(filter_: dict, room_id: str) -> bool:
    """Whether the top-level room filter (``room.rooms`` / ``room.not_rooms``) allows a room.
    Takes the whole normalised filter."""
    return _room_ok(filter_.get("room") or {}, room_id)


def filter_events(event_filter: dict, events: list[dict], room_id: str | None = None) -> list:
    """The events ``event_filter`` allows, in order (``limit`` is left to the caller)."""
    return [e for e in events if event_filter_allows(event_filter, e, room_id)]


# -- event_fields (appendices "Dot-separated property paths") -------------------------------


def split_field_path(path: str) -> list[str]:
    """``content.m\\.relates_to`` → ``["content", "m.relates_to"]``; ``\\\\`` is a backslash,
    other escapes are literal."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(path):
        c = path[i]
        if c == "\\" and i + 1 < len(path) and path[i + 1] in ".\\":
            cur.append(path[i + 1])
            i += 2
            continue
        if c == ".":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def apply_event_fields(event: dict, fields: list[str] | None) -> dict:
    """Keep only the listed fields of an event (a filter's ``event_fields``); ``None`` keeps all.
    A path that does not exist is skipped."""
    if fields is None:
        return event
    out: dict = {}
    for path in fields:
        parts = split_field_path(path)
        src: Any = event
        for p in parts:
            if not isinstance(src, dict) or p not in src:
                break
            src = src[p]
        else:
            dst = out
            for p in parts[:-1]:
                nxt = dst.get(p)
                if not isinstance(nxt, dict):
                    nxt = dst[p] = {}
                dst = nxt
            dst[parts[-1]] = src
    return out


# -- the service ----------------------------------------------------------------------------


class Filters:
    """``hs.filters``: uploaded filters and resolution of the ``filter`` query parameter."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def create(self, user_id: str, body: dict) -> str:
        """Store a filter (validated first) and return its ID. Uploading the same filter again
        returns the same ID, so clients that upload at every start do not grow the table."""
        parse_filter(body)
        text = canonical_json(body)
        if len(text) > MAX_FILTER_BYTES:
            raise too_large(f"filter is larger than {MAX_FILTER_BYTES} bytes")
        return await self.hs.store.add_filter(user_id, text.decode("utf-8"))

    def get(self, user_id: str, filter_id: str) -> dict | None:
        """The filter as uploaded, or None."""
        text = self.hs.store.get_filter(user_id, filter_id)
        return None if text is None else parse_json(text)

    def resolve(self, requester, param: str | None) -> dict:
        """The normalised filter for a ``filter`` query parameter: absent → everything; text
        starting with ``{`` → inline JSON; anything else → the ID of one of the requester's
        filters (400 ``M_INVALID_PARAM`` if there is none)."""
        if param is None or param == "":
            return default_filter()
        if param.lstrip().startswith("{"):
            if len(param) > MAX_FILTER_BYTES:
                raise too_large("inline filter is too large")
            try:
                obj = parse_json(param)
            except MatrixError:
                raise invalid_param("filter is not valid JSON") from None
            return parse_filter(obj)
        user_id = requester.user_id if hasattr(requester, "user_id") else str(requester)
        obj = self.get(user_id, param)
        if obj is None:
            raise invalid_param(f"unknown filter ID {param!r}")
        return parse_filter(obj)
