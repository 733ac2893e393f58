"""Server discovery and version negotiation (C-S API "Server Discovery", "API Standards" →
"GET /_matrix/client/versions")."""

from __future__ import annotations

from bastion.api.http import Request, Router

#: Spec versions whose Client-Server API we conform to, for the parts clients rely on.
SUPPORTED_VERSIONS = ["v1.11", "v1.12"]


def register(router: Router, hs) -> None:
    async def well_known(req: Request) -> dict:
        """GET /.well-known/matrix/client — ``m.homeserver.base_url``."""
        return {"m.homeserver": {"base_url": hs.config.base_url}}

    async def versions(req: Request) -> dict:
        """GET /_matrix/client/versions — authentication optional."""
        return {"versions": SUPPORTED_VERSIONS, "unstable_features": {}}

    router.add("GET", "/.well-known/matrix/client", well_known, auth=False)
    router.add("GET", "/_matrix/client/versions", versions, auth=False)
