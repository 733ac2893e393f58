"""(Skeleton of the contract: the detectors part replaces this module.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion.guard.tables import check_keys


@dataclass(frozen=True)
class DetectorConfig:
    pass


def parse_detector_config(table: Mapping[str, Any]) -> DetectorConfig:
    check_keys(table, set(), "guard.detectors")
    return DetectorConfig()
