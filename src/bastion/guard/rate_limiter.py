"""(Skeleton of the contract: the ratelimit part replaces this module.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.guard.signals import EventContext
    from bastion.server import HomeServer


class RateLimits:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    def require(
        self, name: str, *, user: str | None = None, ip: str | None = None,
        room: str | None = None, origin: str | None = None,
    ) -> None:  # fmt: skip
        return None

    def require_local_event(self, ctx: EventContext) -> None:
        return None

    def remote_event_allowed(self, ctx: EventContext) -> bool:
        return True

    def is_exempt(self, user_id: str) -> bool:
        return False
