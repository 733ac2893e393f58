"""The contract between /sync and the services that contribute to it (C-S API "Syncing").

A sync token names a point in every stream: ``pos`` in the global persisted stream (room events,
state, membership, to-device, device lists, account data, receipts — one strictly increasing
position shared by all, see ``SqliteStore``) and ``typing``, the serial of the in-memory typing
stream. Tokens look like ``s<pos>_<typing>``.

/sync fixes ``upto`` (the committed position and typing serial) before reading, and every
contributor adds only what changed in ``(since, upto]``: so anything in a response moves
``next_batch`` forward (clients drop responses whose ``next_batch`` did not change), and nothing
is skipped between two syncs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion.errors import invalid_param

_TOKEN = re.compile(r"s(\d{1,18})_(\d{1,18})")


@dataclass(frozen=True, slots=True)
class SyncToken:
    pos: int
    typing: int = 0

    def __str__(self) -> str:
        return f"s{self.pos}_{self.typing}"

    @classmethod
    def parse(cls, text: str) -> SyncToken:
        m = _TOKEN.fullmatch(text or "")
        if not m:
            raise invalid_param("invalid sync token")
        return cls(int(m.group(1)), int(m.group(2)))


@dataclass
class SyncContext:
    """What one /sync request is computing."""

    requester: Any  # bastion.storage.sqlite.accounts.Requester
    since: SyncToken | None  # None for an initial sync
    upto: SyncToken
    filter: dict  # the resolved filter object (C-S API "Filtering")
    full_state: bool = False
    #: Rooms the user is joined to at ``upto``.
    joined_room_ids: set[str] = field(default_factory=set)


class SyncContributor(Protocol):
    """A service that adds its part to a /sync response."""

    def contribute_global(self, ctx: SyncContext, response: dict) -> None:
        """Add top-level sections (``to_device``, ``device_lists``, ``account_data`` …)."""

    def contribute_room(self, ctx: SyncContext, room_id: str, room: dict) -> None:
        """Add per-room sections of a joined room (``ephemeral``, ``account_data`` …)."""

    def rooms_changed(self, ctx: SyncContext) -> set[str] | None:
        """On an incremental sync (``ctx.since`` set, no ``full_state``): the rooms for which
        :meth:`contribute_room` may add something (a superset is fine; None: any room). A
        joined room with nothing new in its timeline or state that no contributor names is
        left out of the response without being computed."""
