"""S-S API "Querying for information" (query.yaml): profile and directory queries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router

if TYPE_CHECKING:
    from bastion.server import HomeServer

V1 = "/_matrix/federation/v1"


def register(router: Router, hs: HomeServer) -> None:
    fed = hs.require_federation()
    queries = fed.queries

    async def query_profile(req: Request) -> dict:
        """GET /_matrix/federation/v1/query/profile?user_id=&field= — S-S API "Querying for
        information": a local user's profile, or only ``field``; 404 ``M_NOT_FOUND`` for users
        of other servers, unknown users and unset fields."""
        return queries.profile_for_server(req.query.get("user_id"), req.query.get("field"))

    async def query_directory(req: Request) -> dict:
        """GET /_matrix/federation/v1/query/directory?room_alias= — S-S API "Querying for
        information": ``{room_id, servers}`` for a local alias; 404 ``M_NOT_FOUND`` otherwise."""
        return queries.directory_for_server(req.query.get("room_alias"))

    router.add("GET", f"{V1}/query/profile", query_profile, auth=True)
    router.add("GET", f"{V1}/query/directory", query_directory, auth=True)
