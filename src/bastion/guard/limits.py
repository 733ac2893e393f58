"""(Skeleton of the contract: the ratelimit part replaces this module.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion.guard.tables import check_keys


@dataclass(frozen=True)
class RateLimitConfig:
    pass


def parse_rate_limits(table: Mapping[str, Any]) -> RateLimitConfig:
    check_keys(table, set(), "guard.rate_limits")
    return RateLimitConfig()
