"""S-S API "Retrieving server keys": publishing our keys and acting as a notary.

These endpoints are unauthenticated (keys_server.yaml, keys_query.yaml have no security).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bastion.api.http import Request, Router
from bastion.core.identifiers import is_valid_server_name
from bastion.errors import bad_json, invalid_param
from bastion.federation.keyring import MAX_NOTARY_SERVERS

if TYPE_CHECKING:
    from bastion.server import HomeServer


def _minimum(value: object, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_param("minimum_valid_until_ts must be an integer")
    return value


def register(router: Router, hs: HomeServer) -> None:
    fed = hs.require_federation()

    async def get_server(req: Request) -> dict:
        """GET /_matrix/key/v2/server — "Publishing Keys" (keys_server.yaml): our current key,
        our retired keys as old_verify_keys with expired_ts, self-signed."""
        return fed.keyring.own_key_response()

    async def query_one(req: Request) -> dict:
        """GET /_matrix/key/v2/query/{serverName} — "Querying Keys Through Another Server"
        (keys_query.yaml). minimum_valid_until_ts defaults to now."""
        server = req.params["serverName"]
        if not is_valid_server_name(server):
            raise invalid_param("serverName is not a valid server name")
        minimum = req.query_int("minimum_valid_until_ts", hs.now_ms())
        return {"server_keys": await fed.keyring.notary_query(server, minimum)}

    async def query_many(req: Request) -> dict:
        """POST /_matrix/key/v2/query — "Querying Keys Through Another Server" (keys_query.yaml):
        ``{server_keys: {serverName: {keyId: {minimum_valid_until_ts}}}}``; we may return every key
        of a server whatever key IDs were asked; invalid server names are skipped."""
        body = await req.json()
        criteria = body.get("server_keys")
        if not isinstance(criteria, dict):
            raise bad_json("server_keys must be an object")
        if len(criteria) > MAX_NOTARY_SERVERS:
            raise invalid_param(f"at most {MAX_NOTARY_SERVERS} servers per query")
        now = hs.now_ms()
        asks: dict[str, int] = {}
        for server, by_key in criteria.items():
            if not isinstance(by_key, dict):
                raise bad_json("each server's criteria must be an object")
            minimum = now
            for c in by_key.values():
                if not isinstance(c, dict):
                    raise bad_json("each key's criteria must be an object")
                minimum = max(minimum, _minimum(c.get("minimum_valid_until_ts"), now))
            if is_valid_server_name(server):
                asks[server] = minimum
        results = await asyncio.gather(
            *(fed.keyring.notary_query(server, minimum) for server, minimum in asks.items())
        )
        return {"server_keys": [r for rs in results for r in rs]}

    router.add("GET", "/_matrix/key/v2/server", get_server, auth=False)
    router.add("GET", "/_matrix/key/v2/query/{serverName}", query_one, auth=False)
    router.add("POST", "/_matrix/key/v2/query", query_many, auth=False)
