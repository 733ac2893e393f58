"""Power levels (C-S API ``m.room.power_levels``; S-S API "Definitions"; room versions'
"v1-stringy-power-levels" and "v1-floaty-power-levels" fragments; v12 "room creators").

Pure helpers used by the auth rules and by state resolution. Every function takes the *content*
of the ``m.room.power_levels`` event (or ``None`` when the room has none) and the
:class:`~bastion.core.room_versions.RoomVersion`, so callers that already hold them pay for no
look-ups; :func:`get_user_power_level` is the state-map entry point.

Defaults (``m.room.power_levels`` schema, S-S API "Invite Level, Kick Level, Ban Level, Redact
Level"): ``users_default`` 0, ``events_default`` 0, ``state_default`` 50, ``ban``/``kick``/
``redact`` 50, ``invite`` 0, ``notifications.room`` 50. With no power-levels event at all the room
creator has 100 in v1–v11 and every other user 0. In v12 the room creators (the create event's
``sender`` plus ``content.additional_creators``) have an infinitely high level, represented here as
``float('inf')`` (:data:`CREATOR_POWER_LEVEL`), which compares greater than any ``int``.

Value formats: from v10 on a level is a JSON integer and nothing else. In v1–v9 a level may also be
a string holding a base-10 integer ("v1-stringy-power-levels": optional surrounding whitespace,
one optional sign, any leading zeroes), and in v1–v5, whose events need not be canonical JSON, a
float, truncated towards zero ("v1-floaty-power-levels"; non-finite values are invalid). Booleans
are never levels. A stored value that does not parse is treated as absent (its default applies);
the auth rules reject new power-levels events carrying such values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from bastion.core.json_types import JsonMapping, StateKey
from bastion.core.room_versions import RoomVersion, get_room_version
from bastion.core.state_keys import CREATE_KEY, POWER_LEVELS_KEY

#: The power level of a v12 room creator: higher than any integer level.
CREATOR_POWER_LEVEL: float = float("inf")

#: The spec's default for each named level (absent from the content or no PL event at all).
NAMED_LEVEL_DEFAULTS: dict[str, int] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
}

#: Default notification levels (``notifications.room`` defaults to 50; others have no default).
NOTIFICATION_DEFAULTS: dict[str, int] = {"room": 50}

# "v1-stringy-power-levels": whitespace, one optional sign, ASCII digits (leading zeroes allowed).
_STRINGY_INT = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+[ \t\n\r\f\v]*")


def parse_power_level(value: Any, rv: RoomVersion) -> int | None:
    """The integer a power-level value denotes in room version ``rv``, or ``None`` if invalid.

    v10+ ("enforce_int_power_levels"): only a JSON integer. v1–v9: also a stringy integer
    ("v1-stringy-power-levels"); v1–v5 also a finite float, truncated ("v1-floaty-power-levels").
    """
    if type(value) is int:
        return value
    if rv.enforce_int_power_levels:
        return None
    if type(value) is str:
        if _STRINGY_INT.fullmatch(value):
            return int(value.strip(" \t\n\r\f\v"))
        return None
    if type(value) is float and not rv.strict_canonical_json:
        if math.isfinite(value):
            return math.trunc(value)
        return None
    return None


def room_creators(create: Mapping[str, Any] | None, rv: RoomVersion) -> frozenset[str]:
    """The room's creators: v12 "room creators" are the create event's ``sender`` plus its
    ``content.additional_creators``; v11 the ``sender``; v1–v10 ``content.creator``."""
    if not isinstance(create, Mapping):
        return frozenset()
    content = create.get("content")
    if not isinstance(content, Mapping):
        content = {}
    if rv.privileged_creators:
        out = set()
        sender = create.get("sender")
        if isinstance(sender, str):
            out.add(sender)
        extra = content.get("additional_creators")
        if isinstance(extra, list):
            out.update(u for u in extra if isinstance(u, str))
        return frozenset(out)
    creator = create.get("sender") if rv.implicit_room_creator else content.get("creator")
    return frozenset((creator,)) if isinstance(creator, str) else frozenset()


def user_power_level(
    user_id: str,
    create: Mapping[str, Any] | None,
    pl_content: Mapping[str, Any] | None,
    rv: RoomVersion,
) -> int | float:
    """A user's power level given the create event and the power-levels content (``None`` if
    the room has no ``m.room.power_levels`` event). See the module docstring for the defaults."""
    if rv.privileged_creators and user_id in room_creators(create, rv):
        return CREATOR_POWER_LEVEL
    if pl_content is None:
        if not rv.privileged_creators and user_id in room_creators(create, rv):
            return 100
        return 0
    users = pl_content.get("users")
    if isinstance(users, Mapping) and user_id in users:
        level = parse_power_level(users[user_id], rv)
        if level is not None:
            return level
    return named_level(pl_content, "users_default", rv)


def named_level(pl_content: Mapping[str, Any] | None, name: str, rv: RoomVersion) -> int:
    """One of ``users_default``, ``events_default``, ``state_default``, ``ban``, ``kick``,
    ``redact``, ``invite``, with its default when absent (or unparseable)."""
    default = NAMED_LEVEL_DEFAULTS[name]
    if pl_content is None or name not in pl_content:
        return default
    level = parse_power_level(pl_content[name], rv)
    return default if level is None else level


def required_power_level(
    event_type: str, is_state: bool, pl_content: Mapping[str, Any] | None, rv: RoomVersion
) -> int:
    """The S-S API "Required Power Level" of an event type: ``events[type]`` if given, else
    ``state_default`` for state events and ``events_default`` for the others."""
    if pl_content is not None:
        events = pl_content.get("events")
        if isinstance(events, Mapping) and event_type in events:
            level = parse_power_level(events[event_type], rv)
            if level is not None:
                return level
    return named_level(pl_content, "state_default" if is_state else "events_default", rv)


def notification_level(
    pl_content: Mapping[str, Any] | None, key: str, rv: RoomVersion
) -> int | None:
    """The level needed to trigger notification ``key`` (``room`` defaults to 50), or ``None``
    when neither the content nor the spec gives one."""
    if pl_content is not None:
        notifications = pl_content.get("notifications")
        if isinstance(notifications, Mapping) and key in notifications:
            level = parse_power_level(notifications[key], rv)
            if level is not None:
                return level
    return NOTIFICATION_DEFAULTS.get(key)


def _content_of(event: Any) -> Mapping[str, Any] | None:
    if not isinstance(event, Mapping):
        return None
    content = event.get("content")
    return content if isinstance(content, Mapping) else {}


def get_user_power_level(
    user_id: str, state: Mapping[StateKey, JsonMapping], room_version: str
) -> int | float:
    """``user_id``'s power level in the room whose state is ``state``.

    ``state`` maps ``(type, state_key)`` to event dicts; only ``m.room.create`` and
    ``m.room.power_levels`` are consulted. Returns an ``int``, or :data:`CREATOR_POWER_LEVEL`
    (``float('inf')``) for a v12 room creator.
    """
    rv = get_room_version(room_version)
    return user_power_level(
        user_id, state.get(CREATE_KEY), _content_of(state.get(POWER_LEVELS_KEY)), rv
    )


__all__ = [
    "CREATOR_POWER_LEVEL",
    "NAMED_LEVEL_DEFAULTS",
    "get_user_power_level",
    "named_level",
    "notification_level",
    "parse_power_level",
    "required_power_level",
    "room_creators",
    "user_power_level",
]
