"""The login defence's admin API (issue 9): see and lift failed-login throttles.

- ``GET /_bastion/admin/v1/guard/throttles[?reason=]``: the keys waiting now, each ``kind`` (account,
  device, devices, address, prefix, regtoken-address, regtoken-prefix), ``key``, ``failures``,
  ``level`` (waits started) and ``until`` (ms since the epoch).
- ``DELETE /_bastion/admin/v1/guard/throttles/{key}``: lift one (its failures are forgotten),
  optional body ``{"reason": ...}``; 404 ``M_NOT_FOUND`` when the key has nothing to lift, 400
  ``M_INVALID_PARAM`` when it is not a key. The key may contain ``/`` (a prefix) and is best
  percent-encoded.

Server admins only (403 ``M_FORBIDDEN``); every call is an ``admin.request`` ledger record, a lift
also a ``guard.throttle_lift`` record, in one transaction (like the C-S API "Server
administration" endpoints in :mod:`bastion.api.client.admin`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.admin_access import query_reason, require_admin, route_name
from bastion.api.http import Request, Router
from bastion.services.security_records import admin_reason

if TYPE_CHECKING:
    from bastion.server import HomeServer

PREFIX = "/_bastion/admin/v1/guard"


def register(router: Router, hs: HomeServer) -> None:

    async def list_throttles(req: Request) -> dict:
        """GET /_bastion/admin/v1/guard/throttles — the active throttles; admins only."""
        admin = require_admin(req)
        defence = hs.guard.login
        await defence.record_read(
            admin=admin, route=route_name(req), ip=req.raw.remote, reason=query_reason(req)
        )
        return {"throttles": defence.active_throttles()}

    async def lift_throttle(req: Request) -> dict:
        """DELETE /_bastion/admin/v1/guard/throttles/{key} — lift one; admins only."""
        admin = require_admin(req)
        body = await req.json(allow_empty=True)
        await hs.guard.login.lift(
            req.params["key"], admin=admin, route=route_name(req), ip=req.raw.remote,
            reason=admin_reason(body),
        )  # fmt: skip
        return {}

    router.add("GET", f"{PREFIX}/throttles", list_throttles)
    router.add("DELETE", f"{PREFIX}/throttles/{{key*}}", lift_throttle)
