"""A room's guard settings (pure), set by server admins through
``PUT /_bastion/admin/v1/guard/rooms/{roomId}/settings`` and read by the parts through
:meth:`bastion.guard.service.GuardService.room_settings`::

    {"classifier": {"enabled": true, "hold_per_mille": 700, "block_per_mille": 970},
     "detectors": {"enabled": true, "message_flood": false, ...}}

Every key is optional; an absent key means the server's default (``[guard.classifier]``,
``[guard.detectors]``). ``classifier.hold_per_mille`` / ``classifier.block_per_mille``: the
score, in thousandths (integers 0..1000: request bodies are canonical JSON, which has no
floats), from which the classifier holds an event for a moderator / blocks it (hold <= block).
:meth:`~bastion.guard.service.GuardService.room_settings` gives the parts the stored settings
with the thresholds also as fractions, ``classifier.hold`` / ``classifier.block`` (0..1)
(:func:`runtime_view`).
``detectors.<name>``: one detector on or off (the name of its signal source without
``detector.``). :class:`ValueError` names the offending key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bastion.guard.tables import check_keys, get_bool, get_number

__all__ = ["parse_room_settings", "runtime_view"]

_DETECTOR_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: The most detector switches one room may carry.
MAX_DETECTOR_KEYS = 64


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be an object")
    return value


def parse_room_settings(settings: Any) -> dict[str, Any]:
    """The settings as stored (only the keys given), or :class:`ValueError`."""
    table = _table(settings, "settings")
    check_keys(table, {"classifier", "detectors"}, "settings")
    out: dict[str, Any] = {}
    if "classifier" in table:
        cls = _table(table["classifier"], "settings.classifier")
        where = "settings.classifier"
        check_keys(cls, {"enabled", "hold_per_mille", "block_per_mille"}, where)
        parsed: dict[str, Any] = {}
        if "enabled" in cls:
            parsed["enabled"] = get_bool(cls, "enabled", True, where)
        for key in ("hold_per_mille", "block_per_mille"):
            if key in cls:
                parsed[key] = int(get_number(cls, key, 0, where, maximum=1000, integer=True))
        hold, block = parsed.get("hold_per_mille"), parsed.get("block_per_mille")
        if hold is not None and block is not None and hold > block:
            raise ValueError("settings.classifier.hold_per_mille must not be above block_per_mille")
        out["classifier"] = parsed
    if "detectors" in table:
        det = _table(table["detectors"], "settings.detectors")
        if len(det) > MAX_DETECTOR_KEYS:
            raise ValueError(f"settings.detectors has at most {MAX_DETECTOR_KEYS} keys")
        switches: dict[str, bool] = {}
        for key in det:
            if not isinstance(key, str) or not _DETECTOR_NAME.fullmatch(key):
                raise ValueError(f"settings.detectors: {str(key)[:64]!r} is not a detector name")
            switches[key] = get_bool(det, key, True, "settings.detectors")
        out["detectors"] = switches
    return out


def runtime_view(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as the parts read them: the stored ones, with the classifier's thresholds
    also as fractions (``hold`` / ``block``, 0..1)."""
    out = dict(stored)
    cls = stored.get("classifier")
    if isinstance(cls, Mapping):
        view = dict(cls)
        for key in ("hold", "block"):
            per_mille = cls.get(f"{key}_per_mille")
            if isinstance(per_mille, int):
                view[key] = per_mille / 1000
        out["classifier"] = view
    return out
