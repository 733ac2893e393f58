"""Client Config (C-S API "Client Config": account-data.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.client.filter import own_user
from bastion.api.http import Request, Router
from bastion.errors import not_found
from bastion.services.account_data import check_room_id

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    async def put_global(req: Request) -> dict:
        """PUT /_matrix/client/v3/user/{userId}/account_data/{type} — C-S API "Client Config"."""
        user_id = own_user(req)
        body = await req.json()
        await hs.account_data.put(user_id, "", req.params["type"], body)
        return {}

    async def get_global(req: Request) -> dict:
        """GET /_matrix/client/v3/user/{userId}/account_data/{type} — C-S API "Client Config"."""
        user_id = own_user(req)
        content = hs.account_data.get(user_id, "", req.params["type"])
        if content is None:
            raise not_found("no account data of this type")
        return content

    async def put_room(req: Request) -> dict:
        """PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type} — C-S API
        "Client Config"."""
        user_id = own_user(req)
        check_room_id(req.params["roomId"])
        body = await req.json()
        await hs.account_data.put(user_id, req.params["roomId"], req.params["type"], body)
        return {}

    async def get_room(req: Request) -> dict:
        """GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type} — C-S API
        "Client Config"."""
        user_id = own_user(req)
        check_room_id(req.params["roomId"])
        content = hs.account_data.get(user_id, req.params["roomId"], req.params["type"])
        if content is None:
            raise not_found("no account data of this type for this room")
        return content

    base = "/_matrix/client/v3/user/{userId}"
    router.add("PUT", base + "/account_data/{type}", put_global, allow_suspended=True)
    router.add("GET", base + "/account_data/{type}", get_global)
    router.add("PUT", base + "/rooms/{roomId}/account_data/{type}", put_room, allow_suspended=True)
    router.add("GET", base + "/rooms/{roomId}/account_data/{type}", get_room)
