"""Room Tagging (C-S API "Room Tagging": tags.yaml).

The tags are the user's ``m.tag`` room account data (services/tags.py). Access follows the
account-data endpoints ("Client Config"): only for oneself (403 ``M_FORBIDDEN``), and the room
ID must be a valid room ID (400 ``M_INVALID_PARAM``); as there, the user need not be in the room
(tags are private to the user and name nothing of the room's content).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.api.client.filter import own_user
from bastion.api.http import Request, Router
from bastion.core.canonical_json import parse_json
from bastion.errors import bad_json, not_json
from bastion.services.account_data import check_room_id

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: The largest ``PUT .../tags/{tag}`` body accepted; the spec's tag object is ``{"order": n}``.
MAX_TAG_BODY = 4096


async def tag_body(req: Request) -> dict[str, Any]:
    """The body of ``PUT .../tags/{tag}`` as a JSON object. Parsed without the canonical-JSON
    number check of :meth:`Request.json`: ``order`` is a fraction ("a number between 0 and 1")."""
    data = await req.body_bytes(MAX_TAG_BODY)
    if not data.strip():
        raise not_json("request body is empty; a JSON object is required")
    value = parse_json(data, strict=False)
    if not isinstance(value, dict):
        raise bad_json("request body must be a JSON object")
    return value


def register(router: Router, hs: HomeServer) -> None:
    async def get_tags(req: Request) -> dict:
        """GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags — C-S API "Room Tagging"
        → "Client Behaviour" (getRoomTags)."""
        user_id = own_user(req)
        room_id = req.params["roomId"]
        check_room_id(room_id)
        return {"tags": hs.tags.get(user_id, room_id)}

    async def put_tag(req: Request) -> dict:
        """PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag} — C-S API "Room
        Tagging" → "Client Behaviour" (setRoomTag)."""
        user_id = own_user(req)
        room_id = req.params["roomId"]
        check_room_id(room_id)
        body = await tag_body(req)
        await hs.tags.put(user_id, room_id, req.params["tag"], body)
        return {}

    async def delete_tag(req: Request) -> dict:
        """DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag} — C-S API "Room
        Tagging" → "Client Behaviour" (deleteRoomTag)."""
        user_id = own_user(req)
        room_id = req.params["roomId"]
        check_room_id(room_id)
        await hs.tags.delete(user_id, room_id, req.params["tag"])
        return {}

    base = "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags"
    # Tags are private account data, which a suspended account may still write (as the
    # account-data endpoints allow; C-S API "Account suspension").
    router.add("GET", base, get_tags)
    router.add("PUT", base + "/{tag}", put_tag, allow_suspended=True)
    router.add("DELETE", base + "/{tag}", delete_tag, allow_suspended=True)
