"""PUT /_matrix/federation/v1/send/{txnId} — S-S API "Transactions" (transactions.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request
from bastion.errors import invalid_param

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router, hs: HomeServer) -> None:
    fed = hs.require_federation()
    events = fed.events

    async def send_transaction(req: Request) -> dict:
        """PUT /_matrix/federation/v1/send/{txnId} — S-S API "Transactions": at most 50 PDUs
        and 100 EDUs; each PDU goes through "Checks performed on receipt of a PDU"; 200 with
        ``{pdus: {event_id: {error?}}}`` even when PDUs are rejected; a retried txnId gets the
        first answer. Per-origin rate limit ``federation_send`` (the guard's): 429
        ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``."""
        origin = req.requester
        hs.guard.limits.require("federation_send", origin=origin)
        txn_id = req.params["txnId"]
        if not txn_id or len(txn_id) > 255:
            raise invalid_param("invalid transaction ID")
        body = await req.json(limit=hs.config.federation_max_transaction_bytes)
        return await events.on_send_transaction(origin, txn_id, body)

    router.add("PUT", "/_matrix/federation/v1/send/{txnId}", send_transaction)
