"""Canonical JSON (appendices, "Signing JSON" → "Canonical JSON").

The shortest UTF-8 encoding with object keys sorted by code point, no insignificant whitespace and
no escapes beyond the required ones (``\\" \\\\ \\b \\f \\n \\r \\t`` and ``\\u00XX`` for other
control characters). Numbers are integers in ``[-(2**53)+1, 2**53-1]``: room version 6 and later
require this ("v6-canonical-json"), and Bastion produces nothing else. An integral float such as
the ``1e10`` of the spec's example is written as the integer it denotes; any other float, and any
integer outside the range, is refused with :class:`~bastion.errors.MatrixError` (``M_BAD_JSON``).

Encoding is done by orjson, whose output for these value types is exactly canonical JSON; a
single walk over the value checks types and numbers first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from bastion.errors import bad_json, not_json

MAX_SAFE_INTEGER = 2**53 - 1
_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def _check(value: Any, depth: int = 0) -> bool:
    """Validate ``value`` for canonical JSON; return True if it holds an integral float.

    Raises ``M_BAD_JSON`` for a type JSON cannot carry, a non-string key, a non-integral float or
    an integer out of range.
    """
    if depth > 100:
        raise bad_json("JSON nested too deeply")
    has_float = False
    t = type(value)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise bad_json(f"JSON object keys must be strings, not {type(k).__name__}")
            tv = type(v)
            if tv is str or tv is bool or v is None:
                continue
            if tv is int:
                if not -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
                    raise bad_json(f"integer {v} is outside the canonical JSON range ±(2**53-1)")
                continue
            if _check(v, depth + 1):
                has_float = True
        return has_float
    if t is list or t is tuple:
        for v in value:
            tv = type(v)
            if tv is str or tv is bool or v is None:
                continue
            if tv is int:
                if not -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
                    raise bad_json(f"integer {v} is outside the canonical JSON range ±(2**53-1)")
                continue
            if _check(v, depth + 1):
                has_float = True
        return has_float
    if t is str or t is bool or value is None:
        return False
    if t is int:
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise bad_json(f"integer {value} is outside the canonical JSON range ±(2**53-1)")
        return False
    if t is float:
        if value != value or value in (float("inf"), float("-inf")) or not value.is_integer():
            raise bad_json(f"float {value!r} is not allowed in canonical JSON")
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise bad_json(f"number {value!r} is outside the canonical JSON range ±(2**53-1)")
        return True
    # Mappings and sequences of other types (e.g. immutable dicts) are accepted as their JSON form.
    if isinstance(value, Mapping):
        return _check(dict(value), depth) or True
    if isinstance(value, (list, tuple)):
        return _check(list(value), depth) or True
    raise bad_json(f"value of type {t.__name__} cannot be encoded as JSON")


def _plain(value: Any) -> Any:
    """A copy of ``value`` with integral floats as ints and mappings/sequences as dicts/lists."""
    t = type(value)
    if t is float:
        return int(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is list or t is tuple or isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return {k: _plain(v) for k, v in value.items()}


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON bytes.

    Raises :class:`~bastion.errors.MatrixError` (``M_BAD_JSON``) if it cannot be encoded.
    """
    if _check(value):
        value = _plain(value)
    try:
        return orjson.dumps(value, option=_OPTS)
    except orjson.JSONEncodeError as e:  # e.g. a lone surrogate in a string
        raise bad_json(f"cannot encode as JSON: {e}") from None


def _parse_constant(name: str) -> Any:
    raise bad_json(f"{name} is not valid JSON")


def parse_json(data: bytes | str, strict: bool = True) -> Any:
    """Parse JSON text into Python values.

    With ``strict`` (room version 6 and later, and everything Bastion accepts from clients) any
    number with a fraction or exponent that is not integral, and any integer outside
    ``±(2**53-1)``, is refused. Integral floats (``1e10``) become ints, so
    ``canonical_json(parse_json(text))`` reproduces the spec's examples. Duplicate keys keep the
    last value, as every common parser does. Raises ``M_NOT_JSON`` for text that is not JSON.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise not_json(f"not valid JSON: {e}") from None
    if strict and _check(value):
        value = _plain(value)
    return value
