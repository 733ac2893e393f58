"""Room membership over federation: S-S API "Joining Rooms" (make_join, send_join v2),
"Leaving Rooms (Rejecting Invites)" (make_leave, send_leave v2), "Inviting to a room"
(invite v2) and "Knocking upon a room" (make_knock, send_knock). The logic lives in
:mod:`bastion.federation.membership`; ``req.requester`` is the authenticated origin server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.identifiers import parse_event_id, parse_room_id, server_name_of
from bastion.errors import invalid_param, missing_param

if TYPE_CHECKING:
    from bastion.server import HomeServer

V1 = "/_matrix/federation/v1"
V2 = "/_matrix/federation/v2"


def _room_id(req: Request) -> str:
    room_id = req.params["roomId"]
    try:
        parse_room_id(room_id)
    except Exception:  # noqa: BLE001
        raise invalid_param("invalid room ID") from None
    return room_id


def _event_id(req: Request) -> str:
    event_id = req.params["eventId"]
    try:
        parse_event_id(event_id)
    except Exception:  # noqa: BLE001
        raise invalid_param("invalid event ID") from None
    return event_id


def register(router: Router, hs: HomeServer) -> None:
    fed = hs.require_federation()
    fm = fed.membership

    def _make(membership: str, default_versions: list[str] | None):
        async def handler(req: Request) -> dict:
            room_id = _room_id(req)
            versions = req.query_all("ver") or default_versions
            if membership == "knock" and not versions:
                raise missing_param("'ver' is required")
            user_id = req.params["userId"]
            if membership in ("join", "knock") and server_name_of(user_id) == req.requester:
                # The guard (issue 9): a cooling room, a policy-listed user/server/room.
                await hs.guard.check_remote_membership(req.requester, room_id, user_id, membership)
            return fm.make_membership(
                req.requester, room_id, req.params["userId"], membership, versions
            )

        return handler

    async def _guard(req: Request, room_id: str, event_id: str, ev: object,
                     membership: str) -> None:  # fmt: skip
        """The guard's check of a membership from another server (issue 9): the event's
        sender and state key as the event gives them (only strings are taken; the event itself
        is checked by the handler afterwards)."""
        if not isinstance(ev, dict):
            return  # the handler answers the malformed body
        sender, state_key = ev.get("sender"), ev.get("state_key")
        if not isinstance(sender, str) or not isinstance(state_key, str):
            return
        if server_name_of(sender) != req.requester:
            return  # refused by the handler: a server speaks only for its own users
        content = ev.get("content")
        await hs.guard.check_remote_membership(
            req.requester, room_id, sender, membership, state_key=state_key,
            content=content if isinstance(content, dict) else None, event_id=event_id,
        )  # fmt: skip

    make_join = _make("join", ["1"])
    make_join.__doc__ = (
        'GET /_matrix/federation/v1/make_join/{roomId}/{userId} — S-S API "Joining Rooms".'
    )
    make_leave = _make("leave", None)
    make_leave.__doc__ = (
        "GET /_matrix/federation/v1/make_leave/{roomId}/{userId} — S-S API "
        '"Leaving Rooms (Rejecting Invites)".'
    )
    make_knock = _make("knock", None)
    make_knock.__doc__ = (
        'GET /_matrix/federation/v1/make_knock/{roomId}/{userId} — S-S API "Knocking upon a room".'
    )

    async def send_join(req: Request) -> dict:
        """PUT /_matrix/federation/v2/send_join/{roomId}/{eventId} — S-S API "Joining Rooms"
        (the full state is always sent: ``omit_members`` is accepted and ignored)."""
        room_id, event_id = _room_id(req), _event_id(req)
        body = await req.json()
        await _guard(req, room_id, event_id, body, "join")
        ev, meta = await fm.send_membership(req.requester, room_id, event_id, body, "join")
        return fm.join_response(ev, meta)

    async def send_leave(req: Request) -> dict:
        """PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId} — S-S API "Leaving Rooms
        (Rejecting Invites)"."""
        room_id, event_id = _room_id(req), _event_id(req)
        body = await req.json()
        await fm.send_membership(req.requester, room_id, event_id, body, "leave")
        return {}

    async def send_knock(req: Request) -> dict:
        """PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId} — S-S API "Knocking upon a
        room"."""
        room_id, event_id = _room_id(req), _event_id(req)
        body = await req.json()
        await _guard(req, room_id, event_id, body, "knock")
        await fm.send_membership(req.requester, room_id, event_id, body, "knock")
        return fm.knock_response(room_id)

    async def invite(req: Request) -> dict:
        """PUT /_matrix/federation/v2/invite/{roomId}/{eventId} — S-S API "Inviting to a
        room"."""
        room_id, event_id = _room_id(req), _event_id(req)
        body = await req.json()
        ev = body.get("event") if isinstance(body, dict) else None
        await _guard(req, room_id, event_id, ev, "invite")
        return await fm.on_invite(req.requester, room_id, event_id, body)

    router.add("GET", V1 + "/make_join/{roomId}/{userId}", make_join)
    router.add("PUT", V2 + "/send_join/{roomId}/{eventId}", send_join)
    router.add("GET", V1 + "/make_leave/{roomId}/{userId}", make_leave)
    router.add("PUT", V2 + "/send_leave/{roomId}/{eventId}", send_leave)
    router.add("GET", V1 + "/make_knock/{roomId}/{userId}", make_knock)
    router.add("PUT", V1 + "/send_knock/{roomId}/{eventId}", send_knock)
    router.add("PUT", V2 + "/invite/{roomId}/{eventId}", invite)
