"""S-S API "Spaces" (space_hierarchy.yaml, v1.2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.errors import invalid_param

if TYPE_CHECKING:
    from bastion.server import HomeServer


def query_flag(req: Request, key: str) -> bool:
    """A boolean query parameter: ``true`` or ``false`` (absent: false); 400 otherwise."""
    value = req.query.get(key)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise invalid_param(f"query parameter {key!r} must be 'true' or 'false'")


def register(router: Router, hs: HomeServer) -> None:
    fed = hs.require_federation()
    hierarchy = hs.space_hierarchy

    async def get_hierarchy(req: Request) -> dict:
        """GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only= — S-S API "Spaces":
        the space room and the children this server is in, as the asking server may see them
        (services/space_hierarchy.py); the room's server ACL is checked first (403), each
        child's decides whether it is listed as inaccessible. Not paginated."""
        origin = req.requester
        room_id = req.params["roomId"]
        suggested_only = query_flag(req, "suggested_only")
        fed.acl.require_room(room_id, origin)
        return hierarchy.server_answer(origin, room_id, suggested_only, fed.acl.room_allows)

    router.add("GET", "/_matrix/federation/v1/hierarchy/{roomId}", get_hierarchy)
