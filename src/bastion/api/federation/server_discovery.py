"""S-S API "Server discovery": ``/.well-known/matrix/server`` when configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    delegated = hs.config.federation_well_known_server
    if not delegated:
        return  # not configured: the path stays unknown (404 M_UNRECOGNIZED)

    async def well_known_server(req: Request) -> dict:
        """GET /.well-known/matrix/server — "Resolving server names" (wellknown.yaml)."""
        return {"m.server": delegated}

    router.add("GET", "/.well-known/matrix/server", well_known_server, auth=False)
