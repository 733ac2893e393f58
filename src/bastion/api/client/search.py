"""Server-side search (C-S API "Server Side Search": search.yaml, ``POST /search``), spec
v1.19. The handler checks the request's shape and clamps its numbers; which rooms and events
a user searches is decided in :mod:`bastion.services.search`, the matching in
:mod:`bastion.core.search`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.api.http import Request, Router
from bastion.core.search import (
    DEFAULT_CONTEXT,
    DEFAULT_LIMIT,
    KEYS,
    MAX_CONTEXT,
    MAX_LIMIT,
    MAX_SEARCH_TERM,
    parse_cursor,
)
from bastion.errors import bad_json, invalid_param
from bastion.services.filtering import parse_filter
from bastion.services.search import RoomEventsCriteria

if TYPE_CHECKING:
    from bastion.server import HomeServer


def _obj(value: Any, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_json(f"'{name}' must be an object")
    return value


def _int(obj: dict, key: str, default: int, maximum: int, name: str) -> int:
    value = obj.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_json(f"'{name}.{key}' must be an integer")
    return max(0, min(value, maximum))


def criteria(body: dict) -> RoomEventsCriteria | None:
    """The validated ``search_categories.room_events`` of a request body (None when the
    request asks for no room events)."""
    categories = body.get("search_categories")
    if not isinstance(categories, dict):
        raise bad_json("'search_categories' must be an object")
    if categories.get("room_events") is None:
        return None
    re_ = _obj(categories["room_events"], "room_events")
    term = re_.get("search_term")
    if not isinstance(term, str):
        raise bad_json("'room_events.search_term' must be a string")
    if len(term) > MAX_SEARCH_TERM:
        raise invalid_param(f"'search_term' is longer than {MAX_SEARCH_TERM} characters")
    keys = re_.get("keys", list(KEYS))
    if keys is None:
        keys = list(KEYS)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise bad_json("'room_events.keys' must be an array of strings")
    unknown = [k for k in keys if k not in KEYS]
    if unknown:
        raise invalid_param(f"'keys' may only name {', '.join(KEYS)}")
    raw_filter = _obj(re_.get("filter"), "room_events.filter")
    event_filter = parse_filter({"room": {"timeline": raw_filter}})["room"]["timeline"]
    limit = event_filter.get("limit")
    limit = DEFAULT_LIMIT if limit is None else max(1, min(limit, MAX_LIMIT))
    order = re_.get("order_by", "rank")
    if order is None:
        order = "rank"
    if order not in ("rank", "recent"):
        raise invalid_param("'order_by' must be 'rank' or 'recent'")
    context = None
    if re_.get("event_context") is not None:
        ec = _obj(re_["event_context"], "event_context")
        profile = ec.get("include_profile", False)
        if not isinstance(profile, bool):
            raise bad_json("'event_context.include_profile' must be a boolean")
        context = (
            _int(ec, "before_limit", DEFAULT_CONTEXT, MAX_CONTEXT, "event_context"),
            _int(ec, "after_limit", DEFAULT_CONTEXT, MAX_CONTEXT, "event_context"),
            profile,
        )
    include_state = re_.get("include_state", False)
    if not isinstance(include_state, bool):
        raise bad_json("'include_state' must be a boolean")
    group_by: list[str] = []
    groupings = _obj(re_.get("groupings"), "groupings")
    groups = groupings.get("group_by") or []
    if not isinstance(groups, list) or len(groups) > 2:
        raise bad_json("'groupings.group_by' must be an array of at most two groups")
    for g in groups:
        key = g.get("key") if isinstance(g, dict) else None
        if key not in ("room_id", "sender"):
            raise invalid_param("a group's 'key' must be 'room_id' or 'sender'")
        if key not in group_by:
            group_by.append(key)
    return RoomEventsCriteria(
        term=term, keys=tuple(dict.fromkeys(keys)), event_filter=event_filter, order=order,
        limit=limit, context=context, include_state=include_state, group_by=tuple(group_by),
    )  # fmt: skip


def register(router: Router, hs: HomeServer) -> None:
    search = hs.search

    async def search_handler(req: Request) -> dict:
        """POST /_matrix/client/v3/search — C-S API "Server Side Search". Body:
        ``search_categories.room_events`` with ``search_term`` (required, at most 1000
        characters), ``keys`` (``content.body``, ``content.name``, ``content.topic``; default
        all), ``filter`` (a RoomEventFilter; its ``limit``, default 10, clamped to 1..50),
        ``order_by`` (``rank``, the default, or ``recent``), ``event_context``
        (``before_limit``/``after_limit``, default 5, clamped to 0..20; ``include_profile``),
        ``include_state``, ``groupings.group_by`` (``room_id``, ``sender``). Query:
        ``next_batch`` from an earlier response (400 ``M_INVALID_PARAM`` when it is not one,
        or was given for the other ``order_by``)."""
        body = await req.json()
        c = criteria(body)
        token = req.query.get("next_batch")
        cursor = None
        if token is not None:
            cursor = parse_cursor(token)
            if cursor is None or (c is not None and cursor.order != c.order):
                raise invalid_param("invalid 'next_batch' token")
        out: dict = {}
        if c is not None:
            out["room_events"] = await search.room_events(req.requester, c, cursor)
        return {"search_categories": out}

    router.add("POST", "/_matrix/client/v3/search", search_handler)
