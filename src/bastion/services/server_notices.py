"""(Skeleton of the contract: the notices part replaces this module.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.server import HomeServer


class ServerNotices:
    """``hs.server_notices``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def send_notice(
        self, user_id: str, body: str, *, notice_type: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:  # fmt: skip
        raise NotImplementedError
