"""Synapse admin API "User Admin API" (and "Server Admin API" for the admin flag): list, query,
create or modify accounts, reset passwords, whois, room memberships, a user's media,
suspension.

Differences from Synapse, on purpose:

- **No "login as user"** (``POST /_synapse/admin/v1/users/{userId}/login``): Bastion never
  issues an access token for another person's account; the route answers 403 ``M_FORBIDDEN``.
- **Deactivation** is ``POST /_synapse/admin/v1/deactivate/{userId}`` (with ``erase``), not
  ``deactivated: true`` in ``PUT /v2/users``; deactivated accounts are not reactivated.
- Bastion has no guests, third-party IDs, external IDs, user types, shadow bans or consent
  tracking: those fields read as empty/false/null, and setting them to anything else is 400
  ``M_INVALID_PARAM``. ``creation_ts`` is in milliseconds.
- A password set by an admin logs the user out of every device unless ``logout_devices`` is
  false (Synapse's default too); it is a ``password.change`` record with ``by_admin``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.admin_access import admin_request, record_admin_read, require_admin, route_name
from bastion.api.http import Request, Router
from bastion.api.synapse_admin import paging
from bastion.errors import bad_json, forbidden, missing_param
from bastion.services.security_records import admin_reason

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    directory = hs.admin_directory

    def write_audit(req: Request, body: dict, user_id: str):
        return admin_request(hs, req, target=user_id, subject=user_id, reason=admin_reason(body))

    async def list_users(req: Request) -> dict:
        """GET /_synapse/admin/v2/users — Synapse admin API "User Admin API", "List Accounts"
        (``from``, ``limit``, ``name``, ``user_id``, ``guests``, ``admins``, ``deactivated``,
        ``locked``, ``order_by``, ``dir``); admins only; recorded."""
        require_admin(req)
        offset, limit = paging(req)
        out = directory.list_users(req.query, offset, limit)
        await record_admin_read(hs, req, target=None)
        return out

    async def user_details(req: Request) -> dict:
        """GET /_synapse/admin/v2/users/{userId} — Synapse admin API "User Admin API", "Query
        User Account"; admins only; recorded."""
        require_admin(req)
        user_id = req.params["userId"]
        out = directory.user_details(user_id)
        await record_admin_read(hs, req, target=user_id, subject=user_id)
        return out

    async def put_user(req: Request) -> tuple[int, dict]:
        """PUT /_synapse/admin/v2/users/{userId} — Synapse admin API "User Admin API", "Create
        or modify account" (``password``, ``logout_devices``, ``displayname``, ``avatar_url``,
        ``admin``, ``locked``); 201 when created; admins only; recorded with the change."""
        admin = require_admin(req)
        user_id = req.params["userId"]
        body = await req.json()
        return await directory.put_user(
            admin, user_id, body, write_audit(req, body, user_id), req.raw.remote
        )

    async def reset_password(req: Request) -> dict:
        """POST /_synapse/admin/v1/reset_password/{userId} — Synapse admin API "User Admin
        API", "Reset password" (``new_password``, ``logout_devices``); admins only; recorded
        with the change."""
        admin = require_admin(req)
        user_id = req.params["userId"]
        body = await req.json()
        await directory.reset_password(
            admin, user_id, body, write_audit(req, body, user_id), req.raw.remote
        )
        return {}

    async def whois(req: Request) -> dict:
        """GET /_synapse/admin/v1/whois/{userId} — Synapse admin API "User Admin API", "Query
        current sessions for a user" (the C-S API "Server administration" whois); admins only;
        recorded."""
        require_admin(req)
        user_id = req.params["userId"]
        directory.local_user(user_id)
        await record_admin_read(hs, req, target=user_id, subject=user_id)
        return hs.accounts.whois(user_id)

    async def joined_rooms(req: Request) -> dict:
        """GET /_synapse/admin/v1/users/{userId}/joined_rooms — Synapse admin API "User Admin
        API", "List room memberships of a user"; admins only; recorded."""
        require_admin(req)
        user_id = req.params["userId"]
        out = directory.joined_rooms(user_id)
        await record_admin_read(hs, req, target=user_id, subject=user_id)
        return out

    async def user_media(req: Request) -> dict:
        """GET /_synapse/admin/v1/users/{userId}/media — Synapse admin API "User Admin API",
        "List media uploaded by a user" (``from``, ``limit``, ``order_by``, ``dir``); admins
        only; recorded."""
        require_admin(req)
        user_id = req.params["userId"]
        offset, limit = paging(req)
        out = directory.list_user_media(user_id, req.query, offset, limit)
        await record_admin_read(hs, req, target=user_id, subject=user_id)
        return out

    async def get_admin(req: Request) -> dict:
        """GET /_synapse/admin/v1/users/{userId}/admin — Synapse admin API "Server Admin API",
        "Get whether a user is a server administrator or not"; admins only; recorded."""
        require_admin(req)
        user_id = req.params["userId"]
        row = directory.local_user(user_id)
        await record_admin_read(hs, req, target=user_id, subject=user_id)
        return {"admin": bool(row["is_admin"])}

    async def put_admin(req: Request) -> dict:
        """PUT /_synapse/admin/v1/users/{userId}/admin — Synapse admin API "Server Admin API",
        "Change whether a user is a server administrator or not" (``admin``); an admin cannot
        demote themself; admins only; recorded with the change."""
        admin = require_admin(req)
        user_id = req.params["userId"]
        body = await req.json()
        value = body.get("admin")
        if value is None:
            raise missing_param("'admin' is required")
        if not isinstance(value, bool):
            raise bad_json("'admin' must be a boolean")
        directory.local_user(user_id)
        await directory.put_user(
            admin, user_id, {"admin": value}, write_audit(req, body, user_id), req.raw.remote
        )
        return {}

    async def suspend(req: Request) -> dict:
        """PUT /_synapse/admin/v1/suspend/{userId} — Synapse admin API "User Admin API",
        "Suspend/Unsuspend Account" (``suspend``); the C-S API's suspension; admins only;
        recorded with the change."""
        require_admin(req)
        user_id = req.params["userId"]
        body = await req.json()
        value = body.get("suspend")
        if value is None:
            raise missing_param("'suspend' is required")
        if not isinstance(value, bool):
            raise bad_json("'suspend' must be a boolean")
        await hs.accounts.set_moderation_flag(
            req.requester, user_id, "suspended", value, route=route_name(req),
            reason=admin_reason(body), ip=req.raw.remote,
        )  # fmt: skip
        return {f"user_{user_id}_suspended": value}

    async def login_as_user(req: Request) -> dict:
        """POST /_synapse/admin/v1/users/{userId}/login — Synapse admin API "User Admin API",
        "Login as a user": not offered by Bastion (403 ``M_FORBIDDEN``); admins only."""
        require_admin(req)
        raise forbidden(
            "Bastion does not issue access tokens for other users' accounts (no login as user)"
        )

    router.add("GET", "/_synapse/admin/v2/users", list_users)
    router.add("GET", "/_synapse/admin/v2/users/{userId}", user_details)
    router.add("PUT", "/_synapse/admin/v2/users/{userId}", put_user)
    router.add("POST", "/_synapse/admin/v1/reset_password/{userId}", reset_password)
    router.add("GET", "/_synapse/admin/v1/whois/{userId}", whois)
    router.add("GET", "/_synapse/admin/v1/users/{userId}/joined_rooms", joined_rooms)
    router.add("GET", "/_synapse/admin/v1/users/{userId}/media", user_media)
    router.add("GET", "/_synapse/admin/v1/users/{userId}/admin", get_admin)
    router.add("PUT", "/_synapse/admin/v1/users/{userId}/admin", put_admin)
    router.add("PUT", "/_synapse/admin/v1/suspend/{userId}", suspend)
    router.add("POST", "/_synapse/admin/v1/users/{userId}/login", login_as_user)
