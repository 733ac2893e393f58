"""Typing notifications (C-S API "Typing Notifications": typing.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.client.filter import own_user
from bastion.api.http import Request, Router
from bastion.errors import bad_json, invalid_param
from bastion.services.ephemeral import DEFAULT_TYPING_TIMEOUT_MS, require_joined

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    async def put_typing(req: Request) -> dict:
        """PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId} — C-S API "Typing
        Notifications". Only for yourself, in a room you are joined to; ``timeout`` is capped.
        Rate limit ``typing`` (429 ``M_LIMIT_EXCEEDED``)."""
        user_id = own_user(req)
        room_id = req.params["roomId"]
        body = await req.json()
        typing = body.get("typing")
        if not isinstance(typing, bool):
            raise bad_json("'typing' is required and must be a boolean")
        timeout = body.get("timeout", DEFAULT_TYPING_TIMEOUT_MS)
        if typing and (isinstance(timeout, bool) or not isinstance(timeout, int)):
            raise bad_json("'timeout' must be an integer (milliseconds)")
        if typing and timeout < 0:
            raise invalid_param("'timeout' must not be negative")
        hs.guard.limits.require("typing", user=user_id, ip=req.raw.remote)
        require_joined(hs, room_id, user_id)
        hs.typing.set_typing(room_id, user_id, typing, timeout if typing else 0)
        return {}

    router.add("PUT", "/_matrix/client/v3/rooms/{roomId}/typing/{userId}", put_typing)
