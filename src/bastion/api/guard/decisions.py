"""The guard's decisions and review queue, and per-room guard settings (issue 9, "Policy lists
and actions": "an admin API lists decisions with their reasons, overrides and reverses them").

* ``GET  /_bastion/admin/v1/guard/decisions?status=&subject=&room_id=&from=&limit=`` — newest
  first; ``from`` is the ``next_batch`` of the previous page;
* ``GET  /_bastion/admin/v1/guard/decisions/{id}``;
* ``POST /_bastion/admin/v1/guard/decisions/{id}/approve`` — a held local event is sent as its
  sender; ``/reject`` — a held event or an open decision is closed; ``/reverse`` — what the
  decision did is undone where it can be (body ``{"reason": ...}``, optional);
* ``GET|PUT /_bastion/admin/v1/guard/rooms/{roomId}/settings`` — the room's guard settings
  (:mod:`bastion.guard.room_settings`).

Server admins only (403 ``M_FORBIDDEN``); every call is an ``admin.request`` ledger record
(:func:`bastion.services.security_records.admin_request_in`), committed before the answer, in
the same transaction as the change it makes. Bad input gets a Matrix error: an ID that is not a
decimal integer in range, an unknown status, a limit or ``from`` that is not an integer
(``M_INVALID_PARAM``); a body that is not JSON (``M_NOT_JSON``) or has the wrong types
(``M_BAD_JSON``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bastion.api.admin_access import admin_request, require_admin
from bastion.api.http import Request, Router
from bastion.core.identifiers import parse_room_id
from bastion.errors import MatrixError, invalid_param, not_found
from bastion.services.security_records import admin_reason, clip

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import Txn

PREFIX = "/_bastion/admin/v1/guard"

#: The statuses a decision may have (``Decision.status``).
STATUSES = ("done", "shadow", "held", "approved", "rejected", "reversed", "open")
#: Decisions per page: the default and the most.
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
#: The longest ``subject`` / ``room_id`` filter accepted (user and room IDs are at most 255).
MAX_FILTER_CHARS = 255
#: A decision ID: a positive decimal integer SQLite can hold.
_ID = re.compile(r"[1-9][0-9]{0,17}")

_FIELDS = ("id", "ts", "source", "outcome", "status", "reason", "subject", "room_id",
           "event_id", "origin", "score", "actions", "signals", "held", "details", "ledger_idx",
           "reviewed_by", "reviewed_ts", "review_reason")  # fmt: skip


def decision_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A decision as the admin API shows it."""
    return {k: row.get(k) for k in _FIELDS}


def parse_decision_id(value: str) -> int:
    if not _ID.fullmatch(value):
        raise invalid_param("a decision ID is a positive integer")
    return int(value)


def _query_int(req: Request, key: str, default: int, minimum: int, maximum: int) -> int:
    raw = req.query.get(key)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,18}", raw):
        raise invalid_param(f"'{key}' must be an integer from {minimum} to {maximum}")
    n = int(raw)
    if not minimum <= n <= maximum:
        raise invalid_param(f"'{key}' must be an integer from {minimum} to {maximum}")
    return n


def _query_str(req: Request, key: str) -> str | None:
    raw = req.query.get(key)
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_FILTER_CHARS:
        raise invalid_param(f"'{key}' is at most {MAX_FILTER_CHARS} characters")
    return raw


