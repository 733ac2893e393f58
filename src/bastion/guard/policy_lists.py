"""(Skeleton of the contract: the policy part replaces this module.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion.guard.tables import check_keys


@dataclass(frozen=True)
class PolicyConfig:
    pass


def parse_policy_config(table: Mapping[str, Any]) -> PolicyConfig:
    check_keys(table, set(), "guard.policy")
    return PolicyConfig()
