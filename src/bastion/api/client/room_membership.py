"""Room membership (C-S API "Room membership": "Joining rooms", "Knocking on rooms", "Leaving
rooms", "Inviting users", "Banning users", "Kicking users")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.client.rooms import V3, check_room_id
from bastion.api.http import Request, Router
from bastion.core.identifiers import server_name_of
from bastion.errors import M_UNKNOWN, M_UNRECOGNIZED, MatrixError, bad_json, forbidden, not_found

if TYPE_CHECKING:
    from bastion.server import HomeServer


def _reason(body: dict):
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise bad_json("'reason' must be a string")
    return reason


def _user_id(body: dict) -> str:
    user_id = body.get("user_id")
    if not isinstance(user_id, str):
        raise bad_json("'user_id' must be a string")
    return user_id


def _via(req: Request) -> list[str]:
    # ``via`` (and the deprecated ``server_name``) name servers to join through.
    return [*req.query_all("via"), *req.query_all("server_name")]


def register(router: Router, hs: HomeServer) -> None:
    rooms = hs.rooms

    async def resolve(room_id_or_alias: str, via: list[str]) -> str:
        """A room ID, an alias of ours, or an alias of another server (S-S API "Querying
        for information": GET /v1/query/directory), whose servers are added to ``via``."""
        fed = hs.federation
        if (
            fed is not None
            and room_id_or_alias.startswith("#")
            and server_name_of(room_id_or_alias) != hs.server_name
        ):
            room_id, servers = await fed.membership.query_directory(room_id_or_alias)
            via.extend(servers)
            return room_id
        return rooms.resolve_room(room_id_or_alias)

    async def join_room_id(req: Request) -> dict:
        """POST /_matrix/client/v3/rooms/{roomId}/join — C-S API "Joining rooms"."""
        room_id = check_room_id(req.params["roomId"])
        body = await req.json(allow_empty=True)
        await rooms.update_membership(
            req.requester.user_id,
            room_id,
            req.requester.user_id,
            "join",
            _reason(body),
            ip=req.raw.remote,
        )
        return {"room_id": room_id}

    async def join_any(req: Request) -> dict:
        """POST /_matrix/client/v3/join/{roomIdOrAlias} — a room ID (joined through the
        ``via`` servers when this server is not in the room) or an alias (remote aliases are
        resolved over federation)."""
        via = _via(req)
        room_id = await resolve(req.params["roomIdOrAlias"], via)
        check_room_id(room_id)
        body = await req.json(allow_empty=True)
        await rooms.update_membership(
            req.requester.user_id,
            room_id,
            req.requester.user_id,
            "join",
            _reason(body),
            via=via,
            ip=req.raw.remote,
        )
        return {"room_id": room_id}

    async def knock(req: Request) -> dict:
        """POST /_matrix/client/v3/knock/{roomIdOrAlias} — C-S API "Knocking on rooms"."""
        via = _via(req)
        room_id = await resolve(req.params["roomIdOrAlias"], via)
        check_room_id(room_id)
        body = await req.json(allow_empty=True)
        await rooms.update_membership(
            req.requester.user_id,
            room_id,
            req.requester.user_id,
            "knock",
            _reason(body),
            via=via,
            ip=req.raw.remote,
        )
        return {"room_id": room_id}

    async def leave(req: Request) -> dict:
        """POST /_matrix/client/v3/rooms/{roomId}/leave — also rejects an invite or
        withdraws a knock."""
        room_id = check_room_id(req.params["roomId"])
        body = await req.json(allow_empty=True)
        await rooms.update_membership(
            req.requester.user_id, room_id, req.requester.user_id, "leave", _reason(body)
        )
        return {}

    async def forget(req: Request) -> dict:
        """POST /_matrix/client/v3/rooms/{roomId}/forget — 400 ``M_UNKNOWN`` while still a
        member; afterwards the room no longer appears in sync with include_leave."""
        room_id = check_room_id(req.params["roomId"])
        membership = rooms.membership_of(room_id, req.requester.user_id)
        if membership is None:
            if not hs.store.room_exists(room_id):
                raise not_found("unknown room")
            return {}
        if membership in ("join", "invite", "knock"):
            raise MatrixError(M_UNKNOWN, "the user has not left the room", 400)
        await hs.store.forget_room(room_id, req.requester.user_id)
        return {}

    def _target(action: str, membership: str):
        async def handler(req: Request) -> dict:
            room_id = check_room_id(req.params["roomId"])
            body = await req.json()
            target = _user_id(body)
            reason = _reason(body)
            if action == "unban" and rooms.membership_of(room_id, target) != "ban":
                rooms.require_room(room_id)
                raise forbidden("the user is not banned")
            if action == "invite" and ("medium" in body or "address" in body):
                raise MatrixError(M_UNRECOGNIZED, "third-party invites are not supported")
            await rooms.update_membership(
                req.requester.user_id, room_id, target, membership, reason, ip=req.raw.remote
            )
            return {}

        handler.__doc__ = (
            f'POST /_matrix/client/v3/rooms/{{roomId}}/{action} — C-S API "Room membership".'
        )
        return handler

    base = V3 + "/rooms/{roomId}"
    router.add("POST", base + "/join", join_room_id)
    router.add("POST", V3 + "/join/{roomIdOrAlias}", join_any)
    router.add("POST", V3 + "/knock/{roomIdOrAlias}", knock)
    router.add("POST", base + "/leave", leave, allow_suspended=True)
    router.add("POST", base + "/forget", forget, allow_suspended=True)
    router.add("POST", base + "/invite", _target("invite", "invite"))
    router.add("POST", base + "/kick", _target("kick", "leave"))
    router.add("POST", base + "/ban", _target("ban", "ban"))
    router.add("POST", base + "/unban", _target("unban", "leave"))
