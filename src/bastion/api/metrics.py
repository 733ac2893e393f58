"""``GET /_bastion/metrics``: the guard's counters in the Prometheus text exposition format
(version 0.0.4) — decisions by source, outcome and status, rate-limited requests by limit, login
throttles, alerts by kind and their deliveries, and whatever else the guard's parts count
(:meth:`bastion.guard.alerts.Alerts.count`).

Not part of the Matrix spec. Access is decided on the route, by the TCP peer's address (the
client address everywhere in Bastion; no forwarding header is trusted): only addresses in
``guard.alerts.metrics_allow_ips`` (default loopback) are answered. Everyone else gets exactly
the answer an unknown endpoint gets — 404 ``M_UNRECOGNIZED``, for every method — so the
endpoint is not advertised (C-S API "Standard error response": an unknown endpoint is 404
``M_UNRECOGNIZED``; a known endpoint with the wrong method 405, which only allowed addresses
see).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from bastion.api.http import SECURITY_HEADERS, Request, Router
from bastion.errors import M_UNRECOGNIZED, MatrixError, unrecognized
from bastion.guard.alerts import CONTENT_TYPE

if TYPE_CHECKING:
    from bastion.server import HomeServer

PATH = "/_bastion/metrics"
OTHER_METHODS = ("POST", "PUT", "DELETE", "PATCH")


def register(router: Router, hs: HomeServer) -> None:
    config = hs.config.guard_config.alerts

    def require_allowed(req: Request) -> None:
        if not config.metrics_allowed(req.raw.remote):
            # The same answer as an unknown endpoint (api/http.py make_dispatcher).
            raise unrecognized("unrecognized request")

    async def metrics(req: Request) -> web.Response:
        """GET /_bastion/metrics — the Prometheus text format, to allowed addresses only."""
        require_allowed(req)
        text = hs.guard.alerts.exposition()
        headers = {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store", **SECURITY_HEADERS}
        return web.Response(body=text.encode("utf-8"), headers=headers)

    async def other(req: Request) -> web.Response:
        """Another method: 404 like an unknown endpoint, or 405 to an allowed address."""
        require_allowed(req)
        raise MatrixError(M_UNRECOGNIZED, "method not allowed here", 405)

    router.add("GET", PATH, metrics, auth=False)
    for method in OTHER_METHODS:
        router.add(method, PATH, other, auth=False)
