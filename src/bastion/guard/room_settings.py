"""A room's guard settings (pure), set by server admins through
``PUT /_bastion/admin/v1/guard/rooms/{roomId}/settings`` and read by the parts through
:meth:`bastion.guard.service.GuardService.room_settings`::

    {"classifier": {"enabled": true, "hold": 0.7, "block": 0.97},
     "detectors": {"enabled": true, "message_flood": false, ...}}

Every key is optional; an absent key means the server's default (``[guard.classifier]``,
``[guard.detectors]``). ``classifier.hold`` / ``classifier.block``: the score (0..1) from which
the classifier holds an event for a moderator / blocks it (hold <= block).
``detectors.<name>``: one detector on or off (the name of its signal source without
``detector.``). :class:`ValueError` names the offending key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bastion.guard.tables import check_keys, get_bool, get_number

__all__ = ["parse_room_settings"]

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
        check_keys(cls, {"enabled", "hold", "block"}, where)
        parsed: dict[str, Any] = {}
        if "enabled" in cls:
            parsed["enabled"] = get_bool(cls, "enabled", True, where)
        for key in ("hold", "block"):
            if key in cls:
                parsed[key] = get_number(cls, key, 0.0, where, minimum=0.0, maximum=1.0)
        if "hold" in parsed and "block" in parsed and parsed["hold"] > parsed["block"]:
            raise ValueError("settings.classifier.hold must not be above settings.classifier.block")
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
