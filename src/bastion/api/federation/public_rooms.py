"""S-S API "Published Room Directory" (public_rooms.yaml)."""

from __future__ import annotations

from bastion.api.http import Request, Router, error

V1 = "/_matrix/federation/v1"
MAX_LIMIT = 500


def register(router: Router, hs) -> None:
    queries = hs.federation_queries

    async def get_public_rooms(req: Request) -> dict:
        """GET /_matrix/federation/v1/publicRooms?limit=&since= — S-S API "Published Room
        Directory": this server's published rooms."""
        limit = req.query_int("limit", None, minimum=1, maximum=MAX_LIMIT)
        return queries.public_rooms(limit, req.query.get("since"), None)

    async def post_public_rooms(req: Request) -> dict:
        """POST /_matrix/federation/v1/publicRooms — with ``filter.generic_search_term``."""
        body = await req.json(allow_empty=True)
        limit = body.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise error("M_BAD_JSON", "'limit' must be an integer")
        if limit is not None:
            limit = max(1, min(limit, MAX_LIMIT))
        since = body.get("since")
        if since is not None and not isinstance(since, str):
            raise error("M_BAD_JSON", "'since' must be a string")
        flt = body.get("filter")
        flt = {} if flt is None else flt
        if not isinstance(flt, dict):
            raise error("M_BAD_JSON", "'filter' must be an object")
        term = flt.get("generic_search_term")
        if term is not None and not isinstance(term, str):
            raise error("M_BAD_JSON", "'generic_search_term' must be a string")
        return queries.public_rooms(limit, since, term)

    router.add("GET", f"{V1}/publicRooms", get_public_rooms, auth=True)
    router.add("POST", f"{V1}/publicRooms", post_public_rooms, auth=True)