def register(router: Router, hs: HomeServer) -> None:
    store = hs.store
    guard = hs.guard

    def request_record(req: Request, target: str | None, reason: str | None = None,
                       subject: str | None = None) -> Callable[[Txn], None]:  # fmt: skip
        """The call's ``admin.request`` record, to write inside the call's transaction."""
        local = subject if subject is not None and guard.is_local(subject) else None
        return admin_request(hs, req, target=target, reason=reason, subject=local)

    async def record_read(req: Request, target: str | None, subject: str | None = None) -> None:
        await store.transaction(request_record(req, target, subject=subject))

    async def list_decisions(req: Request) -> dict:
        """GET /_bastion/admin/v1/guard/decisions — newest first, filtered, paginated."""
        require_admin(req)
        status = _query_str(req, "status")
        if status is not None and status not in STATUSES:
            raise invalid_param(f"'status' must be one of {', '.join(STATUSES)}")
        subject = _query_str(req, "subject")
        room_id = _query_str(req, "room_id")
        before = _query_int(req, "from", 0, 1, 2**63 - 1) or None
        limit = _query_int(req, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        await record_read(req, None)
        rows = store.list_guard_decisions(
            status=status, subject=subject, room_id=room_id, before=before, limit=limit + 1
        )
        out: dict[str, Any] = {"decisions": [decision_json(r) for r in rows[:limit]]}
        if len(rows) > limit:  # there is a next page
            out["next_batch"] = str(rows[limit - 1]["id"])
        return out

    async def get_decision(req: Request) -> dict:
        """GET /_bastion/admin/v1/guard/decisions/{id}."""
        require_admin(req)
        decision_id = parse_decision_id(req.params["id"])
        row = store.get_guard_decision(decision_id)
        if row is None:
            raise not_found("no such decision")
        await record_read(req, str(decision_id), subject=row["subject"])
        return decision_json(row)

    def review(name: str):
        async def handler(req: Request) -> dict:
            require_admin(req)
            decision_id = parse_decision_id(req.params["id"])
            body = await req.json(allow_empty=True)
            reason = admin_reason(body)
            row = store.get_guard_decision(decision_id)
            if row is None:
                raise not_found("no such decision")
            also = request_record(req, str(decision_id), reason, row["subject"])
            do = getattr(guard.actions, name)
            result = await do(decision_id, req.requester.user_id, reason, req.raw.remote,
                              also=also)  # fmt: skip
            return decision_json(result) | (
                {"event_id": result["event_id"]} if result.get("event_id") else {}
            )

        handler.__doc__ = f"POST /_bastion/admin/v1/guard/decisions/{{id}}/{name} (issue 9)."
        return handler

    def room_id_param(req: Request) -> str:
        room_id = req.params["roomId"]
        try:
            parse_room_id(room_id)
        except MatrixError:
            raise invalid_param("invalid room ID") from None
        if store.get_room_version(room_id) is None:
            raise not_found("unknown room")
        return room_id

    async def get_settings(req: Request) -> dict:
        """GET /_bastion/admin/v1/guard/rooms/{roomId}/settings."""
        require_admin(req)
        room_id = room_id_param(req)
        await record_read(req, room_id)
        return {"room_id": room_id, "settings": store.get_guard_room_settings(room_id) or {}}

    async def put_settings(req: Request) -> dict:
        """PUT /_bastion/admin/v1/guard/rooms/{roomId}/settings — replace them with the body
        (``{}``: the server's defaults again; an optional ``reason`` is recorded)."""
        require_admin(req)
        room_id = room_id_param(req)
        body = await req.json()
        reason = admin_reason(body)
        settings = {k: v for k, v in body.items() if k != "reason"}
        now = hs.now_ms()
        also = request_record(req, room_id, reason)

        def fn(conn: Txn) -> dict[str, Any]:
            try:
                parsed = guard.set_room_settings_in(conn, room_id, settings, now)
            except ValueError as e:
                raise invalid_param(clip(str(e), 300)) from None
            also(conn)
            return parsed

        parsed = await store.transaction(fn)
        return {"room_id": room_id, "settings": parsed}

    router.add("GET", PREFIX + "/decisions", list_decisions)
    router.add("GET", PREFIX + "/decisions/{id}", get_decision)
    for name in ("approve", "reject", "reverse"):
        router.add("POST", PREFIX + "/decisions/{id}/" + name, review(name))
    router.add("GET", PREFIX + "/rooms/{roomId}/settings", get_settings)
    router.add("PUT", PREFIX + "/rooms/{roomId}/settings", put_settings)
