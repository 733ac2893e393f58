"""Reporting content (C-S API "Reporting Content": report_content.yaml)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from bastion.api.http import Request, Router

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    limits = hs.guard.limits

    def rate(req: Request) -> AbstractContextManager[None]:
        """Rate limit ``report`` (429 ``M_LIMIT_EXCEEDED``; a report refused for its input gives
        its token back): reports reach moderators, whose attention is the scarce thing."""
        return limits.counting("report", user=req.requester.user_id, ip=req.raw.remote)

    async def report_event(req: Request) -> dict:
        """POST /_matrix/client/v3/rooms/{roomId}/report/{eventId} — C-S API "Reporting
        Content". The reporter must be joined (v1.8)."""
        with rate(req):
            body = await req.json(allow_empty=True)
            await hs.reporting.report_event(
                req.requester.user_id, req.params["roomId"], req.params["eventId"], body
            )
        return {}

    async def report_room(req: Request) -> dict:
        """POST /_matrix/client/v3/rooms/{roomId}/report — C-S API "Reporting Content" (v1.13;
        no membership required)."""
        with rate(req):
            body = await req.json()
            await hs.reporting.report_room(req.requester.user_id, req.params["roomId"], body)
        return {}

    async def report_user(req: Request) -> dict:
        """POST /_matrix/client/v3/users/{userId}/report — C-S API "Reporting Content" (v1.14;
        no shared room required)."""
        with rate(req):
            body = await req.json()
            await hs.reporting.report_user(req.requester.user_id, req.params["userId"], body)
        return {}

    router.add("POST", "/_matrix/client/v3/rooms/{roomId}/report/{eventId}", report_event)
    router.add("POST", "/_matrix/client/v3/rooms/{roomId}/report", report_room)
    router.add("POST", "/_matrix/client/v3/users/{userId}/report", report_user)
