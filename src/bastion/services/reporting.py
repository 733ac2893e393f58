"""Reporting content (C-S API "Reporting Content"; report_content.yaml).

Reports are stored in ``content_reports`` for the server's administrators. Event reports need the
reporter to be joined to the room (v1.8); room and user reports need no membership or shared
room (v1.13, v1.14). To prevent enumeration (v1.18), a report about a room, user or event that
does not exist is answered like any other (200) but not stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.core.identifiers import parse_room_id, parse_user_id
from bastion.errors import MatrixError, bad_json, invalid_param, not_found

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: The longest reason accepted, in characters.
MAX_REASON = 2000


def check_reason(body: dict, required: bool) -> str | None:
    if "reason" not in body or body["reason"] is None:
        if required:
            raise bad_json("'reason' is required (it may be empty)")
        return None
    reason = body["reason"]
    if not isinstance(reason, str):
        raise bad_json("'reason' must be a string")
    if len(reason) > MAX_REASON:
        raise invalid_param(f"'reason' is longer than {MAX_REASON}")
    return reason


class Reporting:
    """``hs.reporting``."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def report_event(self, reporter: str, room_id: str, event_id: str, body: dict) -> None:
        reason = check_reason(body, required=False)
        store = self.hs.store
        # One answer for "no such room", "not joined": nothing about the room leaks.
        if store.get_local_memberships(reporter).get(room_id) != "join":
            raise not_found("the event was not found or you are not joined to the room")
        event = store.get_event(event_id)
        exists = event is not None and event.get("room_id") == room_id
        if exists:
            await store.add_content_report(
                reporter, "event", room_id, event_id, None, reason, True, self.hs.now_ms()
            )

    async def report_room(self, reporter: str, room_id: str, body: dict) -> None:
        reason = check_reason(body, required=True)
        try:
            parse_room_id(room_id)
        except MatrixError:
            raise invalid_param("not a valid room ID") from None
        if self.hs.store.get_room_version(room_id) is not None:
            await self.hs.store.add_content_report(
                reporter, "room", room_id, None, None, reason, True, self.hs.now_ms()
            )

    async def report_user(self, reporter: str, user_id: str, body: dict) -> None:
        reason = check_reason(body, required=True)
        try:
            target = parse_user_id(user_id, historical=True)
        except MatrixError:
            raise invalid_param("not a valid user ID") from None
        local = target.domain == self.hs.server_name
        if not local or self.hs.store.user_exists(user_id):
            await self.hs.store.add_content_report(
                reporter, "user", None, None, user_id, reason, True, self.hs.now_ms()
            )
