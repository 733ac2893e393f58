"""What every admin endpoint shares (C-S API "Server administration"; the guard's
``/_bastion/admin/v1/``): the admin check, and the route name an ``admin.request`` ledger record
carries (the matched route's pattern, never the raw path a client chose)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.api.http import Request
from bastion.errors import forbidden
from bastion.services.security_records import admin_request_in

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import Txn

__all__ = ["admin_request", "record_admin_read", "require_admin", "route_name"]


def require_admin(req: Request) -> str:
    """403 ``M_FORBIDDEN`` unless the requester is a server administrator; their user ID."""
    requester = req.requester
    if requester is None or not requester.is_admin:
        raise forbidden("only server administrators may do this")
    user_id: str = requester.user_id
    return user_id


def route_name(req: Request) -> str:
    """The method and the matched route's pattern (the raw path only if no route matched)."""
    return f"{req.method} {req.route.name if req.route is not None else req.raw.path}"


def admin_request(
    hs: HomeServer, req: Request, *, target: str | None, reason: str | None = None,
    subject: str | None = None,
) -> Callable[[Txn], None]:  # fmt: skip
    """The call's ``admin.request`` ledger record, to write inside the transaction of the
    change it makes (``subject``: the local user whose data the call reads or changes)."""
    now = hs.now_ms()

    def fn(conn: Txn) -> None:
        admin_request_in(
            hs.store, conn, actor=req.requester.user_id, route=route_name(req), ts=now,
            target=target, subject=subject, reason=reason, origin=req.raw.remote,
        )  # fmt: skip

    return fn


async def record_admin_read(
    hs: HomeServer, req: Request, *, target: str | None, subject: str | None = None
) -> None:
    """An admin read: its ``admin.request`` record, committed before the answer goes out."""
    await hs.store.transaction(admin_request(hs, req, target=target, subject=subject))
