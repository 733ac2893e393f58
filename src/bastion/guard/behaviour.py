"""(Skeleton of the contract: the detectors part replaces this module.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.guard.signals import EventContext, Signal
    from bastion.server import HomeServer


class Detectors:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    def signals(self, ctx: EventContext) -> list[Signal]:
        return []
