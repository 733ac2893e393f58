"""rooms storage."""

from __future__ import annotations

SCHEMA = ""
STREAMS: list[tuple[str, str]] = []


class RoomsStore:
    pass
