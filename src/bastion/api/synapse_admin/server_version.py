"""Synapse admin API "Server Version API": ``GET /_synapse/admin/v1/server_version``.

Synapse answers it without authentication; Bastion, like every admin route, for server admins
only (the version of a server is information for its operators)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion import __version__
from bastion.api.admin_access import record_admin_read, require_admin
from bastion.api.http import Request, Router

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    async def server_version(req: Request) -> dict:
        """GET /_synapse/admin/v1/server_version — Synapse admin API "Server Version API":
        ``{"server_version": "Bastion <version>"}``; admins only; recorded."""
        require_admin(req)
        await record_admin_read(hs, req, target=None)
        return {"server_version": f"Bastion {__version__}"}

    router.add("GET", "/_synapse/admin/v1/server_version", server_version)
