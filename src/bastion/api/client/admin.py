"""Server administration (C-S API "Server administration", admin.yaml): whois, account
suspension and locking. Every moderation change is audited in the same transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.errors import forbidden, missing_param, not_found
from bastion.services.accounts import bad_json

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    accounts = hs.accounts

    def require_admin(req: Request) -> None:
        if not req.requester.is_admin:
            raise forbidden("only server administrators may do this")

    async def whois(req: Request) -> dict:
        """GET /_matrix/client/v3/admin/whois/{userId} — server admins, or the user themself."""
        user_id = req.params["userId"]
        if not req.requester.is_admin and user_id != req.requester.user_id:
            raise forbidden("you may only look up yourself")
        if hs.store.get_user(user_id) is None:
            raise not_found("no such user")
        return accounts.whois(user_id)

    def flag_handlers(flag: str, key: str, name: str):
        async def get_flag(req: Request) -> dict:
            require_admin(req)
            row = accounts.moderation_target(req.params["userId"])
            return {key: bool(row[flag])}

        async def put_flag(req: Request) -> dict:
            require_admin(req)
            body = await req.json()
            value = body.get(key)
            if value is None:
                raise missing_param(f"'{key}' is required")
            if not isinstance(value, bool):
                raise bad_json(f"'{key}' must be a boolean")
            await accounts.set_moderation_flag(req.requester, req.params["userId"], flag, value)
            return {key: value}

        get_flag.__doc__ = f"GET /_matrix/client/v1/admin/{name}/{{userId}} — C-S API " \
            f'"Server administration": whether the account is {key}; admins only.'  # fmt: skip
        put_flag.__doc__ = f"PUT /_matrix/client/v1/admin/{name}/{{userId}} — C-S API " \
            f'"Server administration": set {key}; admins only; audited.'  # fmt: skip
        return get_flag, put_flag

    router.add("GET", "/_matrix/client/v3/admin/whois/{userId}", whois)
    for flag, key, name in (("suspended", "suspended", "suspend"), ("locked", "locked", "lock")):
        get_flag, put_flag = flag_handlers(flag, key, name)
        router.add("GET", f"/_matrix/client/v1/admin/{name}/{{userId}}", get_flag)
        router.add("PUT", f"/_matrix/client/v1/admin/{name}/{{userId}}", put_flag)
