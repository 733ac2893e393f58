"""Room upgrades, the pure decisions (C-S API "Room Upgrades", "Server behaviour"): which state
the replacement room gets, its power levels (with the upgrading user's level raised while the
state is copied, then restored, as Synapse does), and the restriction of the old room's power
levels ("setting ``events_default`` and ``invite`` to the greater of 50 and
``users_default + 1``")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bastion.core.power_levels import NAMED_LEVEL_DEFAULTS, parse_power_level
from bastion.core.room_versions import RoomVersion

#: The state the spec recommends transferring (server ACLs, encryption, name, avatar, topic,
#: guest access, history visibility, join rules; power levels are handled on their own).
TRANSFERRED_STATE = (
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
)

#: The tombstone's level in v12+ rooms this server creates (createRoom's default).
V12_TOMBSTONE_LEVEL = 150

_NAMED = ("users_default", "events_default", "state_default", "ban", "kick", "redact", "invite")


def _levels(value: object, rv: RoomVersion) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, int] = {}
    for k, v in value.items():
        level = parse_power_level(v, rv)
        if isinstance(k, str) and level is not None:
            out[k] = level
    return out


def normalise_power_levels(content: Mapping[str, Any], rv: RoomVersion) -> dict[str, Any]:
    """The power-levels content with every level a JSON integer (v1–v9 rooms allow stringy and
    floaty levels, v10+ only integers); unparseable levels are dropped, other keys kept."""
    out: dict[str, Any] = {k: v for k, v in content.items() if k not in (*_NAMED, "events", "users",
                                                                "notifications")}  # fmt: skip
    for name in _NAMED:
        if name in content:
            level = parse_power_level(content[name], rv)
            if level is not None:
                out[name] = level
    for key in ("events", "users", "notifications"):
        if key in content:
            out[key] = _levels(content[key], rv)
    return out


def level_of(pl: Mapping[str, Any], name: str) -> int:
    """A named level of normalised content, with its default."""
    v = pl.get(name)
    return v if type(v) is int else NAMED_LEVEL_DEFAULTS[name]


def replacement_power_levels(
    old_pl: Mapping[str, Any],
    upgrader: str,
    upgrader_level: int | float,
    new_rv: RoomVersion,
    creators: Iterable[str],
    state_types: Iterable[str],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The replacement room's power levels: ``(first, final)``. ``first`` is sent right after
    the create event; ``final`` (or None when ``first`` already is final) after the copied state.

    ``old_pl`` is normalised content. In a room version with privileged creators (v12) the
    creators (``creators``: the upgrader and the additional creators) may not be listed in
    ``users``: they are removed, and the tombstone's level is at least
    :data:`V12_TOMBSTONE_LEVEL`. Otherwise a creator of a v12 room (``upgrader_level`` infinite)
    keeps the highest level the content names (at least 100). When the upgrader's level in the
    new room is below what sending ``state_types``, bans and the power levels themselves
    needs, ``first`` raises it and ``final`` restores it."""
    final: dict[str, Any] = {**old_pl, "users": dict(old_pl.get("users") or {})}
    users: dict[str, int] = final["users"]
    if new_rv.privileged_creators:
        for c in creators:
            users.pop(c, None)
        # As createRoom sets for v12 rooms: a tombstone above every listed level, so that the
        # replacement room is upgraded again by its creators only.
        levels = dict(final.get("events") or {})
        levels["m.room.tombstone"] = max(levels.get("m.room.tombstone", 0), V12_TOMBSTONE_LEVEL)
        final["events"] = levels
        return final, None
    if upgrader_level == float("inf"):
        named = [level_of(final, n) for n in _NAMED]
        users[upgrader] = max(100, *named, *users.values(), *(final.get("events") or {}).values())
    events: Mapping[str, int] = final.get("events") or {}
    state_default = level_of(final, "state_default")
    needed = max(
        level_of(final, "ban"),
        level_of(final, "invite"),
        *(events.get(t, state_default) for t in (*state_types, "m.room.power_levels")),
    )
    current = users.get(upgrader, level_of(final, "users_default"))
    if current >= needed:
        return final, None
    first = {**final, "users": {**users, upgrader: needed}}
    return first, final


def restricted_power_levels(content: Mapping[str, Any], rv: RoomVersion) -> dict[str, Any] | None:
    """The old room's power levels after the upgrade: ``events_default`` and ``invite`` at
    least the greater of 50 and ``users_default + 1``; None when they already are."""
    users_default = NAMED_LEVEL_DEFAULTS["users_default"]
    if "users_default" in content:
        users_default = parse_power_level(content["users_default"], rv) or 0
    restricted = max(50, users_default + 1)
    out = dict(content)
    changed = False
    for name in ("events_default", "invite"):
        cur = parse_power_level(content[name], rv) if name in content else None
        if cur is None:
            cur = NAMED_LEVEL_DEFAULTS[name]
        if cur < restricted:
            out[name] = restricted
            changed = True
    return out if changed else None


def direct_with_replacement(content: object, old_room: str, new_room: str) -> dict[str, Any] | None:
    """``m.direct`` account data with ``new_room`` added after ``old_room`` in every user's
    list that holds the old room (the direct chat stays one after its upgrade); None when
    nothing changes (no such list, the new room already there, or malformed content)."""
    if not isinstance(content, Mapping):
        return None
    out = dict(content)
    changed = False
    for user, rooms in content.items():
        if isinstance(rooms, list) and old_room in rooms and new_room not in rooms:
            out[user] = [*rooms, new_room]
            changed = True
    return out if changed else None
