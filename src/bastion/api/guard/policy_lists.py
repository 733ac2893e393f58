"""The guard's policy-list admin API (``/_bastion/admin/v1/guard/policy_lists``): which
moderation policy lists the server enforces (C-S API "Moderation policy lists": subscribing is
left to the implementation; see :mod:`bastion.guard.policy_service`).

Server admins only. Every call is an ``admin.request`` ledger record; a subscription change is
also a ``guard.policy_list`` record, both in the transaction that makes the change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.api.admin_access import query_reason, require_admin, route_name
from bastion.api.http import Request, Router
from bastion.core.identifiers import parse_room_id
from bastion.errors import bad_json, forbidden, invalid_param, not_found
from bastion.ledger import records
from bastion.services.security_records import admin_reason, admin_request_in, record_in

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import Txn

PREFIX = "/_bastion/admin/v1/guard/policy_lists"
#: The longest shortcode (a short name for a list, shown in refusals).
MAX_SHORTCODE_CHARS = 64


def register(router: Router, hs: HomeServer) -> None:
    policy = hs.guard.policy

    def room_param(req: Request) -> str:
        room_id = req.params["roomId"]
        parse_room_id(room_id)  # M_INVALID_PARAM naming what is wrong
        return room_id

    def describe(room_id: str) -> dict[str, Any]:
        for entry in policy.lists():
            if entry.room_id == room_id:
                return entry.describe()
        raise not_found("this room is not a subscribed policy list")

    async def list_lists(req: Request) -> dict:
        """GET /_bastion/admin/v1/guard/policy_lists — every list the server enforces, its
        rule counts and the entities it bans; recorded (with the optional query ``reason``)."""
        require_admin(req)
        reason = query_reason(req)
        now = hs.now_ms()

        def fn(conn: Txn) -> None:
            admin_request_in(
                hs.store, conn, actor=req.requester.user_id, route=route_name(req), ts=now,
                target=None, reason=reason, origin=req.raw.remote,
            )  # fmt: skip

        await hs.store.transaction(fn)
        return {"lists": [entry.describe() for entry in policy.lists()]}

    async def subscribe(req: Request) -> dict:
        """PUT /_bastion/admin/v1/guard/policy_lists/{roomId} — enforce this policy room's rules
        (optional ``shortcode``, ``reason``). The server must hold the room (a local user
        joined); it never joins on its own. Recorded (``guard.policy_list``)."""
        require_admin(req)
        room_id = room_param(req)
        body = await req.json(allow_empty=True)
        reason = admin_reason(body)
        shortcode = body.get("shortcode")
        if shortcode is not None:
            if not isinstance(shortcode, str):
                raise bad_json("'shortcode' must be a string")
            if not shortcode or len(shortcode) > MAX_SHORTCODE_CHARS or not shortcode.isprintable():
                raise invalid_param(
                    f"'shortcode' is 1 to {MAX_SHORTCODE_CHARS} printable characters"
                )
        if not policy.server_holds(room_id):
            raise forbidden(
                f"this server is not in the room {room_id}: join it with a local account (for "
                "example your own) first, then subscribe; the server reads a policy list from "
                "the room's state and never joins a room on its own"
            )
        actor, now = req.requester.user_id, hs.now_ms()

        def fn(conn: Txn) -> bool:
            new = hs.store.add_guard_policy_list_in(conn, room_id, shortcode, actor, now)
            record_in(
                hs.store, conn, records.ACTION_GUARD_POLICY_LIST, actor=actor, ts=now,
                target=room_id, reason=reason, origin=req.raw.remote,
                details={"op": "subscribe", "shortcode": shortcode, "new": new},
            )  # fmt: skip
            admin_request_in(
                hs.store, conn, actor=actor, route=route_name(req), ts=now, target=room_id,
                reason=reason, origin=req.raw.remote,
            )  # fmt: skip
            return new

        await hs.store.transaction(fn)
        policy.reload()
        return describe(room_id)

    async def unsubscribe(req: Request) -> dict:
        """DELETE /_bastion/admin/v1/guard/policy_lists/{roomId} — stop enforcing a list
        subscribed through this API (lists named in the config file stay); recorded."""
        require_admin(req)
        room_id = room_param(req)
        body = await req.json(allow_empty=True)
        reason = admin_reason(body)
        actor, now = req.requester.user_id, hs.now_ms()

        def fn(conn: Txn) -> bool:
            removed = hs.store.remove_guard_policy_list_in(conn, room_id)
            if removed:
                record_in(
                    hs.store, conn, records.ACTION_GUARD_POLICY_LIST, actor=actor, ts=now,
                    target=room_id, reason=reason, origin=req.raw.remote,
                    details={"op": "unsubscribe"},
                )  # fmt: skip
            admin_request_in(
                hs.store, conn, actor=actor, route=route_name(req), ts=now, target=room_id,
                reason=reason, origin=req.raw.remote,
            )  # fmt: skip
            return removed

        removed = await hs.store.transaction(fn)
        policy.reload()
        if not removed:
            if room_id in hs.config.guard_config.policy.lists:
                raise forbidden("this list is named in the config file ([guard.policy] lists)")
            raise not_found("this room is not a subscribed policy list")
        return {}

    router.add("GET", PREFIX, list_lists)
    router.add("PUT", PREFIX + "/{roomId}", subscribe)
    router.add("DELETE", PREFIX + "/{roomId}", unsubscribe)
