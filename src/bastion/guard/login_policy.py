"""(Skeleton of the contract: the login part replaces this module.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion.guard.tables import check_keys


@dataclass(frozen=True)
class LoginConfig:
    pass


def parse_login_config(table: Mapping[str, Any]) -> LoginConfig:
    check_keys(table, set(), "guard.login")
    return LoginConfig()


@dataclass(frozen=True)
class RegistrationConfig:
    pass


def parse_registration_config(table: Mapping[str, Any]) -> RegistrationConfig:
    check_keys(table, set(), "guard.registration")
    return RegistrationConfig()
