"""(Skeleton of the contract: the ratelimit part fills this module; tables in migration 0005.)"""

from __future__ import annotations

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []


class GuardLimitsStore(StoreBase):
    pass
