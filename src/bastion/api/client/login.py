"""Login, logout and refresh (C-S API "Login", "POST /logout", "POST /logout/all",
"Refreshing access tokens")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    accounts = hs.accounts

    async def get_login(req: Request) -> dict:
        """GET /_matrix/client/v3/login — C-S API "Login": the supported login types."""
        return {"flows": [{"type": "m.login.password"}]}

    async def post_login(req: Request) -> dict:
        """POST /_matrix/client/v3/login — C-S API "Login" (``m.login.password`` with an
        ``m.id.user`` identifier or the deprecated top-level ``user``); with ``refresh_token:
        true``, also a refresh token and the access token's ``expires_in_ms``."""
        return await accounts.login(await req.json(), req.raw.remote)

    async def refresh(req: Request) -> dict:
        """POST /_matrix/client/v3/refresh — C-S API "Refreshing access tokens": a refresh
        token (unauthenticated request) exchanged for a new access token and refresh token; the
        old access token is revoked, the old refresh token once the new pair is first used.
        Unknown or retired: 401 M_UNKNOWN_TOKEN with ``soft_logout``."""
        return await accounts.refresh(await req.json())

    async def logout(req: Request) -> dict:
        """POST /_matrix/client/v3/logout — invalidates the token and deletes its device."""
        await accounts.logout(req.requester, req.raw.remote)
        return {}

    async def logout_all(req: Request) -> dict:
        """POST /_matrix/client/v3/logout/all — invalidates every token of the user and
        deletes all their devices."""
        await accounts.logout_all(req.requester, req.raw.remote)
        return {}

    router.add("GET", "/_matrix/client/v3/login", get_login, auth=False)
    router.add("POST", "/_matrix/client/v3/login", post_login, auth=False)
    router.add("POST", "/_matrix/client/v3/refresh", refresh, auth=False)
    router.add("POST", "/_matrix/client/v3/logout", logout, allow_locked=True, allow_suspended=True)
    router.add(
        "POST", "/_matrix/client/v3/logout/all", logout_all, allow_locked=True, allow_suspended=True
    )
