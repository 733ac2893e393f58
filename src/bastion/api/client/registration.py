"""Account registration (C-S API "Account registration", "User-Interactive Authentication API",
"Token-authenticated registration")."""

from __future__ import annotations

from bastion.api.http import Request, Router, error
from bastion.services.accounts import TokenBucket, rate_limited


def register(router: Router, hs) -> None:
    accounts = hs.accounts
    available_bucket = TokenBucket(capacity=20, refill_ms=3000)

    async def post_register(req: Request) -> dict:
        """POST /_matrix/client/v3/register — C-S API "Account registration" (UIA; flows
        ``[m.login.dummy]`` when open, ``[m.login.registration_token, m.login.dummy]`` with
        tokens; 403 when closed; guests refused with ``M_GUEST_ACCESS_FORBIDDEN``)."""
        body = await req.json()
        return await accounts.register(body, req.query.get("kind", "user"), req.raw.remote)

    async def get_available(req: Request) -> dict:
        """GET /_matrix/client/v3/register/available — C-S API "Account registration"."""
        wait = available_bucket.take(req.raw.remote or "", hs.now_ms())
        if wait:
            raise rate_limited(wait)
        username = req.query.get("username")
        if username is None:
            raise error("M_MISSING_PARAM", "query parameter 'username' is required")
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
