"""Type names for the JSON values the core handles.

Events, keys and request bodies are plain ``dict`` objects parsed from untrusted JSON: the core
checks each field's type where it reads it, so a JSON object is typed as a ``dict`` of ``Any``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

#: A JSON object as parsed (an event, a key response, a request body).
JsonDict: TypeAlias = dict[str, Any]
#: A read-only view of a JSON object.
JsonMapping: TypeAlias = Mapping[str, Any]
#: A room state key: ``(event type, state key)``.
StateKey: TypeAlias = tuple[str, str]

__all__ = ["JsonDict", "JsonMapping", "StateKey"]
