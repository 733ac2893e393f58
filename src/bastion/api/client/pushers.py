"""Pushers (C-S API "Push Notifications" → "Pushers": pusher.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    async def get_pushers(req: Request) -> dict:
        """GET /_matrix/client/v3/pushers — C-S API "Pushers"."""
        return {"pushers": hs.pushers.list_pushers(req.requester.user_id)}

    async def set_pusher(req: Request) -> dict:
        """POST /_matrix/client/v3/pushers/set — C-S API "Pushers" (``kind`` http or null;
        ``data.url`` must end in /_matrix/push/v1/notify and pass the egress filter)."""
        await hs.pushers.set(req.requester.user_id, await req.json())
        return {}

    router.add("GET", "/_matrix/client/v3/pushers", get_pushers)
    router.add("POST", "/_matrix/client/v3/pushers/set", set_pusher)
