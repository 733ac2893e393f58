"""Presence (C-S API "Presence": presence.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.client.filter import own_user
from bastion.api.http import Request, Router
from bastion.core.identifiers import is_valid_user_id
from bastion.errors import bad_json, forbidden, invalid_param

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    async def put_status(req: Request) -> dict:
        """PUT /_matrix/client/v3/presence/{userId}/status — C-S API "Presence" (own user)."""
        user_id = own_user(req)
        body = await req.json()
        if "presence" not in body:
            raise bad_json("'presence' is required")
        await hs.presence.set_status(
            user_id, body["presence"], body.get("status_msg"),
            has_status_msg="status_msg" in body,
        )  # fmt: skip
        return {}

    async def get_status(req: Request) -> dict:
        """GET /_matrix/client/v3/presence/{userId}/status — C-S API "Presence": visible to the
        user and to users sharing a room with them (403 otherwise)."""
        user_id = req.params["userId"]
        if not is_valid_user_id(user_id, historical=True):
            raise invalid_param("not a valid user ID")
        if not hs.presence.can_see(req.requester.user_id, user_id):
            raise forbidden("you are not allowed to see this user's presence")
        return hs.presence.content(user_id)

    router.add("PUT", "/_matrix/client/v3/presence/{userId}/status", put_status)
    router.add("GET", "/_matrix/client/v3/presence/{userId}/status", get_status)
