"""Synapse admin API "Rooms": list, details, members, state, block, delete (v1 and v2) and the
deletion status.

Differences from Synapse, on purpose:

- ``DELETE /_synapse/admin/v2/rooms/{roomId}`` does the work before it answers (Synapse starts
  it in the background): the ``delete_id`` it returns is ``complete`` (or ``failed``) at once,
  and deletion statuses are kept in the database, not for a day in memory.
- ``new_room_user_id`` (a replacement room the users are moved to) is not offered: 400
  ``M_INVALID_PARAM``; ``room_name`` and ``message`` only go with it and are ignored.
- The local users in the room leave it as themselves (as in Synapse), so the purge that follows
  has no local member left; a purge with a user that could not leave is refused unless
  ``force_purge``. What a purge deletes, and what it keeps, is described in
  :mod:`bastion.services.admin_directory`.
- ``joined_local_devices`` is not counted (0); ``forgotten`` is false.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bastion.api.admin_access import admin_request, record_admin_read, require_admin
from bastion.api.http import Request, Router
from bastion.api.synapse_admin import paging
from bastion.errors import bad_json, missing_param
from bastion.services.security_records import admin_reason

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    directory = hs.admin_directory

    async def list_rooms(req: Request) -> dict:
        """GET /_synapse/admin/v1/rooms — Synapse admin API "Rooms", "List Room API"
        (``from``, ``limit``, ``order_by``, ``dir``, ``search_term``, ``empty_rooms``); admins
        only; recorded."""
        require_admin(req)
        offset, limit = paging(req)
        out = directory.list_rooms(req.query, offset, limit)
        await record_admin_read(hs, req, target=None)
        return out

    def room_read(read: Callable[[str], dict], doc: str) -> Callable[[Request], Awaitable[dict]]:
        """A read of one room: admins only, recorded before the answer goes out."""

        async def handler(req: Request) -> dict:
            require_admin(req)
            room_id = req.params["roomId"]
            out = read(room_id)
            await record_admin_read(hs, req, target=room_id)
            return out

        handler.__doc__ = doc
        return handler

    room_details = room_read(
        directory.room_details,
        """GET /_synapse/admin/v1/rooms/{roomId} —
        Synapse admin API "Rooms", "Room Details API"; admins only; recorded.""",
    )
    room_members = room_read(
        directory.room_members,
        """GET
        /_synapse/admin/v1/rooms/{roomId}/members — Synapse admin API "Rooms", "Room Members
        API"; admins only; recorded.""",
    )
    room_state = room_read(
        directory.room_state,
        """GET /_synapse/admin/v1/rooms/{roomId}/state —
        Synapse admin API "Rooms", "Room State API"; admins only; recorded.""",
    )
    get_block = room_read(
        directory.block_status,
        """GET /_synapse/admin/v1/rooms/{roomId}/block —
        Synapse admin API "Rooms", "Get block status"; admins only; recorded.""",
    )

    async def put_block(req: Request) -> dict:
        """PUT /_synapse/admin/v1/rooms/{roomId}/block — Synapse admin API "Rooms", "Block Room
        API" (``block``); admins only; recorded with the change."""
        admin = require_admin(req)
        room_id = req.params["roomId"]
        body = await req.json()
        block = body.get("block")
        if block is None:
            raise missing_param("'block' is required")
        if not isinstance(block, bool):
            raise bad_json("'block' must be a boolean")
        audit = admin_request(hs, req, target=room_id, reason=admin_reason(body))
        await directory.set_block(admin, room_id, block, audit, req.raw.remote)
        return {"block": block}

    async def _delete(req: Request) -> tuple[str, dict]:
        admin = require_admin(req)
        room_id = req.params["roomId"]
        body = await req.json(allow_empty=True)
        opts = directory.check_delete_body(body)
        audit = admin_request(hs, req, target=room_id, reason=admin_reason(body))
        return await directory.delete_room(admin, room_id, opts, audit, req.raw.remote)

    async def delete_v1(req: Request) -> dict:
        """DELETE /_synapse/admin/v1/rooms/{roomId} — Synapse admin API "Rooms", "Delete Room
        API" (``block``, ``purge``, ``force_purge``): ``kicked_users``,
        ``failed_to_kick_users``, ``local_aliases``, ``new_room_id``; admins only; recorded
        with the change."""
        _, result = await _delete(req)
        return result

    async def delete_v2(req: Request) -> dict:
        """DELETE /_synapse/admin/v2/rooms/{roomId} — Synapse admin API "Rooms", "Version 2
        (new version)" of the Delete Room API: ``{"delete_id": ...}``; admins only; recorded
        with the change."""
        delete_id, _ = await _delete(req)
        return {"delete_id": delete_id}

    async def status_by_room(req: Request) -> dict:
        """GET /_synapse/admin/v2/rooms/{roomId}/delete_status — Synapse admin API "Rooms",
        "Query the status of a room deletion" by room ID; admins only; recorded."""
        require_admin(req)
        room_id = req.params["roomId"]
        out = directory.deletion_status_by_room(room_id)
        await record_admin_read(hs, req, target=room_id)
        return out

    async def status_by_id(req: Request) -> dict:
        """GET /_synapse/admin/v2/rooms/delete_status/{deleteId} — Synapse admin API "Rooms",
        "Query the status of a room deletion" by delete ID; admins only; recorded."""
        require_admin(req)
        delete_id = req.params["deleteId"]
        out = directory.deletion_status(delete_id)
        await record_admin_read(hs, req, target=delete_id[:64])
        return out

    router.add("GET", "/_synapse/admin/v1/rooms", list_rooms)
    router.add("GET", "/_synapse/admin/v1/rooms/{roomId}", room_details)
    router.add("GET", "/_synapse/admin/v1/rooms/{roomId}/members", room_members)
    router.add("GET", "/_synapse/admin/v1/rooms/{roomId}/state", room_state)
    router.add("GET", "/_synapse/admin/v1/rooms/{roomId}/block", get_block)
    router.add("PUT", "/_synapse/admin/v1/rooms/{roomId}/block", put_block)
    router.add("DELETE", "/_synapse/admin/v1/rooms/{roomId}", delete_v1)
    router.add("DELETE", "/_synapse/admin/v2/rooms/{roomId}", delete_v2)
    router.add("GET", "/_synapse/admin/v2/rooms/delete_status/{deleteId}", status_by_id)
    router.add("GET", "/_synapse/admin/v2/rooms/{roomId}/delete_status", status_by_room)
