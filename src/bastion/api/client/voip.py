"""Voice over IP (C-S API "Voice over IP": GET /voip/turnServer) and third-party networks
(C-S API "Third-party Networks": GET /thirdparty/protocols), both asked by Element at start-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.turn import turn_credentials
from bastion.errors import not_found

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    async def turn_server(req: Request) -> dict:
        """GET /_matrix/client/v3/voip/turnServer — credentials for the configured TURN server
        (``turn_uris``, ``turn_shared_secret``, ``turn_user_lifetime``; see core/turn.py). With
        no TURN server configured the answer is ``{}``, as Synapse answers: clients then call
        without a relay rather than treating the server as broken."""
        config = hs.config
        if not config.turn_uris or not config.turn_shared_secret:
            return {}
        return turn_credentials(
            config.turn_shared_secret,
            req.requester.user_id,
            hs.now_ms(),
            config.turn_user_lifetime,
            list(config.turn_uris),
        )

    async def protocols(req: Request) -> dict:
        """GET /_matrix/client/v3/thirdparty/protocols — the protocols bridged by this server's
        application services, by name. Bastion has no application services: ``{}``."""
        return {}

    async def protocol(req: Request) -> dict:
        """GET /_matrix/client/v3/thirdparty/protocol/{protocol} — 404 for a protocol no
        application service provides (here: every protocol)."""
        raise not_found("no application service provides this protocol")

    router.add("GET", "/_matrix/client/v3/voip/turnServer", turn_server)
    router.add("GET", "/_matrix/client/v3/thirdparty/protocols", protocols)
    router.add("GET", "/_matrix/client/v3/thirdparty/protocol/{protocol}", protocol)
