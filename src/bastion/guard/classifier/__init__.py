"""(Skeleton of the contract: the classifier part replaces this module.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion.guard.tables import check_keys


@dataclass(frozen=True)
class ClassifierConfig:
    pass


def parse_classifier_config(table: Mapping[str, Any]) -> ClassifierConfig:
    check_keys(table, set(), "guard.classifier")
    return ClassifierConfig()
