"""Room aliases and the room directory (C-S API "Room aliases", "Listing rooms", "Room
directory").

A server admin may delete any local alias and list or unlist any room. When only the admin
privilege allows the change, it is an ``admin.request`` ledger record written in the same
transaction (:mod:`bastion.services.security_records`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.api.client.rooms import V3, check_room_id
from bastion.api.http import Request, Router
from bastion.core.identifiers import parse_room_alias
from bastion.errors import M_UNKNOWN, MatrixError, bad_json, forbidden, invalid_param, not_found
from bastion.services.security_records import admin_request_in

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import Txn


def register(router: Router, hs: HomeServer) -> None:
    rooms = hs.rooms
    store = hs.store

    async def as_admin(req: Request, target: str, change: Callable[[Txn], object]) -> None:
        """A change that only the admin privilege allows: made with its ``admin.request``
        record, in one transaction."""
        now = hs.now_ms()
        route = f"{req.method} {req.route.name if req.route is not None else req.raw.path}"

        def fn(conn: Txn) -> None:
            change(conn)
            admin_request_in(
                store, conn, actor=req.requester.user_id, route=route, ts=now, target=target,
                reason=None, origin=req.raw.remote,
            )  # fmt: skip

        await store.transaction(fn)

    def _alias(req: Request) -> str:
        alias = req.params["roomAlias"]
        try:
            parsed = parse_room_alias(alias)
        except MatrixError:
            raise invalid_param("invalid room alias") from None
        if parsed.domain != hs.server_name:
            raise invalid_param("room alias is not on this server")
        return alias

    async def put_alias(req: Request) -> dict:
        """PUT /_matrix/client/v3/directory/room/{roomAlias} — 409 when the alias exists; the
        requester must be joined to the room."""
        alias = _alias(req)
        body = await req.json()
        room_id = body.get("room_id")
        if not isinstance(room_id, str):
            raise bad_json("'room_id' must be a string")
        check_room_id(room_id)
        if not store.room_exists(room_id):
            raise not_found("unknown room")
        if rooms.membership_of(room_id, req.requester.user_id) != "join":
            raise forbidden("you are not joined to this room")
        if not await store.add_alias(alias, room_id, req.requester.user_id, hs.now_ms()):
            raise MatrixError(M_UNKNOWN, "room alias already exists", 409)
        return {}

    async def get_alias(req: Request) -> dict:
        """GET /_matrix/client/v3/directory/room/{roomAlias} — no authentication required; a
        remote alias is looked up on its server (S-S API "Querying for information")."""
        try:
            remote = parse_room_alias(req.params["roomAlias"]).domain != hs.server_name
        except MatrixError:
            remote = False  # _alias() answers M_INVALID_PARAM
        if remote:
            if hs.federation is None:
                raise not_found("federation is off on this server")
            return await hs.federation.queries.remote_directory(req.params["roomAlias"])
        alias = _alias(req)
        row = store.get_alias(alias)
        if row is None:
            raise not_found("room alias not found")
        return {"room_id": row["room_id"], "servers": [hs.server_name]}

    async def delete_alias(req: Request) -> dict:
        """DELETE /_matrix/client/v3/directory/room/{roomAlias} — by its creator, a server
        admin, or a user who may change the room's canonical alias."""
        alias = _alias(req)
        row = store.get_alias(alias)
        if row is None:
            raise not_found("room alias not found")
        user_id = req.requester.user_id
        allowed = row["creator"] == user_id
        if not allowed and rooms.membership_of(row["room_id"], user_id) == "join":
            allowed = rooms.can_send_state(row["room_id"], user_id, "m.room.canonical_alias")
        if allowed:
            await store.delete_alias(alias)
        elif req.requester.is_admin:
            await as_admin(req, alias, lambda conn: store.delete_alias_in(conn, alias))
        else:
            raise forbidden("you may not delete this alias")
        return {}

    async def room_aliases(req: Request) -> dict:
        """GET /_matrix/client/v3/rooms/{roomId}/aliases — members (or anyone, for
        world_readable rooms)."""
        room_id = check_room_id(req.params["roomId"])
        rooms.read_access(req.requester.user_id, room_id)
        return {"aliases": store.get_aliases_for_room(room_id)}

    async def get_visibility(req: Request) -> dict:
        """GET /_matrix/client/v3/directory/list/room/{roomId}."""
        room_id = check_room_id(req.params["roomId"])
        if not store.room_exists(room_id):
            raise not_found("unknown room")
        return {"visibility": "public" if store.is_room_public(room_id) else "private"}

    async def put_visibility(req: Request) -> dict:
        """PUT /_matrix/client/v3/directory/list/room/{roomId} — by users who may change the
        room's canonical alias."""
        room_id = check_room_id(req.params["roomId"])
        body = await req.json()
        vis = body.get("visibility", "public")
        if not isinstance(vis, str):
            raise bad_json("'visibility' must be a string")
        if vis not in ("public", "private"):
            raise invalid_param("'visibility' must be 'public' or 'private'")
        if not store.room_exists(room_id):
            raise not_found("unknown room")
        user_id = req.requester.user_id
        public = vis == "public"
        if rooms.membership_of(room_id, user_id) == "join" and rooms.can_send_state(
            room_id, user_id, "m.room.canonical_alias"
        ):
            await store.set_room_public(room_id, public)
        elif req.requester.is_admin:
            await as_admin(
                req, room_id, lambda conn: store.set_room_public_sync(conn, room_id, public)
            )
        else:
            raise forbidden("you may not change this room's visibility")
        return {}

    def _public_rooms(limit: int | None, since: str | None, term: str | None) -> dict:
        return rooms.public_rooms(limit, since, term)

    def _check_server(server) -> None:
        if server is not None and server != hs.server_name:
            raise invalid_param("this server only lists its own rooms")

    async def public_rooms_get(req: Request) -> dict:
        """GET /_matrix/client/v3/publicRooms — no authentication required."""
        _check_server(req.query.get("server"))
        limit = req.query_int("limit", None, minimum=1, maximum=500)
        return _public_rooms(limit, req.query.get("since"), None)

    async def public_rooms_post(req: Request) -> dict:
        """POST /_matrix/client/v3/publicRooms — with ``filter.generic_search_term``."""
        _check_server(req.query.get("server"))
        body = await req.json(allow_empty=True)
        limit = body.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise bad_json("'limit' must be an integer")
        if limit is not None:
            limit = max(1, min(limit, 500))
        since = body.get("since")
        if since is not None and not isinstance(since, str):
            raise bad_json("'since' must be a string")
        flt = body.get("filter") or {}
        if not isinstance(flt, dict):
            raise bad_json("'filter' must be an object")
        term = flt.get("generic_search_term")
        if term is not None and not isinstance(term, str):
            raise bad_json("'generic_search_term' must be a string")
        return _public_rooms(limit, since, term)

    router.add("PUT", V3 + "/directory/room/{roomAlias}", put_alias)
    router.add("GET", V3 + "/directory/room/{roomAlias}", get_alias, auth=False)
    router.add("DELETE", V3 + "/directory/room/{roomAlias}", delete_alias)
    router.add("GET", V3 + "/rooms/{roomId}/aliases", room_aliases)
    router.add("GET", V3 + "/directory/list/room/{roomId}", get_visibility, auth=False)
    router.add("PUT", V3 + "/directory/list/room/{roomId}", put_visibility)
    router.add("GET", V3 + "/publicRooms", public_rooms_get, auth=False)
    router.add("POST", V3 + "/publicRooms", public_rooms_post)
