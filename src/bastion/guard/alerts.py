"""(Skeleton of the contract: the notices/alerts part replaces this module.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion.guard.tables import check_keys

if TYPE_CHECKING:
    from bastion.server import HomeServer


@dataclass(frozen=True)
class AlertsConfig:
    pass


def parse_alerts_config(table: Mapping[str, Any]) -> AlertsConfig:
    check_keys(table, set(), "guard.alerts")
    return AlertsConfig()


class Alerts:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def alert(self, kind: str, summary: str, details: Mapping[str, Any]) -> None:
        return None

    def count(self, metric: str, labels: Mapping[str, str] | None = None, n: int = 1) -> None:
        return None
