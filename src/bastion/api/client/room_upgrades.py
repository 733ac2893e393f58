"""Room upgrades (C-S API "Room Upgrades", room_upgrades.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.client.rooms import check_room_id
from bastion.api.http import Request, Router

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    rooms = hs.rooms

    async def upgrade(req: Request) -> dict:
        """POST /_matrix/client/v3/rooms/{roomId}/upgrade — C-S API "Room Upgrades": body
        ``new_version`` (and ``additional_creators``, v1.16, for v12+ rooms). The server
        behaviour the spec lists (services/room_upgrade.py): permission to send
        ``m.room.tombstone``, the replacement room with ``predecessor``, the state copied, the
        local aliases and the directory listing moved, the tombstone, the old room restricted.
        400 ``M_UNSUPPORTED_ROOM_VERSION`` for a version this server cannot create, 403 without
        the power."""
        room_id = check_room_id(req.params["roomId"])
        body = await req.json()
        new_room = await rooms.upgrade_room(req.requester, room_id, body, ip=req.raw.remote)
        return {"replacement_room": new_room}

    router.add("POST", "/_matrix/client/v3/rooms/{roomId}/upgrade", upgrade)
