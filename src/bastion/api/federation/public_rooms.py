"""S-S API "Published Room Directory" (public_rooms.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.errors import bad_json
from bastion.federation.queries import MAX_PUBLIC_ROOMS_LIMIT

if TYPE_CHECKING:
    from bastion.server import HomeServer

V1 = "/_matrix/federation/v1"


def register(router: Router, hs: HomeServer) -> None:
    fed = hs.require_federation()
    queries = fed.queries

    async def get_public_rooms(req: Request) -> dict:
        """GET /_matrix/federation/v1/publicRooms?limit=&since= — S-S API "Published Room
        Directory": this server's published rooms."""
        limit = req.query_int("limit", None, minimum=1, maximum=MAX_PUBLIC_ROOMS_LIMIT)
        return queries.public_rooms(limit, req.query.get("since"), None)

    async def post_public_rooms(req: Request) -> dict:
        """POST /_matrix/federation/v1/publicRooms — with ``filter.generic_search_term``."""
        body = await req.json(allow_empty=True)
        limit = body.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise bad_json("'limit' must be an integer")
        if limit is not None:
            limit = max(1, min(limit, MAX_PUBLIC_ROOMS_LIMIT))
        since = body.get("since")
        if since is not None and not isinstance(since, str):
            raise bad_json("'since' must be a string")
        flt = body.get("filter")
        flt = {} if flt is None else flt
        if not isinstance(flt, dict):
            raise bad_json("'filter' must be an object")
        term = flt.get("generic_search_term")
        if term is not None and not isinstance(term, str):
            raise bad_json("'generic_search_term' must be a string")
        return queries.public_rooms(limit, since, term)

    router.add("GET", f"{V1}/publicRooms", get_public_rooms, auth=True)
    router.add("POST", f"{V1}/publicRooms", post_public_rooms, auth=True)
