"""History visibility (C-S API module "Room History Visibility", "Server behaviour").

Pure: the caller supplies the room state facts at the event; no storage here.
"""

from __future__ import annotations

VISIBILITIES = ("world_readable", "shared", "invited", "joined")


def normalise_visibility(value: object) -> str:
    """A ``history_visibility`` value; absent or not understood means ``shared``."""
    return value if isinstance(value, str) and value in VISIBILITIES else "shared"


def _allowed(visibility: str, membership: str | None, joined_later: bool) -> bool:
    if visibility == "world_readable":  # rule 1
        return True
    if membership == "join":  # rule 2
        return True
    if visibility == "shared" and joined_later:  # rule 3
        return True
    return visibility == "invited" and membership == "invite"  # rule 4; else rule 5: deny


def is_event_visible(
    visibilities: tuple[str, ...],
    memberships: tuple[str | None, ...],
    joined_later: bool,
) -> bool:
    """May a user see an event, given the ``history_visibility`` values and the user's
    memberships "at that event"?

    ``visibilities`` is the visibility before the event, plus the one after it for an
    ``m.room.history_visibility`` event; ``memberships`` is the user's membership before the
    event, plus the one after it for the user's own ``m.room.member`` event — the spec allows
    the event if any of these combinations would. ``joined_later``: the user joined the room at
    some point after the event was sent.
    """
    return any(
        _allowed(normalise_visibility(v), m, joined_later)
        for v in visibilities
        for m in memberships
    )
