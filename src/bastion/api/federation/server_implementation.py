"""S-S API "Server implementation"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion import __version__ as BASTION_VERSION
from bastion.api.http import Request, Router

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    async def version(req: Request) -> dict:
        """GET /_matrix/federation/v1/version — S-S API "Server implementation" (version.yaml).
        Unauthenticated."""
        return {"server": {"name": "Bastion", "version": BASTION_VERSION}}

    router.add("GET", "/_matrix/federation/v1/version", version, auth=False)
