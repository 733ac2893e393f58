"""Rooms: creation, sending events, state, reading events and history (C-S API "Room
Events", "Creation", "Sending events to a room", "Getting events for a room", "Redactions").

Handlers are thin: they validate the request's shape and call ``hs.rooms``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.identifiers import parse_room_id
from bastion.errors import MatrixError, invalid_param, not_found
from bastion.services.sync_api import SyncToken

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import Requester

V3 = "/_matrix/client/v3"


def check_room_id(room_id: str) -> str:
    try:
        parse_room_id(room_id)
    except MatrixError:
        raise invalid_param("invalid room ID") from None
    return room_id


#: Pagination tokens: the sync token grammar, where the position may be negative (backfilled
#: history lies below every other event's position).
_POS_TOKEN = re.compile(r"s(-?\d{1,18})_(\d{1,18})")


def parse_pos(token: str | None, name: str) -> int | None:
    """A pagination token (a sync token, or one of ``token``) as a stream position."""
    if token is None or token == "":
        return None
    m = _POS_TOKEN.fullmatch(token)
    if not m:
        raise invalid_param(f"invalid '{name}' token")
    return int(m.group(1))


def token(pos: int) -> str:
    return str(SyncToken(pos, 0))


def room_event_filter(hs: HomeServer, requester: Requester, param: str | None) -> dict | None:
    """The ``filter`` query parameter of /messages and /context: a RoomEventFilter as JSON."""
    if param is None or param == "":
        return None
    from bastion.services.filtering import parse_filter

    if param.lstrip().startswith("{"):
        from bastion.core.canonical_json import parse_json

        try:
            obj = parse_json(param)
        except MatrixError:
            raise invalid_param("filter is not valid JSON") from None
        if not isinstance(obj, dict):
            raise invalid_param("filter must be a JSON object")
        return parse_filter({"room": {"timeline": obj}})["room"]["timeline"]
    return hs.filters.resolve(requester, param)["room"]["timeline"]


def with_bundles(hs: HomeServer, requester: Requester, rows: list, served: list) -> list:
    """``served`` (the client events of ``rows``) with their bundled aggregations (C-S API
    "Aggregations of child events"; :meth:`RelationsReader.add_bundles_where_related`: a page
    with no relations costs one read)."""
    from bastion.services.relations import RelationsReader

    now = hs.now_ms()
    RelationsReader(hs.store, hs.rooms.access).add_bundles_where_related(
        requester.user_id, rows, served, lambda r: hs.rooms.client_event(r, requester, now)
    )
    return served


def register(router: Router, hs: HomeServer) -> None:
    rooms = hs.rooms

    async def create_room(req: Request) -> dict:
        """POST /_matrix/client/v3/createRoom — C-S API "Creation"."""
        body = await req.json(allow_empty=True)
        room_id, alias = await rooms.create_room(req.requester, body, ip=req.raw.remote)
        out = {"room_id": room_id}
        if alias:
            out["room_alias"] = alias
        return out

    async def send(req: Request) -> dict:
        """PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId} — C-S API "Sending
        events to a room"; idempotent per device and txnId ("Transaction identifiers")."""
        room_id = check_room_id(req.params["roomId"])
        etype, txn_id = req.params["eventType"], req.params["txnId"]
        if not etype:
            raise invalid_param("event type must not be empty")
        if not txn_id:
            raise invalid_param("transaction ID must not be empty")
        body = await req.json()
        r = req.requester
        event_id = await rooms.send_message_event(
            r.user_id, r.device_id, room_id, etype, body, txn_id, ip=req.raw.remote
        )
        return {"event_id": event_id}

    async def put_state(req: Request) -> dict:
        """PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey} — C-S API
        "Sending events to a room" (state). ``/state/{eventType}`` is the empty state key
        (matrix-nio drops the trailing slash)."""
        room_id = check_room_id(req.params["roomId"])
        etype = req.params["eventType"]
        if not etype:
            raise invalid_param("event type must not be empty")
        body = await req.json()
        event_id = await rooms.send_state_event(
            req.requester.user_id,
            room_id,
            etype,
            req.params.get("stateKey", ""),
            body,
            ip=req.raw.remote,
        )
        return {"event_id": event_id}

    async def get_state(req: Request) -> list:
        """GET /_matrix/client/v3/rooms/{roomId}/state — C-S API "Getting events for a room"."""
        room_id = check_room_id(req.params["roomId"])
        state = rooms.state_for_reader(req.requester.user_id, room_id)
        now = hs.now_ms()
        rows = rooms.state_events(state)
        return [rooms.client_event(r, req.requester, now) for r in rows]

    async def get_state_event(req: Request) -> dict:
        """GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey} —
        ``?format=content`` (default) or ``event``."""
        room_id = check_room_id(req.params["roomId"])
        fmt = req.query.get("format", "content")
        if fmt not in ("content", "event"):
            raise invalid_param("'format' must be 'content' or 'event'")
        state = rooms.state_for_reader(req.requester.user_id, room_id)
        eid = state.get((req.params["eventType"], req.params.get("stateKey", "")))
        row = hs.store.get_event_row(eid) if eid else None
        if row is None:
            raise not_found("no such state event")
        if fmt == "event":
            return rooms.client_event(row, req.requester)
        return row.event.get("content", {})

    async def get_event(req: Request) -> dict:
        """GET /_matrix/client/v3/rooms/{roomId}/event/{eventId} — 404 when unknown or not
        visible to the requester."""
        room_id = check_room_id(req.params["roomId"])
        try:
            cap = rooms.read_access(req.requester.user_id, room_id)
        except MatrixError:
            raise not_found("event not found") from None
        row = hs.store.get_event_row(req.params["eventId"], served=True)
        if (
            row is None
            or row.room_id != room_id
            or (cap is not None and row.stream_pos > cap)
            or not rooms.filter_visible(req.requester.user_id, [row])
        ):
            raise not_found("event not found")
        return with_bundles(hs, req.requester, [row], [rooms.client_event(row, req.requester)])[0]

    async def messages(req: Request) -> dict:
        """GET /_matrix/client/v3/rooms/{roomId}/messages — C-S API "Pagination"; ``start`` is
        always present (matrix-nio requires it), ``end`` is omitted at the end."""
        room_id = check_room_id(req.params["roomId"])
        q = req.query
        direction = q.get("dir")
        if direction not in ("b", "f"):
            raise invalid_param("'dir' must be 'b' or 'f'")
        from_pos = parse_pos(q.get("from"), "from")
        to_pos = parse_pos(q.get("to"), "to")
        limit = req.query_int("limit", 10, minimum=1, maximum=1000)
        event_filter = room_event_filter(hs, req.requester, q.get("filter"))
        if event_filter is not None and event_filter.get("limit"):
            limit = min(limit, event_filter["limit"])
        fed = hs.federation
        if direction == "b" and fed is not None:
            rooms.read_access(req.requester.user_id, room_id)  # no backfill for outsiders
            await fed.membership.maybe_backfill(room_id, from_pos, limit)  # S-S API "Backfilling"
        rows, end, start = rooms.paginate(
            req.requester, room_id, from_pos, to_pos, direction == "b", limit, event_filter
        )
        now = hs.now_ms()
        out: dict = {
            "chunk": with_bundles(
                hs, req.requester, rows, [rooms.client_event(r, req.requester, now) for r in rows]
            ),
            "start": token(start),
        }
        if end is not None:
            out["end"] = token(end)
        if event_filter is not None and event_filter.get("lazy_load_members"):
            senders = {r.sender for r in rows}
            state = rooms.state_for_reader(req.requester.user_id, room_id)
            ids = [state[("m.room.member", s)] for s in senders if ("m.room.member", s) in state]
            out["state"] = [
                rooms.client_event(r, req.requester, now) for r in rooms.state_events(
                    {k: v for k, v in state.items() if v in set(ids)}
                )
            ]  # fmt: skip
        return out

    async def context(req: Request) -> dict:
        """GET /_matrix/client/v3/rooms/{roomId}/context/{eventId} — C-S API "Retrieving
        events around a given event"."""
        room_id = check_room_id(req.params["roomId"])
        limit = req.query_int("limit", 10, minimum=0, maximum=100)
        event_filter = room_event_filter(hs, req.requester, req.query.get("filter"))
        c = rooms.context(req.requester, room_id, req.params["eventId"], limit, event_filter)
        now = hs.now_ms()

        def fmt(r):
            return rooms.client_event(r, req.requester, now)

        timeline = [c["event"], *c["before"], *c["after"]]
        served = with_bundles(hs, req.requester, timeline, [fmt(r) for r in timeline])
        n_before = len(c["before"])
        return {
            "event": served[0],
            "events_before": served[1 : 1 + n_before],
            "events_after": served[1 + n_before :],
            "start": token(c["start"]),
            "end": token(c["end"]),
            "state": [fmt(r) for r in c["state"]],
        }

    async def members(req: Request) -> dict:
        """GET /_matrix/client/v3/rooms/{roomId}/members — ``at``, ``membership``,
        ``not_membership``."""
        room_id = check_room_id(req.params["roomId"])
        q = req.query
        memberships = ("join", "invite", "knock", "leave", "ban")
        for key in ("membership", "not_membership"):
            if key in q and q[key] not in memberships:
                raise invalid_param(f"'{key}' must be one of {', '.join(memberships)}")
        at = parse_pos(q.get("at"), "at")
        rows = rooms.members(
            req.requester, room_id, at, q.get("membership"), q.get("not_membership")
        )
        now = hs.now_ms()
        return {"chunk": [rooms.client_event(r, req.requester, now) for r in rows]}

    async def joined_members(req: Request) -> dict:
        """GET /_matrix/client/v3/rooms/{roomId}/joined_members — joined users with their
        display names and avatars (matrix-nio calls it before the first encrypted send)."""
        room_id = check_room_id(req.params["roomId"])
        return {"joined": rooms.joined_members(req.requester, room_id)}

    async def joined_rooms(req: Request) -> dict:
        """GET /_matrix/client/v3/joined_rooms — C-S API "Room membership"."""
        return {"joined_rooms": sorted(hs.store.get_rooms_for_user(req.requester.user_id))}

    async def redact(req: Request) -> dict:
        """PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId} — C-S API
        "Redactions"."""
        room_id = check_room_id(req.params["roomId"])
        if not req.params["txnId"]:
            raise invalid_param("transaction ID must not be empty")
        body = await req.json(allow_empty=True)
        r = req.requester
        event_id = await rooms.redact_event(
            r.user_id, r.device_id, room_id, req.params["eventId"], body.get("reason"),
            req.params["txnId"],
        )  # fmt: skip
        return {"event_id": event_id}

    base = V3 + "/rooms/{roomId}"
    router.add("POST", V3 + "/createRoom", create_room)
    router.add("PUT", base + "/send/{eventType}/{txnId}", send)
    router.add("PUT", base + "/state/{eventType}/{stateKey}", put_state)
    router.add("PUT", base + "/state/{eventType}", put_state)
    router.add("GET", base + "/state", get_state)
    router.add("GET", base + "/state/{eventType}/{stateKey}", get_state_event)
    router.add("GET", base + "/state/{eventType}", get_state_event)
    router.add("GET", base + "/event/{eventId}", get_event)
    router.add("GET", base + "/messages", messages)
    router.add("GET", base + "/context/{eventId}", context)
    router.add("GET", base + "/members", members)
    router.add("GET", base + "/joined_members", joined_members)
    router.add("GET", V3 + "/joined_rooms", joined_rooms)
    router.add("PUT", base + "/redact/{eventId}/{txnId}", redact)
