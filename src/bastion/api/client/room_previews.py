"""Room previews (C-S API "Room Previews"): a snapshot of one room
(``GET /rooms/{roomId}/initialSync``, room_initial_sync.yaml) and its new events
(``GET /events?room_id=``, peeking_events.yaml; services/room_previews.py).

The spec keeps this endpoint for peeking into rooms the requester may read without being a
member (``world_readable`` history), and matrix-js-sdk's ``peekInRoom`` calls it; members and
former members get the same snapshot of their room. Built from the pieces ``/state`` and
``/messages`` use, with the same read rules (services/room_access.py): a member sees the
current state and the latest messages; a former member the state and messages up to their
leave; anyone else a ``world_readable`` room's current state and messages, and every other room
is 403 ``M_FORBIDDEN``, unknown rooms included (nothing about a room's existence leaks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.client.rooms import check_room_id, parse_pos, token, with_bundles
from bastion.api.http import Request, Router
from bastion.core.canonical_json import parse_json
from bastion.errors import missing_param
from bastion.services.room_previews import RoomPreviews

if TYPE_CHECKING:
    from bastion.server import HomeServer

#: Messages returned when the request names no ``limit``, and the most it may ask for.
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
#: Above every stream position: all of the requester's room account data.
_ALL = 2**62


def register(router: Router, hs: HomeServer) -> None:
    rooms, store = hs.rooms, hs.store

    async def room_initial_sync(req: Request) -> dict:
        """GET /_matrix/client/v3/rooms/{roomId}/initialSync — room_initial_sync.yaml: the
        room's state and latest messages as the requester may read them, their membership,
        whether the room is in the published room directory (``visibility``) and their
        account data for the room. ``limit`` (Synapse's query parameter; not in the spec) bounds
        the messages: default 20, at most 100. ``messages.chunk`` is in chronological order,
        ``start`` pages further back with ``/messages`` (absent at the room's beginning) and
        ``end`` is the position of the snapshot."""
        room_id = check_room_id(req.params["roomId"])
        user_id = req.requester.user_id
        limit = req.query_int("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
        state = rooms.state_for_reader(user_id, room_id)  # 403 for those who may not read
        rows, older, upto = rooms.paginate(req.requester, room_id, None, None, True, limit, None)
        rows.reverse()
        now = hs.now_ms()
        served = [rooms.client_event(r, req.requester, now) for r in rows]
        messages: dict = {
            "chunk": with_bundles(hs, req.requester, rows, served),
            "end": token(upto),
        }
        if older is not None:
            messages["start"] = token(older)
        out: dict = {
            "room_id": room_id,
            "messages": messages,
            "state": [rooms.client_event(r, req.requester, now) for r in rooms.state_events(state)],
            "visibility": "public" if store.is_room_public(room_id) else "private",
            "account_data": [
                {"type": r["type"], "content": parse_json(r["content"], strict=False)}
                for r in store.account_data_changes(user_id, room_id, None, _ALL)
            ],
        }
        membership = store.get_membership(room_id, user_id)
        if membership is not None and membership["membership"] in (
            "invite",
            "join",
            "leave",
            "ban",
        ):
            out["membership"] = membership["membership"]
        return out

    previews = RoomPreviews(hs)

    async def peek_events(req: Request) -> dict:
        """GET /_matrix/client/v3/events?room_id= — peeking_events.yaml: the new events of a
        room the requester may read (``world_readable``, or their own), after ``from`` (a
        token of this endpoint, ``/initialSync`` or ``/sync``; now when absent), waiting up to
        ``timeout`` ms (at most 5 minutes) for one; ``end`` is the next ``from``. ``room_id``
        is required: the deprecated event stream of every room (``/events`` without it) is not
        served."""
        room_id = req.query.get("room_id")
        if not room_id:
            raise missing_param("'room_id' is required (only peeking into one room is served)")
        check_room_id(room_id)
        from_pos = parse_pos(req.query.get("from"), "from")
        timeout = req.query_int("timeout", 0, minimum=0) or 0
        rows, start, end = await previews.events(req.requester, room_id, from_pos, timeout)
        now = hs.now_ms()
        served = [rooms.client_event(r, req.requester, now) for r in rows]
        return {
            "chunk": with_bundles(hs, req.requester, rows, served),
            "start": token(start),
            "end": token(end),
        }

    router.add("GET", "/_matrix/client/v3/rooms/{roomId}/initialSync", room_initial_sync)
    router.add("GET", "/_matrix/client/v3/events", peek_events)
