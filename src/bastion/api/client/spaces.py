"""C-S API "Spaces" (space_hierarchy.yaml, v1.2; the summary fields of v1.15)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.federation.space_hierarchy import query_flag
from bastion.api.http import Request, Router
from bastion.errors import invalid_param
from bastion.services.space_hierarchy import (
    DEFAULT_LIMIT,
    DEFAULT_MAX_DEPTH,
    MAX_LIMIT,
    MAX_MAX_DEPTH,
)

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: The longest pagination token accepted (the ones handed out are 24 characters).
MAX_TOKEN_LEN = 100


def register(router: Router, hs: HomeServer) -> None:
    hierarchy = hs.space_hierarchy

    async def get_hierarchy(req: Request) -> dict:
        """GET /_matrix/client/v1/rooms/{roomId}/hierarchy?suggested_only=&limit=&max_depth=
        &from= — C-S API "Spaces": a page of the depth-first walk of the space's
        ``m.space.child`` events, each room the user may see with its summary and
        ``children_state``; rooms on other servers asked of their ``via`` servers over
        federation (services/space_hierarchy.py). ``limit`` must be positive and is clamped to
        100 (default 50); ``max_depth`` must not be negative and is clamped to 50 (default 10);
        a ``from`` given with another ``suggested_only`` or ``max_depth`` is 400
        ``M_INVALID_PARAM``; a space the user may not see is 403 ``M_FORBIDDEN``."""
        limit = req.query_int("limit", DEFAULT_LIMIT)
        if limit < 1:
            raise invalid_param("'limit' must be a positive integer")
        max_depth = req.query_int("max_depth", DEFAULT_MAX_DEPTH)
        if max_depth < 0:
            raise invalid_param("'max_depth' must not be negative")
        token = req.query.get("from")
        if token is not None and not 0 < len(token) <= MAX_TOKEN_LEN:
            raise invalid_param("unknown pagination token")
        return await hierarchy.client_page(
            req.requester.user_id, req.params["roomId"],
            suggested_only=query_flag(req, "suggested_only"),
            max_depth=min(max_depth, MAX_MAX_DEPTH), limit=min(limit, MAX_LIMIT),
            from_token=token,
        )  # fmt: skip

    router.add("GET", "/_matrix/client/v1/rooms/{roomId}/hierarchy", get_hierarchy)
