"""Room summaries (C-S API "Room Summaries", room_summary.yaml, v1.15; MSC3266)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.services.room_summary import RoomSummaries

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    summaries = RoomSummaries(hs.rooms, hs.space_hierarchy)

    async def room_summary(req: Request) -> dict:
        """GET /_matrix/client/v1/room_summary/{roomIdOrAlias}?via= — C-S API "Room Summaries":
        the room's name, topic, alias, avatar, member count, join rule, type, version,
        encryption, allowed rooms and the requester's membership, for a room they are in or
        invited to, or may preview or join by themselves (services/room_summary.py). Requires
        authentication (the spec lets servers allow anonymous access; Bastion does not). A room
        this server is not in is asked of the ``via`` servers (at most 4 are kept)."""
        via = req.query_all("via")[:16]
        return await summaries.summary(req.requester.user_id, req.params["roomIdOrAlias"], via)

    router.add("GET", "/_matrix/client/v1/room_summary/{roomIdOrAlias}", room_summary)
