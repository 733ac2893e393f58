"""Receipts and read markers (C-S API "Receipts": receipts.yaml; "Read and unread markers":
read_markers.yaml)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.identifiers import parse_event_id
from bastion.core.relations import MAIN_TIMELINE
from bastion.errors import bad_json, invalid_param
from bastion.services.ephemeral import RECEIPT_TYPES

if TYPE_CHECKING:
    from bastion.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    async def post_receipt(req: Request) -> dict:
        """POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId} — C-S API
        "Receipts". ``m.fully_read`` sets the fully-read marker, as /read_markers does.
        ``thread_id`` ("Threaded read receipts"): ``main`` or a thread root's event ID, with
        an event related to it, else 400 ``M_INVALID_PARAM``. Rate limit ``receipt`` (429
        ``M_LIMIT_EXCEEDED``)."""
        rtype = req.params["receiptType"]
        if rtype not in RECEIPT_TYPES:
            raise invalid_param(f"unknown receipt type {rtype!r}")
        body = await req.json(allow_empty=True)
        thread_id = body.get("thread_id")
        if thread_id is not None:
            if not isinstance(thread_id, str) or not thread_id:
                raise invalid_param("thread_id field must be a non-empty string")
            if thread_id != MAIN_TIMELINE:  # "Threaded read receipts": a root's ID or main
                parse_event_id(thread_id)
        user_id, room_id = req.requester.user_id, req.params["roomId"]
        with hs.guard.limits.counting("receipt", user=user_id, ip=req.raw.remote):
            await hs.receipts.set_markers(user_id, room_id, {rtype: req.params["eventId"]},
                                          thread_id)  # fmt: skip
        return {}

    async def post_read_markers(req: Request) -> dict:
        """POST /_matrix/client/v3/rooms/{roomId}/read_markers — C-S API "Fully read markers".
        Rate limit ``receipt`` (429 ``M_LIMIT_EXCEEDED``)."""
        body = await req.json()
        markers = {}
        for key in RECEIPT_TYPES:
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise bad_json(f"{key!r} must be an event ID string")
            markers[key] = value
        user_id = req.requester.user_id
        with hs.guard.limits.counting("receipt", user=user_id, ip=req.raw.remote):
            if markers:
                await hs.receipts.set_markers(user_id, req.params["roomId"], markers)
        return {}

    router.add(
        "POST", "/_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}", post_receipt
    )
    router.add("POST", "/_matrix/client/v3/rooms/{roomId}/read_markers", post_read_markers)
