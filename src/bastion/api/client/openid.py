"""OpenID (C-S API "OpenID", openid.yaml): a token that proves the requester's Matrix ID to a
third party (widgets, integration managers), which exchanges it at this server's federation
listener (S-S API "OpenID", api/federation/openid.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.rate_limit import TokenBuckets, retry_after_ms
from bastion.errors import forbidden, limit_exceeded

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: Tokens a user may ask for: one every 2 s, 20 at once (a client opening several widgets at
#: start-up asks for one each). The spec allows 429 here; the bound also bounds the table.
REQUEST_RATE, REQUEST_BURST = 0.5, 20


def register(router: Router, hs: HomeServer) -> None:
    buckets = TokenBuckets(rate=REQUEST_RATE, burst=REQUEST_BURST)

    async def request_token(req: Request) -> dict:
        """POST /_matrix/client/v3/user/{userId}/openid/request_token — C-S API "OpenID":
        ``{access_token, token_type: "Bearer", matrix_server_name, expires_in}``, the token good
        for an hour. Only for oneself (403 ``M_FORBIDDEN`` otherwise). The body is an empty
        object reserved for future use: any object is accepted, as is an empty body."""
        user_id = req.requester.user_id
        if req.params["userId"] != user_id:
            raise forbidden("an OpenID token can only be requested for yourself")
        await req.json(allow_empty=True)  # a JSON object, or nothing
        wait = buckets.take(user_id, hs.now_ms() / 1000)
        if wait:
            raise limit_exceeded(retry_after_ms(wait))
        return await hs.openid.issue(user_id)

    router.add("POST", "/_matrix/client/v3/user/{userId}/openid/request_token", request_token)
