"""Per-user rate-limit overrides, for bots and bridges (the guard's admin API, issue 9):
``GET|PUT|DELETE /_bastion/admin/v1/guard/users/{userId}/rate_limits``.

Not part of the Matrix spec. Synapse's nearest is ``/_synapse/admin/v1/users/<user_id>/
override_ratelimit`` (``messages_per_second`` and ``burst_count`` for its message limit, 0 for
none); here an override names any limit keyed by the user (``bastion.guard.limits.
USER_LIMITS``) with its own ``{per_second, burst}``, ``null`` for no limit, and ``{"*": null}``
lifts every limit (and the detectors skip the user).

* ``GET`` → ``{"user_id", "overrides": {...}, "limits": {name: {per_second, burst} | null}}``
  (``limits``: what applies to the user now, overrides and defaults together);
* ``PUT`` with ``{"overrides": {...}, "reason"?}`` replaces the user's overrides and answers as
  ``GET``;
* ``DELETE`` (optional body ``{"reason"}``) removes them.

Server admins only (403 ``M_FORBIDDEN``); local users only (400 ``M_INVALID_PARAM``), existing
ones (404 ``M_NOT_FOUND``). Every call is an ``admin.request`` record; each change is also a
``guard.rate_override`` record, in the transaction that makes it
(:meth:`bastion.guard.rate_limiter.RateLimits.set_overrides`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.admin_access import record_admin_read, require_admin
from bastion.api.http import Request, Router
from bastion.errors import bad_json, invalid_param, missing_param
from bastion.guard.limits import overrides_json, parse_overrides
from bastion.guard.rate_limiter import limits_json
from bastion.services.security_records import admin_reason

if TYPE_CHECKING:
    from bastion.server import HomeServer

PATH = "/_bastion/admin/v1/guard/users/{userId}/rate_limits"


def register(router: Router, hs: HomeServer) -> None:
    limits = hs.guard.limits

    def target(req: Request) -> str:
        require_admin(req)
        user_id: str = hs.accounts.moderation_target(req.params["userId"])["user_id"]
        return user_id

    def route_name(req: Request) -> str:
        return f"{req.method} {PATH}"

    def answer(user_id: str) -> dict:
        return {
            "user_id": user_id,
            "overrides": overrides_json(limits.overrides(user_id)),
            "limits": limits_json(limits.effective(user_id)),
        }

    async def get_limits(req: Request) -> dict:
        """GET /_bastion/admin/v1/guard/users/{userId}/rate_limits — the user's overrides and
        the limits that apply to them; admins only; recorded."""
        user_id = target(req)
        await record_admin_read(hs, req, target=user_id, subject=user_id)
        return answer(user_id)

    async def put_limits(req: Request) -> dict:
        """PUT /_bastion/admin/v1/guard/users/{userId}/rate_limits — replace the user's
        overrides (``overrides``, optional ``reason``); admins only; recorded."""
        user_id = target(req)
        body = await req.json()
        if "overrides" not in body:
            raise missing_param("'overrides' is required")
        try:
            overrides = parse_overrides(body["overrides"])
        except ValueError as e:
            raise (bad_json if not isinstance(body["overrides"], dict) else invalid_param)(
                str(e)
            ) from None
        await limits.set_overrides(
            req.requester.user_id, user_id, overrides, route=route_name(req),
            reason=admin_reason(body), ip=req.raw.remote,
        )  # fmt: skip
        return answer(user_id)

    async def delete_limits(req: Request) -> dict:
        """DELETE /_bastion/admin/v1/guard/users/{userId}/rate_limits — remove the user's
        overrides (optional ``reason``); admins only; recorded."""
        user_id = target(req)
        body = await req.json(allow_empty=True)
        await limits.set_overrides(
            req.requester.user_id, user_id, None, route=route_name(req),
            reason=admin_reason(body), ip=req.raw.remote,
        )  # fmt: skip
        return answer(user_id)

    router.add("GET", PATH, get_limits)
    router.add("PUT", PATH, put_limits)
    router.add("DELETE", PATH, delete_limits)
