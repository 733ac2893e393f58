"""Relations and threads (C-S API "Relationships" → "Relations API", and "Threading" →
"Fetching all threads in a room"), spec v1.19.

Handlers are thin: they validate the request's shape and call the relations reader
(:mod:`bastion.services.relations`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.client.rooms import check_room_id, parse_pos, token, with_bundles
from bastion.api.http import Request, Router
from bastion.core.relations import DEFAULT_LIMIT, MAX_LIMIT, MAX_RECURSION_DEPTH, parse_recurse
from bastion.errors import invalid_param
from bastion.services.relations import RelationsReader

if TYPE_CHECKING:
    from bastion.server import HomeServer

V1 = "/_matrix/client/v1"


def register(router: Router, hs: HomeServer) -> None:
    reader = RelationsReader(hs.store, hs.rooms.access)

    async def relations(req: Request) -> dict:
        """GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
        — C-S API "Relationships", "Relations API" (``from``, ``to``, ``limit`` clamped to
        1..100, ``dir`` ``b`` (default) or ``f``, ``recurse`` up to 3 levels with
        ``recursion_depth``). 404 ``M_NOT_FOUND`` when the event is unknown or not visible."""
        room_id = check_room_id(req.params["roomId"])
        q = req.query
        direction = q.get("dir", "b")
        if direction not in ("b", "f"):
            raise invalid_param("'dir' must be 'b' or 'f'")
        from_pos = parse_pos(q.get("from"), "from")
        to_pos = parse_pos(q.get("to"), "to")
        limit = req.query_int("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        recurse = parse_recurse(q.get("recurse"))
        if recurse is None:
            raise invalid_param("'recurse' must be 'true' or 'false'")
        rel_type = req.params.get("relType")
        event_type = req.params.get("eventType")
        for name, value in (("relType", rel_type), ("eventType", event_type)):
            if value is not None and not value:
                raise invalid_param(f"'{name}' must not be empty")
        rows, next_pos = reader.relations(
            req.requester.user_id, room_id, req.params["eventId"], rel_type=rel_type,
            event_type=event_type, from_pos=from_pos, to_pos=to_pos,
            backwards=direction == "b", limit=limit, recurse=recurse,
        )  # fmt: skip
        now = hs.now_ms()
        served = [hs.rooms.client_event(r, req.requester, now) for r in rows]
        out: dict = {"chunk": with_bundles(hs, req.requester, rows, served)}
        if next_pos is not None:
            out["next_batch"] = token(next_pos)
        if from_pos is not None:
            out["prev_batch"] = token(from_pos)
        if "recurse" in q:
            out["recursion_depth"] = MAX_RECURSION_DEPTH if recurse else 1
        return out

    async def threads(req: Request) -> dict:
        """GET /_matrix/client/v1/rooms/{roomId}/threads — C-S API "Threading", "Fetching all
        threads in a room" (``include`` ``all`` (default) or ``participated``, ``from``,
        ``limit`` clamped to 1..100). 403 when the requester may not read the room."""
        room_id = check_room_id(req.params["roomId"])
        q = req.query
        include = q.get("include", "all")
        if include not in ("all", "participated"):
            raise invalid_param("'include' must be 'all' or 'participated'")
        from_pos = parse_pos(q.get("from"), "from")
        limit = req.query_int("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        rows, next_pos = reader.threads(
            req.requester.user_id, room_id, participated=include == "participated",
            from_pos=from_pos, limit=limit,
        )  # fmt: skip
        now = hs.now_ms()
        served = [hs.rooms.client_event(r, req.requester, now) for r in rows]
        out: dict = {"chunk": with_bundles(hs, req.requester, rows, served)}
        if next_pos is not None:
            out["next_batch"] = token(next_pos)
        return out

    base = V1 + "/rooms/{roomId}"
    router.add("GET", base + "/relations/{eventId}", relations)
    router.add("GET", base + "/relations/{eventId}/{relType}", relations)
    router.add("GET", base + "/relations/{eventId}/{relType}/{eventType}", relations)
    router.add("GET", base + "/threads", threads)
