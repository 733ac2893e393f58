"""What every admin endpoint shares (C-S API "Server administration"; the guard's
``/_bastion/admin/v1/``): the admin check, and the route name an ``admin.request`` ledger record
carries (the matched route's pattern, never the raw path a client chose)."""

from __future__ import annotations

from bastion.api.http import Request
from bastion.errors import forbidden

__all__ = ["require_admin", "route_name"]


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
