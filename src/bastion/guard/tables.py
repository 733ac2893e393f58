"""Reading the guard's TOML tables (pure): unknown keys are errors, numbers are checked.

Each part of the guard parses its own table (``[guard.rate_limits]``, ``[guard.login]``, ...)
with these helpers and raises :class:`ValueError` naming the key; :mod:`bastion.config` turns it
into a ``ConfigError``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["check_keys", "get_bool", "get_number", "get_str", "get_str_list", "subtable"]


def subtable(table: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """``table[key]`` as a table (empty when absent)."""
    value = table.get(key, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}.{key} must be a table")
    return value


def check_keys(table: Mapping[str, Any], known: set[str] | frozenset[str], where: str) -> None:
    """Refuse keys this table does not have (a typo must not pass silently)."""
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")


def get_bool(table: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{where}.{key} must be true or false")
    return value


def get_number(
    table: Mapping[str, Any], key: str, default: float, where: str, *,
    minimum: float = 0.0, maximum: float = 1e12, integer: bool = False,
) -> float:  # fmt: skip
    """A number in [minimum, maximum] (an integer when ``integer``)."""
    value = table.get(key, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value
    if ok and integer and not (isinstance(value, int) or float(value).is_integer()):
        ok = False
    if not ok or not minimum <= value <= maximum:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{where}.{key} must be {kind} from {minimum:g} to {maximum:g}")
    return int(value) if integer else float(value)


def get_str(
    table: Mapping[str, Any], key: str, default: str, where: str,
    choices: tuple[str, ...] | None = None,
) -> str:  # fmt: skip
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key} must be a string")
    if choices is not None and value not in choices:
        raise ValueError(f"{where}.{key} must be one of {', '.join(choices)}")
    return value


def get_str_list(
    table: Mapping[str, Any], key: str, default: tuple[str, ...], where: str
) -> tuple[str, ...]:
    value = table.get(key, default)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}.{key} must be a list of strings")
    return tuple(value)
