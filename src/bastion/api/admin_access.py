"""What every admin endpoint shares (C-S API "Server administration"; the guard's and
Bastion's ``/_bastion/admin/v1/``): the admin check, the route name an ``admin.request`` ledger
record carries (the matched route's pattern, never the raw path a client chose), and the
admin's optional ``reason`` (issue 10, "Audit": every admin read of a user's data is recorded
with who, what and why).

The reason: a caller may pass one explicitly; else :func:`record_admin_read` takes the query
parameter ``reason`` (a GET has no body) and :func:`admin_request` the body's ``reason`` (of a
body the handler already read), then the query's. A reason is a string of at most
:data:`~bastion.services.security_records.MAX_REASON_CHARS` characters (longer: 400
``M_INVALID_PARAM``; given twice in the query: ``M_INVALID_PARAM``; a body ``reason`` that is
not a string: ``M_BAD_JSON``, as :func:`~bastion.services.security_records.admin_reason`); an
empty one is no reason. It is checked before anything is written."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.api.http import Request
from bastion.errors import forbidden, invalid_param
from bastion.services.security_records import MAX_REASON_CHARS, admin_reason, admin_request_in

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import Txn

__all__ = [
    "admin_request",
    "query_reason",
    "record_admin_read",
    "request_reason",
    "require_admin",
    "route_name",
]


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


def query_reason(req: Request) -> str | None:
    """The optional query parameter ``reason`` (see the module docstring)."""
    values = req.query_all("reason")
    if not values:
        return None
    if len(values) > 1:
        raise invalid_param("give 'reason' at most once")
    reason = values[0]
    if len(reason) > MAX_REASON_CHARS:
        raise invalid_param(f"'reason' is at most {MAX_REASON_CHARS} characters")
    return reason or None


def request_reason(req: Request) -> str | None:
    """The reason of a request: the ``reason`` of the JSON body the handler read, else the
    query parameter ``reason`` (see the module docstring)."""
    body = req._json  # the parsed body, when the handler read one (Request.json caches it)
    if isinstance(body, dict):
        reason = admin_reason(body)
        if reason:
            return reason
    return query_reason(req)


def admin_request(
    hs: HomeServer, req: Request, *, target: str | None, reason: str | None = None,
    subject: str | None = None,
) -> Callable[[Txn], None]:  # fmt: skip
    """The call's ``admin.request`` ledger record, to write inside the transaction of the
    change it makes (``subject``: the local user whose data the call reads or changes;
    ``reason``: when None, the request's own, :func:`request_reason`)."""
    if reason is None:
        reason = request_reason(req)
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
    """An admin read: its ``admin.request`` record (with the query parameter ``reason``, when
    given), committed before the answer goes out."""
    reason = query_reason(req)
    await hs.store.transaction(
        admin_request(hs, req, target=target, subject=subject, reason=reason)
    )
