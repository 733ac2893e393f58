"""The client event format (C-S API "Room event format": ``unsigned`` with ``age``,
``transaction_id`` for the sender's device, ``prev_content``, ``redacted_because``)."""

from __future__ import annotations

from collections.abc import Callable

from bastion.storage.interface import EventRow, Store


class ClientEventFormat:
    """Stored events as clients see them (``hs.rooms.client_event``)."""

    def __init__(self, store: Store, now_ms: Callable[[], int]) -> None:
        self.store = store
        self.now_ms = now_ms

    def client_event(
        self, row: EventRow, requester=None, now: int | None = None, *, with_room_id: bool = True,
        _depth: int = 0,
    ) -> dict:  # fmt: skip
        ev = row.event
        out: dict = {
            "event_id": row.event_id,
            "sender": ev["sender"],
            "type": ev["type"],
            "content": ev.get("content", {}),
            "origin_server_ts": ev["origin_server_ts"],
        }
        if with_room_id:
            out["room_id"] = row.room_id
        if "state_key" in ev:
            out["state_key"] = ev["state_key"]
        now = self.now_ms() if now is None else now
        unsigned: dict = {"age": max(0, now - ev["origin_server_ts"])}
        if (
            requester is not None
            and row.txn_id is not None
            and row.txn_user == requester.user_id
            and row.txn_device == requester.device_id
        ):
            unsigned["transaction_id"] = row.txn_id
        if row.replaces_state:
            prev = self.store.get_event(row.replaces_state)
            unsigned["replaces_state"] = row.replaces_state
            if prev is not None:
                unsigned["prev_content"] = prev.get("content", {})
                unsigned["prev_sender"] = prev.get("sender")
        if row.redacted_because and _depth == 0:
            red = self.store.get_event_row(row.redacted_because)
            if red is not None:
                unsigned["redacted_because"] = self.client_event(
                    red, requester, now, with_room_id=with_room_id, _depth=1
                )
        if ev["type"] == "m.room.redaction":
            redacts = ev.get("redacts")
            if redacts is None:
                redacts = out["content"].get("redacts")
            if isinstance(redacts, str):
                out["redacts"] = redacts
                if "redacts" not in out["content"] and not row.redacted_because:
                    out["content"] = {**out["content"], "redacts": redacts}
        out["unsigned"] = unsigned
        return out
