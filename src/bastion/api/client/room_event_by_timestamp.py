"""Events in a room by date (C-S API "Room participation", room_event_by_timestamp.yaml,
v1.6)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.client.rooms import check_room_id
from bastion.api.http import Request, Router
from bastion.errors import invalid_param, missing_param, not_found

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: The largest timestamp asked about (SQLite integers are 64-bit).
MAX_TS = 2**62


def timestamp_query(req: Request) -> tuple[int, bool]:
    """The ``ts`` (clamped to 0..``MAX_TS``) and ``dir`` query parameters, both required:
    (ts, forwards)."""
    if req.query.get("ts") in (None, ""):
        raise missing_param("the ts query parameter is required")
    ts = req.query_int("ts", 0, minimum=0, maximum=MAX_TS)
    direction = req.query.get("dir")
    if direction is None:
        raise missing_param("the dir query parameter is required")
    if direction not in ("f", "b"):
        raise invalid_param("'dir' must be 'f' or 'b'")
    return ts, direction == "f"


def register(router: Router, hs: HomeServer) -> None:
    rooms = hs.rooms

    async def timestamp_to_event(req: Request) -> dict:
        """GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event?ts=&dir= — C-S API "Room
        participation" (v1.6): the event closest to ``ts`` in the direction ``dir`` that the
        user may see (read access and history visibility, as /messages and /context decide);
        404 ``M_NOT_FOUND`` when there is none. Only this server's copy of the room is searched:
        other servers are not asked (the spec lets a server ask them through the federation
        endpoint when it lacks part of the history)."""
        room_id = check_room_id(req.params["roomId"])
        ts, forwards = timestamp_query(req)
        row = rooms.timestamp_to_event(req.requester.user_id, room_id, ts, forwards)
        if row is None:
            way = "forward" if forwards else "backward"
            raise not_found(f"no event found from {ts} in the {way} direction")
        return {"event_id": row.event_id, "origin_server_ts": row.event.get("origin_server_ts")}

    router.add("GET", "/_matrix/client/v1/rooms/{roomId}/timestamp_to_event", timestamp_to_event)
