"""Send-to-Device messaging (C-S API "Send-to-Device messaging", to_device.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    e2ee = hs.e2ee

    async def send(req: Request) -> dict:
        """PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId} — idempotent per device and
        transaction ID; ``*`` addresses every device of a user. Rate limit ``to_device``
        (429 ``M_LIMIT_EXCEEDED``)."""
        p = req.params
        with hs.guard.limits.counting("to_device", user=req.requester.user_id, ip=req.raw.remote):
            return await e2ee.send_to_device(
                req.requester, p["eventType"], p["txnId"], await req.json()
            )

    router.add(
        "PUT", "/_matrix/client/v3/sendToDevice/{eventType}/{txnId}", send, allow_suspended=True
    )
