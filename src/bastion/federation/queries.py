"""Queries across servers (S-S API "Querying for information", "Published Room Directory").

``hs.federation.queries`` answers other servers' profile and directory queries and lists this
server's published rooms for them; and, for the Client-Server API, asks a remote user's server
for their profile (``GET /profile/{userId}``) and a remote alias's server for its room
(``GET /directory/room/{roomAlias}``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bastion.core.canonical_json import canonical_json
from bastion.core.identifiers import parse_room_alias, parse_user_id, server_name_of
from bastion.errors import MatrixError, forbidden, invalid_param, missing_param, not_found
from bastion.federation.resolver import FederationError
from bastion.services.accounts import MAX_PROFILE_BYTES

if TYPE_CHECKING:
    from bastion.federation.client import FederationClient
    from bastion.server import HomeServer

log = logging.getLogger("bastion.federation.queries")

QUERY_TIMEOUT = 15.0
MAX_SERVERS = 100
MAX_PUBLIC_ROOMS_LIMIT = 500


class FederationQueries:
    def __init__(self, hs: HomeServer, client: FederationClient) -> None:
        self.hs = hs
        self.client = client
        self.store = hs.store

    # -- answering other servers --------------------------------------------------------------
    def profile_for_server(self, user_id: str | None, field: str | None) -> dict:
        """``GET /_matrix/federation/v1/query/profile``: a local user's profile (one field when
        ``field`` is given); 404 ``M_NOT_FOUND`` for other users, unknown users and unset
        fields."""
        if not user_id:
            raise missing_param("'user_id' is required")
        try:
            parsed = parse_user_id(user_id, historical=True)
        except MatrixError:
            raise invalid_param("invalid user ID") from None
        if parsed.domain != self.hs.server_name:
            raise not_found("the user is not on this server")
        profile = self.hs.accounts.get_profile(user_id)  # 404 for unknown/deactivated users
        if field is None:
            return profile
        if field not in profile:
            raise not_found("no such profile field")
        return {field: profile[field]}

    def servers_in_room(self, room_id: str) -> list[str]:
        """This server first, then the other servers with joined members."""
        others = sorted({server_name_of(u) or "" for u in self.store.get_joined_users(room_id)})
        return [self.hs.server_name] + [s for s in others if s and s != self.hs.server_name]

    def directory_for_server(self, alias: str | None) -> dict:
        """``GET /_matrix/federation/v1/query/directory``: a local alias's room and the servers
        likely to hold it."""
        if not alias:
            raise missing_param("'room_alias' is required")
        try:
            parsed = parse_room_alias(alias)
        except MatrixError:
            raise invalid_param("invalid room alias") from None
        if parsed.domain != self.hs.server_name:
            raise not_found("the alias is not on this server")
        row = self.store.get_alias(alias)
        if row is None:
            raise not_found("room alias not found")
        return {"room_id": row["room_id"], "servers": self.servers_in_room(row["room_id"])}

    def public_rooms(self, limit: int | None, since: str | None, term: str | None) -> dict:
        """``/_matrix/federation/v1/publicRooms``: the same listing as the client directory."""
        return self.hs.rooms.public_rooms(limit, since, term)

    # -- asking other servers (for the Client-Server API) -------------------------------------
    async def _ask(self, server: str, path: str, query: dict[str, str]) -> tuple[int, Any]:
        try:
            return await self.client.request(
                "GET", server, path, query=query, timeout=QUERY_TIMEOUT
            )
        except (FederationError, OSError, ValueError) as e:
            log.info("query to %s failed: %s", server, e)
            raise not_found(f"could not reach {server}") from None

    @staticmethod
    def _remote_error(status: int, body: Any, what: str) -> MatrixError:
        if status == 403:
            return forbidden(f"the remote server refused to give the {what}")
        message = body.get("error") if isinstance(body, dict) else None
        if not isinstance(message, str):
            message = f"{what} not found"
        return not_found(message[:200])

    async def remote_profile(self, user_id: str) -> dict:
        """A remote user's whole profile, from ``GET /query/profile`` on their server."""
        server = parse_user_id(user_id, historical=True).server_name
        status, body = await self._ask(
            server, "/_matrix/federation/v1/query/profile", {"user_id": user_id}
        )
        if status != 200 or not isinstance(body, dict):
            raise self._remote_error(status, body, "profile")
        if len(canonical_json(body)) > MAX_PROFILE_BYTES:
            raise not_found("the remote profile is too large")
        return {k: v for k, v in body.items() if v is not None}

    async def remote_directory(self, alias: str) -> dict:
        """A remote alias's room, from ``GET /query/directory`` on the alias's server."""
        server = parse_room_alias(alias).domain
        status, body = await self._ask(
            server, "/_matrix/federation/v1/query/directory", {"room_alias": alias}
        )
        if status != 200 or not isinstance(body, dict):
            raise self._remote_error(status, body, "room alias")
        room_id, servers = body.get("room_id"), body.get("servers")
        if not isinstance(room_id, str) or not room_id.startswith("!") or len(room_id) > 255:
            raise not_found("the remote server gave no valid room ID")
        if not isinstance(servers, list):
            servers = []
        kept = [s for s in servers if isinstance(s, str) and 0 < len(s) <= 255][:MAX_SERVERS]
        if server not in kept:
            kept.insert(0, server)
        return {"room_id": room_id, "servers": kept}
