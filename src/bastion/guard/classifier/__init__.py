"""The content classifier: a spam/phishing/scam model for text the server may read.

- :mod:`.features`: normalisation and hashed word/character n-gram features (pure);
- :mod:`.urls`: links, domains, brand look-alikes, homographs, shorteners (pure);
- :mod:`.model`: the shipped weights (plain float32 arrays + JSON) and the scoring function;
- :mod:`.train`: the reproducible training command (scikit-learn, only there);
- ``weights/``: the shipped model; ``MODEL_CARD.md``: its data, evaluation and limits.

This module holds the ``[guard.classifier]`` table of the TOML file::

    [guard.classifier]
    enabled = true          # score readable messages (never encrypted rooms)
    shadow = false          # true: record what the classifier would do, enforce nothing
    hold = 0.9              # default: the shipped model's; above it a message is held
    block = 0.99            # default: the shipped model's; above it a message is refused
    brands = ["paypal.com", ...]        # official domains whose look-alikes are flagged
    known_domains = ["github.com", ...] # added to the built-in well-known domains
    new_account_days = 7    # links to unknown domains from younger accounts are flagged
    federated = true        # also score events received over federation
    max_chars = 4096        # only this much of a message is scored (time bound)

Per-room ``hold``/``block``/``enabled`` come from the room's guard settings (admin API).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion.guard.classifier.urls import DEFAULT_BRANDS, DEFAULT_KNOWN_DOMAINS
from bastion.guard.tables import check_keys, get_bool, get_number, get_str_list

__all__ = ["ClassifierConfig", "parse_classifier_config"]

_KEYS = frozenset({
    "enabled", "shadow", "hold", "block", "brands", "known_domains", "new_account_days",
    "federated", "max_chars",
})  # fmt: skip


@dataclass(frozen=True)
class ClassifierConfig:
    enabled: bool = True
    #: Record what the classifier would do (a ``warn`` signal naming the verdict) and enforce
    #: nothing of its own.
    shadow: bool = False
    #: Thresholds (0..1); None: the shipped model's defaults (``weights/model.json``).
    hold: float | None = None
    block: float | None = None
    brands: tuple[str, ...] = DEFAULT_BRANDS
    known_domains: tuple[str, ...] = DEFAULT_KNOWN_DOMAINS
    new_account_days: float = 7.0
    federated: bool = True
    max_chars: int = 4096


def _domain_list(values: tuple[str, ...], key: str) -> tuple[str, ...]:
    out = []
    for v in values:
        d = v.strip().strip(".").lower()
        if not d or "." not in d or any(c.isspace() or c in "/:@" for c in d):
            raise ValueError(f"guard.classifier.{key}: {v!r} is not a domain")
        out.append(d)
    return tuple(out)


def parse_classifier_config(table: Mapping[str, Any]) -> ClassifierConfig:
    """``[guard.classifier]`` as a :class:`ClassifierConfig` (ValueError naming the key)."""
    where = "guard.classifier"
    check_keys(table, _KEYS, where)
    hold = block = None
    if "hold" in table:
        hold = get_number(table, "hold", 0.0, where, minimum=0.0, maximum=1.0)
    if "block" in table:
        block = get_number(table, "block", 0.0, where, minimum=0.0, maximum=1.0)
    if hold is not None and block is not None and hold > block:
        raise ValueError("guard.classifier.hold must not be above guard.classifier.block")
    known = _domain_list(get_str_list(table, "known_domains", (), where), "known_domains")
    return ClassifierConfig(
        enabled=get_bool(table, "enabled", True, where),
        shadow=get_bool(table, "shadow", False, where),
        hold=hold,
        block=block,
        brands=_domain_list(get_str_list(table, "brands", DEFAULT_BRANDS, where), "brands"),
        known_domains=DEFAULT_KNOWN_DOMAINS + tuple(d for d in known if d not in DEFAULT_KNOWN_DOMAINS),
        new_account_days=get_number(table, "new_account_days", 7.0, where, maximum=3650.0),
        federated=get_bool(table, "federated", True, where),
        max_chars=int(get_number(table, "max_chars", 4096, where, minimum=64, maximum=65536,
                                 integer=True)),
    )  # fmt: skip
