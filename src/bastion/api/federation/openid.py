"""S-S API "OpenID" (openid.yaml): a third party exchanges an OpenID token a user of this server
gave it (C-S API "OpenID", api/client/openid.py) for that user's ID."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.rate_limit import TokenBuckets, retry_after_ms
from bastion.errors import M_UNKNOWN_TOKEN, MatrixError, limit_exceeded, missing_param

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: Exchanges per client address: 5 a second, 50 at once. An integration manager exchanges one
#: token per widget a user opens; a guesser of 256-bit tokens is slowed for nothing.
USERINFO_RATE, USERINFO_BURST = 5.0, 50


def register(router: Router, hs: HomeServer) -> None:
    buckets = TokenBuckets(rate=USERINFO_RATE, burst=USERINFO_BURST)

    async def userinfo(req: Request) -> dict:
        """GET /_matrix/federation/v1/openid/userinfo?access_token= — S-S API "OpenID":
        ``{"sub": user_id}`` for a token this server issued that has not expired. Not
        authenticated with X-Matrix: the caller is whatever service the user handed the token
        to (the spec's endpoint has no ``security``), so it is limited per client address.
        Every token that does not answer (unknown, expired, its account deactivated or locked)
        gets the same 401 ``M_UNKNOWN_TOKEN``."""
        wait = buckets.take(req.raw.remote or "", hs.now_ms() / 1000)
        if wait:
            raise limit_exceeded(retry_after_ms(wait))
        token = req.query.get("access_token")
        if token is None:
            raise missing_param("query parameter 'access_token' is required")
        user_id = await hs.openid.user_of(token)
        if user_id is None:
            raise MatrixError(M_UNKNOWN_TOKEN, "Access token unknown or expired", 401)
        return {"sub": user_id}

    router.add("GET", "/_matrix/federation/v1/openid/userinfo", userinfo, auth=False)
