"""The guard's configuration: the ``[guard]`` table of the TOML file, typed.

Each part reads its own sub-table (``[guard.rate_limits]``, ``[guard.login]``,
``[guard.registration]``, ``[guard.detectors]``, ``[guard.classifier]``, ``[guard.policy]``,
``[guard.alerts]``); the top level holds ``enabled`` and ``mode``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bastion.guard.alerts import AlertsConfig, parse_alerts_config
from bastion.guard.classifier import ClassifierConfig, parse_classifier_config
from bastion.guard.detectors import DetectorConfig, parse_detector_config
from bastion.guard.limits import RateLimitConfig, parse_rate_limits
from bastion.guard.login_policy import (
    LoginConfig,
    RegistrationConfig,
    parse_login_config,
    parse_registration_config,
)
from bastion.guard.policy_lists import PolicyConfig, parse_policy_config
from bastion.guard.tables import check_keys, get_bool, get_str, subtable

__all__ = ["MODES", "GuardConfig", "parse_guard_config"]

#: ``enforce``: verdicts are carried out; ``shadow``: they are only recorded (rate limits and
#: login defence still apply: they protect the server, not judge content).
MODES = ("enforce", "shadow")

_SECTIONS = ("rate_limits", "login", "registration", "detectors", "classifier", "policy",
             "alerts")  # fmt: skip


@dataclass(frozen=True)
class GuardConfig:
    #: false turns off detectors, the classifier, policy lists and automated actions (for
    #: benchmarks); login defence and rate limits have their own switches.
    enabled: bool = True
    mode: str = "enforce"
    rate_limits: RateLimitConfig = field(default_factory=lambda: parse_rate_limits({}))
    login: LoginConfig = field(default_factory=lambda: parse_login_config({}))
    registration: RegistrationConfig = field(default_factory=lambda: parse_registration_config({}))
    detectors: DetectorConfig = field(default_factory=lambda: parse_detector_config({}))
    classifier: ClassifierConfig = field(default_factory=lambda: parse_classifier_config({}))
    policy: PolicyConfig = field(default_factory=lambda: parse_policy_config({}))
    alerts: AlertsConfig = field(default_factory=lambda: parse_alerts_config({}))

    @property
    def enforce(self) -> bool:
        return self.mode == "enforce"


def parse_guard_config(table: Mapping[str, Any]) -> GuardConfig:
    """The ``[guard]`` table as a :class:`GuardConfig` (:class:`ValueError` naming the key)."""
    if not isinstance(table, Mapping):
        raise ValueError("guard must be a table")
    check_keys(table, {"enabled", "mode", *_SECTIONS}, "guard")
    return GuardConfig(
        enabled=get_bool(table, "enabled", True, "guard"),
        mode=get_str(table, "mode", "enforce", "guard", MODES),
        rate_limits=parse_rate_limits(subtable(table, "rate_limits", "guard")),
        login=parse_login_config(subtable(table, "login", "guard")),
        registration=parse_registration_config(subtable(table, "registration", "guard")),
        detectors=parse_detector_config(subtable(table, "detectors", "guard")),
        classifier=parse_classifier_config(subtable(table, "classifier", "guard")),
        policy=parse_policy_config(subtable(table, "policy", "guard")),
        alerts=parse_alerts_config(subtable(table, "alerts", "guard")),
    )
