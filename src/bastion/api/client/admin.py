"""Server administration (C-S API "Server administration", admin.yaml): whois, account
suspension and locking.

Every admin API call (a call that needs the admin privilege) is an ``admin.request`` ledger
record (actor, route, target, the optional ``reason`` of a request body, client IP), committed
before the answer; a moderation change is also its ``account.lock`` (...) record, both in the
transaction that makes the change (:mod:`bastion.services.security_records`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.admin_access import record_admin_read, require_admin, route_name
from bastion.api.http import Request, Router
from bastion.errors import forbidden, missing_param, not_found
from bastion.services.accounts import bad_json
from bastion.services.security_records import admin_reason

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    accounts = hs.accounts

    async def record_read(req: Request, user_id: str) -> None:
        """An admin read of a local user's data: recorded before the answer goes out."""
        await record_admin_read(hs, req, target=user_id, subject=user_id)

    async def whois(req: Request) -> dict:
        """GET /_matrix/client/v3/admin/whois/{userId} — server admins, or the user themself."""
        user_id = req.params["userId"]
        if not req.requester.is_admin and user_id != req.requester.user_id:
            raise forbidden("you may only look up yourself")
        if hs.store.get_user(user_id) is None:
            raise not_found("no such user")
        if user_id != req.requester.user_id:
            await record_read(req, user_id)
        return accounts.whois(user_id)

    def flag_handlers(flag: str, key: str, name: str):
        async def get_flag(req: Request) -> dict:
            require_admin(req)
            row = accounts.moderation_target(req.params["userId"])
            await record_read(req, row["user_id"])
            return {key: bool(row[flag])}

        async def put_flag(req: Request) -> dict:
            require_admin(req)
            body = await req.json()
            value = body.get(key)
            if value is None:
                raise missing_param(f"'{key}' is required")
            if not isinstance(value, bool):
                raise bad_json(f"'{key}' must be a boolean")
            await accounts.set_moderation_flag(
                req.requester, req.params["userId"], flag, value, route=route_name(req),
                reason=admin_reason(body), ip=req.raw.remote,
            )  # fmt: skip
            return {key: value}

        get_flag.__doc__ = f"GET /_matrix/client/v1/admin/{name}/{{userId}} — C-S API " \
            f'"Server administration": whether the account is {key}; admins only; recorded.'  # fmt: skip
        put_flag.__doc__ = f"PUT /_matrix/client/v1/admin/{name}/{{userId}} — C-S API " \
            f'"Server administration": set {key} (optional ``reason``); admins only; recorded.'  # fmt: skip
        return get_flag, put_flag

    router.add("GET", "/_matrix/client/v3/admin/whois/{userId}", whois)
    for flag, key, name in (("suspended", "suspended", "suspend"), ("locked", "locked", "lock")):
        get_flag, put_flag = flag_handlers(flag, key, name)
        router.add("GET", f"/_matrix/client/v1/admin/{name}/{{userId}}", get_flag)
        router.add("PUT", f"/_matrix/client/v1/admin/{name}/{{userId}}", put_flag)
