"""Listing notifications (C-S API "Push Notifications" → "Listing Notifications":
notifications.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.errors import invalid_param

if TYPE_CHECKING:
    from bastion.server import HomeServer

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_LIMIT
    if not text.isdigit() or len(text) > 9:
        raise invalid_param("'limit' must be a non-negative integer")
    return max(1, min(int(text), MAX_LIMIT))


def register(router: Router, hs: HomeServer) -> None:
    async def get_notifications(req: Request) -> dict:
        """GET /_matrix/client/v3/notifications — C-S API "Listing Notifications" (``from``,
        ``limit`` clamped to 1..100, ``only=highlight``)."""
        q = req.query
        await hs.notifications.settle(hs.store.current_pos)
        return hs.notifications.list_notifications(
            req.requester, q.get("from"), _limit(q.get("limit")), q.get("only") == "highlight"
        )

    router.add("GET", "/_matrix/client/v3/notifications", get_notifications)
