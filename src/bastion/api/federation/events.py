"""Events other servers read from us — S-S API "Retrieving events" (events.yaml,
event_auth.yaml, and timestamp_to_event) and "Backfilling and retrieving missing events" (backfill.yaml).

Every route: the room's server ACL (403), the requesting server must be in the room (403),
rejected events are never served, events the server may not see are served redacted
(``bastion.federation.event_serving``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.client.room_event_by_timestamp import timestamp_query
from bastion.api.http import Request
from bastion.errors import bad_json, invalid_param, missing_param, not_found
from bastion.federation.event_serving import MAX_BACKFILL, MAX_MISSING, EventServing

if TYPE_CHECKING:
    from bastion.server import HomeServer


def _event_id_list(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"'{name}' must be an array of event IDs")
    if len(value) > 100:
        raise invalid_param(f"'{name}' has too many entries")
    return value


def register(router, hs: HomeServer) -> None:
    fed = hs.require_federation()
    serving = EventServing(hs.store, fed.acl)

    def envelope(pdus: list[dict]) -> dict:
        return {"origin": hs.server_name, "origin_server_ts": hs.now_ms(), "pdus": pdus}

    def required_event_id(req: Request) -> str:
        event_id = req.query.get("event_id")
        if not event_id:
            raise missing_param("the event_id query parameter is required")
        return event_id

    async def get_event(req: Request) -> dict:
        """GET /_matrix/federation/v1/event/{eventId} — S-S API "Retrieving events"."""
        return envelope([serving.get_event(req.requester, req.params["eventId"])])

    async def get_state(req: Request) -> dict:
        """GET /_matrix/federation/v1/state/{roomId}?event_id= — S-S API "Retrieving events":
        the state before the event and its auth chain."""
        pdus, chain = serving.state(req.requester, req.params["roomId"], required_event_id(req))
        return {"pdus": pdus, "auth_chain": chain}

    async def get_state_ids(req: Request) -> dict:
        """GET /_matrix/federation/v1/state_ids/{roomId}?event_id= — S-S API "Retrieving
        events"."""
        ids, chain = serving.state_ids(req.requester, req.params["roomId"], required_event_id(req))
        return {"pdu_ids": ids, "auth_chain_ids": chain}

    async def get_event_auth(req: Request) -> dict:
        """GET /_matrix/federation/v1/event_auth/{roomId}/{eventId} — S-S API "Retrieving
        events" (event_auth.yaml): the event's auth chain."""
        chain = serving.event_auth(req.requester, req.params["roomId"], req.params["eventId"])
        return {"auth_chain": chain}

    async def backfill(req: Request) -> dict:
        """GET /_matrix/federation/v1/backfill/{roomId}?v=&limit= — S-S API "Backfilling"."""
        from_ids = req.query_all("v")
        if not from_ids:
            raise missing_param("at least one v query parameter is required")
        if len(from_ids) > 100:
            raise invalid_param("too many v parameters")
        limit = req.query_int("limit", None, minimum=1, maximum=MAX_BACKFILL)
        if limit is None:
            raise missing_param("the limit query parameter is required")
        return envelope(serving.backfill(req.requester, req.params["roomId"], from_ids, limit))

    async def get_missing_events(req: Request) -> dict:
        """POST /_matrix/federation/v1/get_missing_events/{roomId} — S-S API "Backfilling and
        retrieving missing events"."""
        body = await req.json()
        earliest = _event_id_list(body.get("earliest_events"), "earliest_events")
        latest = _event_id_list(body.get("latest_events"), "latest_events")
        limit = body.get("limit", 10)
        min_depth = body.get("min_depth", 0)
        if type(limit) is not int or type(min_depth) is not int:
            raise bad_json("'limit' and 'min_depth' must be integers")
        limit = max(1, min(limit, MAX_MISSING))
        events = serving.get_missing_events(
            req.requester, req.params["roomId"], earliest, latest, limit, min_depth
        )
        return {"events": events}

    async def timestamp_to_event(req: Request) -> dict:
        """GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir= — S-S API
        "Retrieving events" (events.yaml, v1.6): the event closest to ``ts`` in the direction
        ``dir`` that the asking server may see whole, for a room it is in (server ACL
        checked); 404 ``M_NOT_FOUND`` when there is none."""
        ts, forwards = timestamp_query(req)
        found = serving.timestamp_to_event(req.requester, req.params["roomId"], ts, forwards)
        if found is None:
            raise not_found("no event found in that direction")
        return {"event_id": found[0], "origin_server_ts": found[1]}

    router.add("GET", "/_matrix/federation/v1/event/{eventId}", get_event)
    router.add("GET", "/_matrix/federation/v1/timestamp_to_event/{roomId}", timestamp_to_event)
    router.add("GET", "/_matrix/federation/v1/state/{roomId}", get_state)
    router.add("GET", "/_matrix/federation/v1/state_ids/{roomId}", get_state_ids)
    router.add("GET", "/_matrix/federation/v1/event_auth/{roomId}/{eventId}", get_event_auth)
    router.add("GET", "/_matrix/federation/v1/backfill/{roomId}", backfill)
    router.add("POST", "/_matrix/federation/v1/get_missing_events/{roomId}", get_missing_events)
