"""(Skeleton of the contract: the core part replaces this module.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.guard.alerts import Alerts
from bastion.guard.behaviour import Detectors
from bastion.guard.config import GuardConfig
from bastion.guard.content import ContentClassifier
from bastion.guard.login_defence import LoginDefence
from bastion.guard.policy_service import PolicyLists
from bastion.guard.rate_limiter import RateLimits
from bastion.guard.room_cooling import RoomCooling

if TYPE_CHECKING:
    from bastion.server import HomeServer


class GuardService:
    """``hs.guard``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.config: GuardConfig = hs.config.guard_config
        self.alerts = Alerts(hs)
        self.limits = RateLimits(hs)
        self.login = LoginDefence(hs)
        self.detectors = Detectors(hs)
        self.cooling = RoomCooling(hs)
        self.classifier = ContentClassifier(hs)
        self.policy = PolicyLists(hs)
