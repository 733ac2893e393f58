"""Peeking into a room (C-S API "Room Previews": ``GET /events?room_id=``,
peeking_events.yaml): new events of one room the requester may read without being a member
(``world_readable`` history, or their own room), long-polled like ``/sync``.

The read rules are ``/messages``' (services/room_access.py); the wait is the notifier's, keyed
on the room, with the listener registered before the look so nothing committed in between is
missed."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bastion.services.sync import MAX_TIMEOUT_MS

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import EventRow, Requester

#: Most events one answer carries (the rest follow on the next request, from its ``end``).
MAX_EVENTS = 100


class RoomPreviews:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def events(
        self, requester: Requester, room_id: str, from_pos: int | None, timeout_ms: int
    ) -> tuple[list[EventRow], int, int]:
        """The events of ``room_id`` after ``from_pos`` (the current position when None) that
        the requester may see, oldest first, at most :data:`MAX_EVENTS`, waiting up to
        ``timeout_ms`` for one; with the start and end positions of the answer (``end``: the
        last event's, or the position looked up to). 403 for a room the requester may not
        read."""
        rooms, store = self.hs.rooms, self.hs.store
        rooms.read_access(requester.user_id, room_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        start = store.current_pos if from_pos is None else min(from_pos, store.current_pos)
        while True:
            # No await between the listener's registration and the look.
            with self.hs.notifier.listen({room_id}) as listener:
                upto = store.current_pos
                rows, _, _ = rooms.paginate(
                    requester, room_id, start, None, False, MAX_EVENTS, None
                )
                if rows:
                    return rows, start, rows[-1].stream_pos
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return rows, start, max(start, upto)
                woken = await listener.wait(remaining)
            if not woken:
                # Timed out, or the server is stopping: one last look, then the answer (never
                # another wait: a stopping notifier wakes every listener at once).
                rows, _, _ = rooms.paginate(
                    requester, room_id, start, None, False, MAX_EVENTS, None
                )
                return rows, start, rows[-1].stream_pos if rows else max(start, upto)
