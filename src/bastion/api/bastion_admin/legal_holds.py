"""Legal holds (issue 10): what retention must not purge while a matter is pending.

- ``GET /_bastion/admin/v1/legal_holds``: every hold, ``{"legal_holds": [{"kind", "target",
  "reason", "set_by", "set_ts"}]}`` (oldest first).
- ``PUT /_bastion/admin/v1/legal_holds/users/{userId}`` and ``.../rooms/{roomId}``, body
  ``{"reason": "..."}`` (required, at most 1000 characters): hold a user (their events, in
  every room, and the media they uploaded) or a room (its events and the media they point
  at). Setting a hold again replaces its reason. Answers the hold.
- ``DELETE`` the same paths, optional body ``{"reason": ...}``: lift it; 404 ``M_NOT_FOUND``
  when there is no such hold.

A user may be local or of another server (their events in rooms here are held); a room must
be known to this server (404 ``M_NOT_FOUND`` otherwise: a mistyped ID must not look held). A
malformed ID is 400 ``M_INVALID_PARAM``. Server admins only (403 ``M_FORBIDDEN``); every call is
an ``admin.request`` ledger record, and each change a ``compliance.legal_hold`` or
``compliance.legal_hold_lift`` record, in the change's transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.admin_access import admin_request, record_admin_read, require_admin
from bastion.api.http import Request, Router
from bastion.core.identifiers import parse_room_id, parse_user_id
from bastion.errors import missing_param, not_found
from bastion.services.security_records import admin_reason

if TYPE_CHECKING:
    from bastion.server import HomeServer

PREFIX = "/_bastion/admin/v1/legal_holds"


def register(router: Router, hs: HomeServer) -> None:

    def target_of(req: Request, kind: str) -> str:
        if kind == "user":
            user_id = req.params["userId"]
            parse_user_id(user_id, historical=True)  # 400 M_INVALID_PARAM
            return user_id
        room_id = req.params["roomId"]
        parse_room_id(room_id)
        return room_id

    async def list_holds(req: Request) -> dict:
        """GET /_bastion/admin/v1/legal_holds — every hold; admins only."""
        require_admin(req)
        await record_admin_read(hs, req, target=None)
        return {"legal_holds": hs.store.list_legal_holds()}

    def put_hold(kind: str):
        async def handler(req: Request) -> dict:
            """PUT /_bastion/admin/v1/legal_holds/{users|rooms}/{id} — set a hold."""
            admin = require_admin(req)
            target = target_of(req, kind)
            body = await req.json()
            reason = admin_reason(body)
            if not reason:
                raise missing_param("'reason' is required: say why the data is held")
            if kind == "room" and not hs.store.room_exists(target):
                raise not_found("this server knows no such room")
            subject = target if kind == "user" else None
            return await hs.retention.set_hold(
                kind, target, reason, admin=admin, origin=req.raw.remote,
                also=admin_request(hs, req, target=target, reason=reason, subject=subject),
            )  # fmt: skip

        return handler

    def delete_hold(kind: str):
        async def handler(req: Request) -> dict:
            """DELETE /_bastion/admin/v1/legal_holds/{users|rooms}/{id} — lift a hold."""
            admin = require_admin(req)
            target = target_of(req, kind)
            body = await req.json(allow_empty=True)
            reason = admin_reason(body)
            subject = target if kind == "user" else None
            lifted = await hs.retention.lift_hold(
                kind, target, reason, admin=admin, origin=req.raw.remote,
                also=admin_request(hs, req, target=target, reason=reason, subject=subject),
            )  # fmt: skip
            if not lifted:
                raise not_found("there is no such legal hold")
            return {}

        return handler

    router.add("GET", PREFIX, list_holds)
    router.add("PUT", f"{PREFIX}/users/{{userId}}", put_hold("user"))
    router.add("DELETE", f"{PREFIX}/users/{{userId}}", delete_hold("user"))
    router.add("PUT", f"{PREFIX}/rooms/{{roomId}}", put_hold("room"))
    router.add("DELETE", f"{PREFIX}/rooms/{{roomId}}", delete_hold("room"))
