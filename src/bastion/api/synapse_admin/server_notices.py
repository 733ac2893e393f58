"""Synapse admin API "Server Notices": ``POST /_synapse/admin/v1/send_server_notice`` and the
idempotent ``PUT .../send_server_notice/{txnId}``, through Bastion's server-notices rooms
(:class:`bastion.services.server_notices.ServerNotices`).

Differences from Synapse, on purpose: the notice is an ``m.room.message`` with ``msgtype:
m.server_notice`` (C-S API "Server Notices" requires it; Synapse sends the content as given),
keeping the other content keys (``format``, ``formatted_body``, ...); ``type`` and
``state_key`` other than a plain message are refused (400 ``M_INVALID_PARAM``). The admin's
``admin.request`` record is committed before the notice is sent (the notice is an event of the
notices user, written by the room engine). Transaction IDs are remembered in memory, per admin
device, for the life of the process.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from bastion.api.admin_access import record_admin_read, require_admin
from bastion.api.http import Request, Router
from bastion.errors import bad_json, invalid_param, missing_param

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: Transaction IDs remembered (the oldest are forgotten first).
MAX_TXNS = 10_000
MAX_TXN_ID = 255


def register(router: Router, hs: HomeServer) -> None:
    sent: OrderedDict[tuple[str, str, str], str] = OrderedDict()

    async def _send(req: Request) -> str:
        require_admin(req)
        body = await req.json()
        user_id = body.get("user_id")
        if user_id is None:
            raise missing_param("'user_id' is required")
        if not isinstance(user_id, str):
            raise bad_json("'user_id' must be a string")
        content = body.get("content")
        if content is None:
            raise missing_param("'content' is required")
        if not isinstance(content, dict):
            raise bad_json("'content' must be an object")
        text = content.get("body")
        if not isinstance(text, str) or not text:
            raise invalid_param("'content.body' must be a non-empty string")
        if body.get("type", "m.room.message") != "m.room.message" or "state_key" in body:
            raise invalid_param("only m.room.message notices are sent")
        hs.admin_directory.local_user(user_id)
        await record_admin_read(hs, req, target=user_id, subject=user_id)
        extra = {k: v for k, v in content.items() if k not in ("msgtype", "body")}
        return await hs.server_notices.send_notice(user_id, text, extra=extra)

    async def send(req: Request) -> dict:
        """POST /_synapse/admin/v1/send_server_notice — Synapse admin API "Server Notices"
        (``user_id``, ``content``): ``{"event_id": ...}``; admins only; recorded."""
        return {"event_id": await _send(req)}

    async def send_txn(req: Request) -> dict:
        """PUT /_synapse/admin/v1/send_server_notice/{txnId} — Synapse admin API "Server
        Notices", idempotent per transaction ID; admins only; recorded."""
        require_admin(req)
        txn_id = req.params["txnId"]
        if not txn_id or len(txn_id) > MAX_TXN_ID:
            raise invalid_param("invalid transaction ID")
        key = (req.requester.user_id, req.requester.device_id, txn_id)
        done = sent.get(key)
        if done is not None:
            return {"event_id": done}
        event_id = await _send(req)
        sent[key] = event_id
        while len(sent) > MAX_TXNS:
            sent.popitem(last=False)
        return {"event_id": event_id}

    router.add("POST", "/_synapse/admin/v1/send_server_notice", send)
    router.add("PUT", "/_synapse/admin/v1/send_server_notice/{txnId}", send_txn)
