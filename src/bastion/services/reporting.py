"""Reporting content (C-S API "Reporting Content"; report_content.yaml).

Reports are stored in ``content_reports`` for the server's administrators. Event reports need the
reporter to be joined to the room (v1.8); room and user reports need no membership or shared
room (v1.13, v1.14). To prevent enumeration (v1.18), a report about a room, user or event that
does not exist is answered like any other (200) but not stored.

A stored report also joins the guard's review queue (issue 9): an ``open`` decision with source
``report``, the reported user as subject (an event's sender), the reporter and the reason, written
in the report's transaction with its ``guard.decision`` ledger record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.core.identifiers import parse_room_id, parse_user_id
from bastion.errors import MatrixError, bad_json, invalid_param, not_found
from bastion.guard.signals import Decision, Signal

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

    async def _store(
        self, reporter: str, kind: str, room_id: str | None, event_id: str | None,
        target_user_id: str | None, reason: str | None, subject: str | None,
    ) -> int:  # fmt: skip
        """The report and its ``open`` guard decision, in one write; the report's ID."""
        store = self.hs.store
        now = self.hs.now_ms()
        what = {"event": f"event {event_id}", "room": f"room {room_id}",
                "user": f"user {target_user_id}"}[kind]  # fmt: skip
        # The reporter is named in the decision's details only: its ledger record (readable by
        # its subject, the reported user) must not say who reported them. Nor does the record
        # (nor the alert) carry the reason: what the reporter wrote stays in rows that an
        # erasure of the reporter can clear (a ledger leaf is never rewritten).
        summary = f"a user reported {what}"
        signal = Signal("report", "warn", 0.5, summary[:1000], {"kind": kind})  # fmt: skip

        def fn(conn) -> int:
            report_id = store.add_content_report_in(
                conn, reporter, kind, room_id, event_id, target_user_id, reason, True, now
            )
            decision = Decision(
                source="report", outcome="warn", reason=summary[:1000], ts=now, status="open",
                subject=subject, room_id=room_id, event_id=event_id, origin=self.hs.server_name,
                score=0.5, signals=(signal,),
                details={"report_id": report_id, "reporter": reporter, "kind": kind,
                         "report_reason": reason},
            )  # fmt: skip
            self.hs.guard.record_in(conn, decision)
            return report_id

        return await store.transaction(fn)

    async def report_event(self, reporter: str, room_id: str, event_id: str, body: dict) -> None:
        reason = check_reason(body, required=False)
        store = self.hs.store
        # One answer for "no such room", "not joined": nothing about the room leaks.
        if store.get_local_memberships(reporter).get(room_id) != "join":
            raise not_found("the event was not found or you are not joined to the room")
        event = store.get_event(event_id)
        exists = event is not None and event.get("room_id") == room_id
        if exists and event is not None:
            sender = event.get("sender")
            await self._store(reporter, "event", room_id, event_id, None, reason,
                              sender if isinstance(sender, str) else None)  # fmt: skip

    async def report_room(self, reporter: str, room_id: str, body: dict) -> None:
        reason = check_reason(body, required=True)
        try:
            parse_room_id(room_id)
        except MatrixError:
            raise invalid_param("not a valid room ID") from None
        if self.hs.store.get_room_version(room_id) is not None:
            await self._store(reporter, "room", room_id, None, None, reason, None)

    async def report_user(self, reporter: str, user_id: str, body: dict) -> None:
        reason = check_reason(body, required=True)
        try:
            target = parse_user_id(user_id, historical=True)
        except MatrixError:
            raise invalid_param("not a valid user ID") from None
        local = target.domain == self.hs.server_name
        if not local or self.hs.store.user_exists(user_id):
            await self._store(reporter, "user", None, None, user_id, reason, user_id)
