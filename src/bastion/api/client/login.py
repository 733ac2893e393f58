"""Login, logout, refresh and login tokens (C-S API "Login", "POST /logout", "POST
/logout/all", "Refreshing access tokens", "POST /login/get_token")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    accounts = hs.accounts

    async def get_login(req: Request) -> dict:
        """GET /_matrix/client/v3/login — C-S API "Login": the supported login types;
        ``m.login.token`` with ``get_login_token: true`` when login tokens are offered."""
        flows: list[dict] = [{"type": "m.login.password"}]
        if hs.config.login_token_enabled:
            flows.append({"type": "m.login.token", "get_login_token": True})
        return {"flows": flows}

    async def post_login(req: Request) -> dict:
        """POST /_matrix/client/v3/login — C-S API "Login" (``m.login.password`` with an
        ``m.id.user`` identifier or the deprecated top-level ``user``; ``m.login.token`` with a
        token from /login/get_token, when offered); with ``refresh_token: true``, also a refresh
        token and the access token's ``expires_in_ms``."""
        return await accounts.login(await req.json(), req.raw.remote)

    async def refresh(req: Request) -> dict:
        """POST /_matrix/client/v3/refresh — C-S API "Refreshing access tokens": a refresh
        token (unauthenticated request) exchanged for a new access token and refresh token; the
        old access token is revoked, the old refresh token once the new pair is first used.
        Unknown or retired: 401 M_UNKNOWN_TOKEN with ``soft_logout``."""
        return await accounts.refresh(await req.json())

    async def get_token(req: Request) -> dict:
        """POST /_matrix/client/v1/login/get_token — C-S API "POST /login/get_token" (spec
        v1.7): after User-Interactive Authentication (the password, asked again every time), a
        single-use, short-lived ``m.login.token`` for another device; at most one a minute.
        400 ``M_FORBIDDEN`` when the server does not offer them (``login_token_enabled``, the
        ``m.get_login_token`` capability)."""
        return await accounts.get_login_token(req.requester, await req.json(), req.raw.remote)

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
    router.add("POST", "/_matrix/client/v1/login/get_token", get_token)
    router.add("POST", "/_matrix/client/v3/logout", logout, allow_locked=True, allow_suspended=True)
    router.add(
        "POST", "/_matrix/client/v3/logout/all", logout_all, allow_locked=True, allow_suspended=True
    )
