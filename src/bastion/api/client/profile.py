"""Profiles (C-S API "Profiles", profile.yaml; extended fields of v1.16)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.identifiers import parse_user_id
from bastion.errors import MatrixError, bad_json, forbidden, invalid_param, missing_param, not_found
from bastion.services.accounts import check_profile_key

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    accounts = hs.accounts

    async def profile_of(user_id: str) -> dict:
        """A local user's profile, or a remote user's from their server (S-S API "Querying
        for information")."""
        try:
            parsed = parse_user_id(user_id, historical=True)
        except MatrixError:
            raise invalid_param("invalid user ID") from None
        if parsed.domain != hs.server_name:
            if hs.federation is None:
                raise not_found("federation is off on this server")
            return await hs.federation.queries.remote_profile(user_id)
        return accounts.get_profile(user_id)

    def own(req: Request) -> str:
        user_id = req.params["userId"]
        if user_id != req.requester.user_id:
            raise forbidden("you can only change your own profile")
        check_profile_key(req.params["keyName"])
        return user_id

    async def get_profile(req: Request) -> dict:
        """GET /_matrix/client/v3/profile/{userId} — every field of a user's profile (a remote
        user's from their server); 404 ``M_NOT_FOUND`` for unknown or deactivated users."""
        return await profile_of(req.params["userId"])

    async def get_field(req: Request) -> dict:
        """GET /_matrix/client/v3/profile/{userId}/{keyName} — one field, 404 if not set."""
        key = req.params["keyName"]
        check_profile_key(key)
        profile = await profile_of(req.params["userId"])
        if key not in profile:
            raise not_found("no such profile field")
        return {key: profile[key]}

    async def put_field(req: Request) -> dict:
        """PUT /_matrix/client/v3/profile/{userId}/{keyName} — own profile only (403); the body
        holds exactly the one property ``keyName``; the whole profile stays under 64 KiB."""
        user_id = own(req)
        key = req.params["keyName"]
        body = await req.json()
        if key not in body:
            raise missing_param(f"the body must contain the property {key!r}")
        if len(body) != 1:
            raise bad_json(f"the body must contain only the property {key!r}")
        await accounts.set_profile_field(user_id, key, body[key])
        return {}

    async def delete_field(req: Request) -> dict:
        """DELETE /_matrix/client/v3/profile/{userId}/{keyName} — own profile only; 200 whether
        or not the field existed."""
        await accounts.delete_profile_field(own(req), req.params["keyName"])
        return {}

    router.add("GET", "/_matrix/client/v3/profile/{userId}", get_profile, auth=False)
    router.add("GET", "/_matrix/client/v3/profile/{userId}/{keyName}", get_field, auth=False)
    router.add("PUT", "/_matrix/client/v3/profile/{userId}/{keyName}", put_field)
    router.add("DELETE", "/_matrix/client/v3/profile/{userId}/{keyName}", delete_field)
