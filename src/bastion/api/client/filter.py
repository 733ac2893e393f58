"""Filters (C-S API "Filtering": POST /user/{userId}/filter, GET /user/{userId}/filter/{filterId})."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.errors import forbidden, not_found

if TYPE_CHECKING:
    from bastion.server import HomeServer


def own_user(req: Request) -> str:
    """The path's ``userId``, which must be the requester (403 ``M_FORBIDDEN`` otherwise)."""
    user_id = req.params["userId"]
    if user_id != req.requester.user_id:
        raise forbidden("you can only access your own data")
    return user_id


def register(router: Router, hs: HomeServer) -> None:
    async def post_filter(req: Request) -> dict:
        """POST /_matrix/client/v3/user/{userId}/filter — C-S API "Filtering" (filter.yaml)."""
        user_id = own_user(req)
        body = await req.json()
        return {"filter_id": await hs.filters.create(user_id, body)}

    async def get_filter(req: Request) -> dict:
        """GET /_matrix/client/v3/user/{userId}/filter/{filterId} — C-S API "Filtering"."""
        user_id = own_user(req)
        obj = hs.filters.get(user_id, req.params["filterId"])
        if obj is None:
            raise not_found("no such filter")
        return obj

    # A suspended account still syncs (C-S API "Account suspension"); clients upload their sync
    # filter first.
    router.add("POST", "/_matrix/client/v3/user/{userId}/filter", post_filter, allow_suspended=True)
    router.add("GET", "/_matrix/client/v3/user/{userId}/filter/{filterId}", get_filter)
