"""Simplified Sliding Sync (MSC4186): the pure parts — checking a request body, the window of
a list over the sorted rooms, which state keys a ``required_state`` asks for, which rooms an
extension covers, and what a connection remembers having sent of each room.

Every value is hostile until checked: sizes are clamped, shapes are refused with
``M_INVALID_PARAM``/``M_BAD_JSON`` (never a 500).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bastion.errors import bad_json, invalid_param

_T = TypeVar("_T")

#: Longest accepted ``conn_id`` and list name.
MAX_NAME = 128
#: Lists per request, ranges per list, required_state entries, room subscriptions.
MAX_LISTS = 100
MAX_RANGES = 8
MAX_REQUIRED_STATE = 128
MAX_SUBSCRIPTIONS = 256
#: Largest ``timeline_limit`` honoured (larger ones are clamped).
MAX_TIMELINE_LIMIT = 100
#: Highest index a range may reach (larger ones are clamped).
MAX_RANGE_END = 10_000
#: Most to-device messages in one response (the ``to_device`` extension's ``limit`` is clamped
#: to it; MSC3885, and Synapse's cap).
MAX_TO_DEVICE_LIMIT = 100
#: ``lists``/``rooms`` value meaning every list / every room subscription (MSC3575 extensions).
ALL = "*"


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """What the client wants of a room: its timeline length and its state keys."""

    timeline_limit: int
    required_state: tuple[tuple[str, str], ...]

    def merged(self, other: RoomConfig) -> RoomConfig:
        """A room in several lists (or also subscribed): the larger timeline, all the state."""
        rs = self.required_state + tuple(
            k for k in other.required_state if k not in self.required_state
        )
        return RoomConfig(max(self.timeline_limit, other.timeline_limit), rs)


@dataclass(frozen=True, slots=True)
class ListFilters:
    is_dm: bool | None = None
    is_encrypted: bool | None = None
    is_invite: bool | None = None
    #: None: any; otherwise the allowed create-event ``type`` values (None = a plain room).
    room_types: frozenset[str | None] | None = None
    not_room_types: frozenset[str | None] = frozenset()
    #: None: any; otherwise rooms that are children (``m.space.child``) of one of these spaces.
    spaces: frozenset[str] | None = None
    #: None: any; otherwise rooms the user tagged with one of these (``m.tag``); ``not_tags``:
    #: never rooms tagged with one of those (it wins over ``tags``).
    tags: frozenset[str] | None = None
    not_tags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ListRequest:
    name: str
    ranges: tuple[tuple[int, int], ...]
    config: RoomConfig
    filters: ListFilters


@dataclass(frozen=True, slots=True)
class ExtensionScope:
    """Which rooms a room-scoped extension (``account_data``, ``receipts``, ``typing``) covers:
    the rooms in the windows of ``lists`` and the subscribed rooms named in ``rooms`` (``*``:
    all of them). Omitted, each is ``["*"]``; ``null`` or ``[]``, none (as Synapse)."""

    lists: frozenset[str] = frozenset({ALL})
    rooms: frozenset[str] = frozenset({ALL})


@dataclass(slots=True)
class Extensions:
    to_device: bool = False
    to_device_since: int | None = None
    to_device_limit: int = MAX_TO_DEVICE_LIMIT
    e2ee: bool = False
    account_data: bool = False
    receipts: bool = False
    typing: bool = False
    scopes: dict[str, ExtensionScope] = field(default_factory=dict)

    def scope(self, name: str) -> ExtensionScope:
        return self.scopes.get(name) or ExtensionScope()


@dataclass(slots=True)
class SlidingRequest:
    conn_id: str
    lists: list[ListRequest] = field(default_factory=list)
    subscriptions: dict[str, RoomConfig] = field(default_factory=dict)
    #: Subscriptions of the connection to drop (they are sticky: kept from ``pos`` to ``pos``).
    unsubscribe: set[str] = field(default_factory=set)
    extensions: Extensions = field(default_factory=Extensions)


def _int(value: object, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_json(f"{what} must be an integer")
    if value < 0:
        raise invalid_param(f"{what} must not be negative")
    return max(lo, min(value, hi))


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise bad_json(f"{what} must be a string of at most {MAX_NAME} characters")
    return value


def _obj(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_json(f"{what} must be an object")
    return value


def _room_config(obj: dict[str, Any], what: str) -> RoomConfig:
    tl = obj.get("timeline_limit", 0)
    limit = _int(tl if tl is not None else 0, f"{what}.timeline_limit", 0, MAX_TIMELINE_LIMIT)
    raw = obj.get("required_state", [])
    if raw is None:
        raw = []
    if not isinstance(raw, list) or len(raw) > MAX_REQUIRED_STATE:
        raise bad_json(f"{what}.required_state must be a list of at most {MAX_REQUIRED_STATE}")
    keys: list[tuple[str, str]] = []
    for pair in raw:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(p, str) and len(p) <= 255 for p in pair)
        ):
            raise bad_json(f"{what}.required_state entries must be [event type, state key]")
        key = (pair[0], pair[1])
        if key not in keys:
            keys.append(key)
    return RoomConfig(limit, tuple(keys))


def _opt_bool(obj: dict[str, Any], key: str) -> bool | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise bad_json(f"filters.{key} must be a boolean")
    return v


def _types(obj: dict[str, Any], key: str) -> frozenset[str | None] | None:
    v = obj.get(key)
    if v is None:
        return None
    if (
        not isinstance(v, list)
        or len(v) > 32
        or not all(t is None or (isinstance(t, str) and len(t) <= 255) for t in v)
    ):
        raise bad_json(f"filters.{key} must be a list of room types (or null)")
    return frozenset(v)


#: Most entries of a ``spaces``, ``tags`` or ``not_tags`` filter.
MAX_FILTER_STRINGS = 100


def _string_set(value: object, what: str, most: int) -> frozenset[str]:
    """A list of at most ``most`` strings (each at most 255 characters) as a set."""
    if (
        not isinstance(value, list)
        or len(value) > most
        or not all(isinstance(v, str) and len(v) <= 255 for v in value)
    ):
        raise bad_json(f"{what} must be a list of at most {most} strings")
    return frozenset(value)


def _strings(obj: dict[str, Any], key: str) -> frozenset[str] | None:
    v = obj.get(key)
    return None if v is None else _string_set(v, f"filters.{key}", MAX_FILTER_STRINGS)


def _filters(obj: dict[str, Any]) -> ListFilters:
    return ListFilters(
        is_dm=_opt_bool(obj, "is_dm"),
        is_encrypted=_opt_bool(obj, "is_encrypted"),
        # ``is_invite`` (the unstable endpoint, as Synapse and the SDKs) or the MSC's later name.
        is_invite=_opt_bool(obj, "is_invite")
        if obj.get("is_invite") is not None
        else _opt_bool(obj, "is_invited"),
        room_types=_types(obj, "room_types"),
        not_room_types=_types(obj, "not_room_types") or frozenset(),
        spaces=_strings(obj, "spaces"),
        tags=_strings(obj, "tags"),
        not_tags=_strings(obj, "not_tags") or frozenset(),
    )


def _ranges(value: object, what: str) -> tuple[tuple[int, int], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_RANGES:
        raise bad_json(f"{what}.ranges must be a list of at most {MAX_RANGES} ranges")
    out = []
    for r in value:
        if not isinstance(r, list) or len(r) != 2:
            raise bad_json(f"{what}.ranges entries must be [start, end]")
        a = _int(r[0], f"{what}.ranges", 0, MAX_RANGE_END)
        b = _int(r[1], f"{what}.ranges", 0, MAX_RANGE_END)
        if a > b:
            raise invalid_param(f"{what}.ranges: start is after end")
        out.append((a, b))
    return tuple(out)


def parse_request(body: dict[str, Any], is_room_id: Callable[[str], bool]) -> SlidingRequest:
    """The checked request body (``is_room_id``: whether a string is a valid room ID)."""
    conn_id = body.get("conn_id")
    req = SlidingRequest(conn_id=_name(conn_id, "conn_id") if conn_id is not None else "")
    lists = _obj(body.get("lists"), "lists")
    if len(lists) > MAX_LISTS:
        raise invalid_param(f"at most {MAX_LISTS} lists")
    for name, spec in lists.items():
        _name(name, "a list name")
        spec = _obj(spec, f"lists.{name}")
        req.lists.append(
            ListRequest(
                name=name,
                ranges=_ranges(spec.get("ranges"), f"lists.{name}"),
                config=_room_config(spec, f"lists.{name}"),
                filters=_filters(_obj(spec.get("filters"), f"lists.{name}.filters")),
            )
        )
    subs = _obj(body.get("room_subscriptions"), "room_subscriptions")
    if len(subs) > MAX_SUBSCRIPTIONS:
        raise invalid_param(f"at most {MAX_SUBSCRIPTIONS} room subscriptions")
    for room_id, spec in subs.items():
        if not is_room_id(room_id):
            raise invalid_param(f"{room_id[:MAX_NAME]!r} is not a room ID")
        req.subscriptions[room_id] = _room_config(
            _obj(spec, "room_subscriptions entry"), "room_subscriptions entry"
        )
    unsub = body.get("unsubscribe_rooms")
    if unsub is not None:
        if (
            not isinstance(unsub, list)
            or len(unsub) > MAX_SUBSCRIPTIONS
            or not all(isinstance(r, str) and len(r) <= 255 for r in unsub)
        ):
            raise bad_json(f"unsubscribe_rooms must be a list of at most {MAX_SUBSCRIPTIONS} IDs")
        req.unsubscribe = set(unsub)
    ext = _obj(body.get("extensions"), "extensions")
    out = req.extensions
    for key in ("to_device", "e2ee", "account_data", "receipts", "typing"):
        spec = _obj(ext.get(key), f"extensions.{key}")
        enabled = spec.get("enabled", False)
        if enabled is None:
            enabled = False
        if not isinstance(enabled, bool):
            raise bad_json(f"extensions.{key}.enabled must be a boolean")
        setattr(out, key, enabled)
        if key == "to_device" and enabled:
            if spec.get("since") is not None:
                since = spec["since"]
                if not isinstance(since, str) or not since.isdigit() or len(since) > 18:
                    raise invalid_param("extensions.to_device.since is not a token of this server")
                out.to_device_since = int(since)
            if spec.get("limit") is not None:
                out.to_device_limit = _int(
                    spec["limit"], "extensions.to_device.limit", 1, MAX_TO_DEVICE_LIMIT
                )
        if key in ("account_data", "receipts", "typing") and enabled:
            out.scopes[key] = ExtensionScope(
                lists=_scope_names(spec, "lists", f"extensions.{key}", MAX_LISTS),
                rooms=_scope_names(spec, "rooms", f"extensions.{key}", MAX_SUBSCRIPTIONS),
            )
    return req


def _scope_names(spec: dict[str, Any], key: str, what: str, most: int) -> frozenset[str]:
    if key not in spec:
        return frozenset({ALL})
    value = spec[key]
    if value is None:
        return frozenset()
    return _string_set(value, f"{what}.{key}", most)


def extension_rooms(
    scope: ExtensionScope, windows: dict[str, list[str]], subscribed: Iterable[str]
) -> set[str]:
    """The rooms an extension covers: those in the windows of the lists it names and the
    subscribed rooms it names (MSC3575's extension ``lists`` and ``rooms``)."""
    out: set[str] = set()
    for name, rooms in windows.items():
        if ALL in scope.lists or name in scope.lists:
            out.update(rooms)
    for room_id in subscribed:
        if ALL in scope.rooms or room_id in scope.rooms:
            out.add(room_id)
    return out


def sent_after(
    before: Mapping[str, _T | None], now_live: Iterable[str], missed: Iterable[str],
    since: _T | None, dropped: Iterable[str] = (),
) -> Mapping[str, _T | None]:  # fmt: skip
    """What a connection has sent of each room after a response (MSC4186 "Room results": a
    room is sent again only with what changed since it was last sent).

    A room maps to None when everything up to the response's position has been sent ("live"),
    or to the position up to which it was sent (updates after it are still owed); a room not
    in the map was never sent. ``now_live``: the rooms this response brought up to date;
    ``missed``: live rooms with updates this response did not carry (owed from ``since``, the
    position the request started from); ``dropped``: rooms forgotten. ``before`` itself is
    returned when nothing changes (positions share it)."""
    changes: dict[str, _T | None] = {}
    if since is not None:
        for room_id in missed:
            if room_id in before and before[room_id] is None:
                changes[room_id] = since
    for room_id in now_live:
        if room_id not in before or before[room_id] is not None:
            changes[room_id] = None
        else:
            changes.pop(room_id, None)
    gone = [r for r in dropped if r in before or r in changes]
    if not changes and not gone:
        return before
    out = dict(before)
    out.update(changes)
    for room_id in gone:
        out.pop(room_id, None)
    return out


def sticky_subscriptions(
    before: dict[str, RoomConfig], req: SlidingRequest
) -> dict[str, RoomConfig]:
    """The connection's room subscriptions after this request: those it had, less
    ``unsubscribe_rooms``, with the request's own (new or replaced); the oldest dropped past
    ``MAX_SUBSCRIPTIONS``."""
    out = {
        r: c for r, c in before.items() if r not in req.unsubscribe and r not in req.subscriptions
    }
    out.update(req.subscriptions)
    while len(out) > MAX_SUBSCRIPTIONS:
        del out[next(iter(out))]
    return out


def window(sorted_ids: list[str], ranges: tuple[tuple[int, int], ...]) -> list[str]:
    """The rooms a list's ranges cover (inclusive ranges over the sorted rooms; MSC4186)."""
    picked: dict[str, None] = {}
    for a, b in ranges:
        for room_id in sorted_ids[a : b + 1]:
            picked[room_id] = None
    return list(picked)


def wanted_state(
    required: tuple[tuple[str, str], ...],
    keys: Iterable[tuple[str, str]],
    user_id: str,
    lazy_members: set[str],
) -> set[tuple[str, str]]:
    """The state keys of ``keys`` that ``required_state`` asks for: ``*`` as a type or a state
    key matches any; ``$ME`` is the user; ``$LAZY`` (members) the timeline's senders."""
    out: set[tuple[str, str]] = set()
    if not required:
        return out
    exact: set[tuple[str, str]] = set()
    any_key: set[str] = set()
    all_types: set[str] = set()  # ["*", state_key]
    everything = False
    for etype, skey in required:
        if skey == "$ME":
            skey = user_id
        if etype == "*" and skey == "*":
            everything = True
        elif etype == "*":
            all_types.add(skey)
        elif skey == "*":
            any_key.add(etype)
        elif etype == "m.room.member" and skey == "$LAZY":
            exact.update(("m.room.member", u) for u in lazy_members)
        else:
            exact.add((etype, skey))
    for k in keys:
        if everything or k in exact or k[0] in any_key or k[1] in all_types:
            out.add(k)
    return out
