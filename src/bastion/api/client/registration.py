"""Account registration (C-S API "Account registration", "User-Interactive Authentication API",
"Token-authenticated registration")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.rate_limit import TokenBuckets, retry_after_ms
from bastion.errors import limit_exceeded, missing_param

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    accounts = hs.accounts
    available_bucket = TokenBuckets(rate=1 / 3, burst=20)  # a token every 3 s, 20 at once

    async def post_register(req: Request) -> dict:
        """POST /_matrix/client/v3/register — C-S API "Account registration" (UIA; flows
        ``[m.login.dummy]`` when open, ``[m.login.registration_token, m.login.dummy]`` with
        tokens; 403 when closed; guests refused with ``M_GUEST_ACCESS_FORBIDDEN``)."""
        body = await req.json()
        return await accounts.register(body, req.query.get("kind", "user"), req.raw.remote)

    async def get_available(req: Request) -> dict:
        """GET /_matrix/client/v3/register/available — C-S API "Account registration"."""
        wait = available_bucket.take(req.raw.remote or "", hs.now_ms() / 1000)
        if wait:
            raise limit_exceeded(retry_after_ms(wait))
        username = req.query.get("username")
        if username is None:
            raise missing_param("query parameter 'username' is required")
        accounts.check_username_available(username)
        return {"available": True}

    async def get_token_validity(req: Request) -> dict:
        """GET /_matrix/client/v1/register/m.login.registration_token/validity — C-S API
        "Token-authenticated registration". Rate-limited per IP: it is a token oracle."""
        valid = accounts.check_registration_token_validity(req.query.get("token"), req.raw.remote)
        return {"valid": valid}

    router.add("POST", "/_matrix/client/v3/register", post_register, auth=False)
    router.add("GET", "/_matrix/client/v3/register/available", get_available, auth=False)
    router.add(
        "GET", "/_matrix/client/v1/register/m.login.registration_token/validity",
        get_token_validity, auth=False,
    )  # fmt: skip
