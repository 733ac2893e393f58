"""(Skeleton of the contract: the detectors part replaces this module.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.server import HomeServer


class RoomCooling:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def start(self, room_id: str, until_ms: int, reason: str) -> None:
        return None

    def refuses_join(self, room_id: str, user_id: str, now_ms: int) -> str | None:
        return None
