"""Synapse's admin API "Deactivate Account" (``POST /_synapse/admin/v1/deactivate/{userId}``,
Synapse's docs/admin_api/user_admin_api.md), which tools such as ``synadm user deactivate``
call.

Request body ``{"erase": bool}`` (default false) and, Bastion's own, ``redact_federated`` (bool,
default false: with ``erase``, send a redaction of each of the user's events to the other
servers of their rooms first) and ``reason`` (recorded). Answer: Synapse's
``{"id_server_unbind_result": "success"}`` (no identity server is used here, so there is
nothing to unbind; Synapse answers "success" then too).

Admins only (403 ``M_FORBIDDEN``); 400 ``M_INVALID_PARAM`` for a remote user ID, 404
``M_NOT_FOUND`` for an unknown one. An account already deactivated may still be erased (Synapse
lets an admin deactivate again). The call is an ``admin.request`` ledger record in the
transaction of the change (the deactivation's, or the erasure's summary), beside the
``account.deactivate`` and ``compliance.erasure`` records that name the admin as actor.
Unlike Synapse, whose ``erase`` only hides the user's messages from people who join later,
``erase`` here deletes them (:mod:`bastion.services.erasure`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.admin_access import admin_request, require_admin
from bastion.api.http import Request, Router
from bastion.services.accounts import bad_json
from bastion.services.security_records import admin_reason
from bastion.storage.interface import Requester

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    async def deactivate(req: Request) -> dict:
        """POST /_synapse/admin/v1/deactivate/{userId}."""
        admin = require_admin(req)
        user_id = req.params["userId"]
        body = await req.json(allow_empty=True)
        flags = {}
        for key in ("erase", "redact_federated"):
            value = body.get(key, False)
            if not isinstance(value, bool):
                raise bad_json(f"'{key}' must be a boolean")
            flags[key] = value
        reason = admin_reason(body)
        hs.erasure.check_target(user_id)
        record = admin_request(hs, req, target=user_id, reason=reason, subject=user_id)
        if flags["erase"]:
            await hs.erasure.erase(
                user_id, actor=admin, redact_federated=flags["redact_federated"], reason=reason,
                origin=req.raw.remote, also_in=record,
            )  # fmt: skip
        else:
            row = hs.store.get_user(user_id)
            if row is not None and not row["deactivated"]:
                await hs.accounts.deactivate(
                    Requester(user_id, ""), req.raw.remote, actor=admin, also_in=record
                )
            else:
                await hs.store.transaction(record)
        return {"id_server_unbind_result": "success"}

    router.add("POST", "/_synapse/admin/v1/deactivate/{userId}", deactivate)
