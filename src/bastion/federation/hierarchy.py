"""Space hierarchies of rooms this server is not in (S-S API "Spaces", space_hierarchy.yaml):
``GET /_matrix/federation/v1/hierarchy/{roomId}`` on another server, for the walk of
:mod:`bastion.services.space_hierarchy` (which checks and trims the answer)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING
from urllib.parse import quote

from bastion.federation.resolver import FederationError

if TYPE_CHECKING:
    from bastion.federation.client import FederationClient

log = logging.getLogger("bastion.federation.hierarchy")


class FederationHierarchy:
    """Implements :class:`bastion.services.remote.RemoteHierarchy`."""

    def __init__(self, client: FederationClient) -> None:
        self.client = client

    async def room_hierarchy(
        self, server: str, room_id: str, suggested_only: bool, timeout: float
    ) -> dict | None:
        path = f"/_matrix/federation/v1/hierarchy/{quote(room_id, safe='')}"
        query = {"suggested_only": "true" if suggested_only else "false"}
        try:
            async with asyncio.timeout(timeout):  # resolution included
                status, body = await self.client.request(
                    "GET", server, path, query=query, timeout=timeout
                )
        except (FederationError, OSError, ValueError, TimeoutError) as e:
            log.info("hierarchy of %s from %s failed: %s", room_id, server, e)
            return None
        if status != 200 or not isinstance(body, dict):
            log.info("hierarchy of %s from %s: status %d", room_id, server, status)
            return None
        return body
