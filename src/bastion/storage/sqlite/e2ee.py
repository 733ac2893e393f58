"""e2ee storage."""

from __future__ import annotations

SCHEMA = ""
STREAMS: list[tuple[str, str]] = []


class E2EEStore:
    pass
