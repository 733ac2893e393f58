"""Room tags (C-S API "Room Tagging"): the rules for tag names, tag bodies and the ``m.tag``
content. Pure: the service reads and writes the ``m.tag`` room account data around these.

The ``m.tag`` content is ``{"tags": {name: {"order": number}}}``. "Room Tagging" → "Events":
``order`` is a number between 0 and 1; a tag's name MUST NOT exceed 255 bytes; the namespace
``m.*`` is reserved for the tags the spec defines (``m.favourite``, ``m.lowpriority``,
``m.server_notice``); ``u.*`` names are the user's own, and other names are kept as they are
("non-namespaced tags are supported for historical reasons").
"""

from __future__ import annotations

import math
from typing import Any

from bastion.errors import bad_json, forbidden, invalid_param, too_large

#: "Room Tagging": "The name of a tag MUST NOT exceed 255 bytes."
MAX_TAG_BYTES = 255
#: The most tags one room may carry for one user, so that a client cannot grow the row without
#: bound (the spec sets no limit; real clients use a handful).
MAX_TAGS_PER_ROOM = 200
#: The ``m.*`` tags a client may set ("Room Tagging" → "Events").
CLIENT_TAGS = frozenset({"m.favourite", "m.lowpriority"})
#: The ``m.*`` tag the server sets on server-notice rooms (C-S API "Server Notices"); a client
#: may remove it from its own view of the room but not put it on another room.
SERVER_TAGS = frozenset({"m.server_notice"})


def check_tag_name(tag: str) -> None:
    """A tag name a client may set: non-empty, at most 255 bytes of UTF-8, and in ``m.*`` only
    the client tags of the spec (400 ``M_INVALID_PARAM``; ``m.server_notice`` 403
    ``M_FORBIDDEN``)."""
    if not tag:
        raise invalid_param("the tag name must not be empty")
    if len(tag.encode("utf-8")) > MAX_TAG_BYTES:
        raise invalid_param(f"the tag name is longer than {MAX_TAG_BYTES} bytes")
    if tag in SERVER_TAGS:
        raise forbidden(f"{tag} is set by the server, not by clients")
    if tag.startswith("m.") and tag not in CLIENT_TAGS:
        raise invalid_param(
            f"{tag!r} is in the m.* namespace, which is reserved for the tags the specification"
            " defines (m.favourite, m.lowpriority); use u.* for your own tags"
        )


def tag_info(body: dict[str, Any]) -> dict[str, Any]:
    """The stored object of a tag from a ``PUT .../tags/{tag}`` body: ``order`` if given (a
    number in ``[0, 1]``: 400 otherwise). Other keys are not part of the spec's tag object and
    are not kept."""
    if "order" not in body:
        return {}
    order = body["order"]
    if type(order) not in (int, float):  # bool is not a number here
        raise bad_json("'order' must be a number")
    if not math.isfinite(order) or not 0 <= order <= 1:
        raise invalid_param("'order' must be a number between 0 and 1")
    return {"order": order}


def tags_of(content: Any) -> dict[str, dict[str, Any]]:
    """The tags of an ``m.tag`` content, as ``GET .../tags`` returns them: only entries whose
    value is an object (content written through the generic account-data endpoint may hold
    anything)."""
    tags = content.get("tags") if isinstance(content, dict) else None
    if not isinstance(tags, dict):
        return {}
    return {k: v for k, v in tags.items() if isinstance(v, dict)}


def with_tag(content: Any, tag: str, info: dict[str, Any]) -> dict[str, Any]:
    """``content`` (an ``m.tag`` content, or None) with ``tag`` set to ``info``. A new tag beyond
    :data:`MAX_TAGS_PER_ROOM` is refused (413 ``M_TOO_LARGE``)."""
    base = dict(content) if isinstance(content, dict) else {}
    tags = base.get("tags")
    tags = dict(tags) if isinstance(tags, dict) else {}
    if tag not in tags and len(tags) >= MAX_TAGS_PER_ROOM:
        raise too_large(f"a room can carry at most {MAX_TAGS_PER_ROOM} tags")
    tags[tag] = info
    base["tags"] = tags
    return base


def without_tag(content: Any, tag: str) -> dict[str, Any] | None:
    """``content`` without ``tag``, or None when it has no such tag (nothing to write)."""
    if not isinstance(content, dict):
        return None
    tags = content.get("tags")
    if not isinstance(tags, dict) or tag not in tags:
        return None
    rest = {k: v for k, v in tags.items() if k != tag}
    return {**content, "tags": rest}
