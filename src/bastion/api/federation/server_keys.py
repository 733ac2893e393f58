"""S-S API "Retrieving server keys": publishing our keys and acting as a notary.

These endpoints are unauthenticated (keys_server.yaml, keys_query.yaml have no security).
"""

from __future__ import annotations

import asyncio

from bastion.api.http import Request, Router, error
from bastion.core.identifiers import is_valid_server_name
from bastion.federation.keyring import MAX_NOTARY_SERVERS


def _minimum(value: object, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise error("M_INVALID_PARAM", "minimum_valid_until_ts must be an integer")
    return value


def register(router: Router, hs) -> None:
    async def get_server(req: Request) -> dict:
        """GET /_matrix/key/v2/server — "Publishing Keys" (keys_server.yaml): our current key,
        our retired keys as old_verify_keys with expired_ts, self-signed."""
        return hs.keyring.own_key_response()

    async def query_one(req: Request) -> dict:
        """GET /_matrix/key/v2/query/{serverName} — "Querying Keys Through Another Server"
        (keys_query.yaml). minimum_valid_until_ts defaults to now."""
        server = req.params["serverName"]
        if not is_valid_server_name(server):
            raise error("M_INVALID_PARAM", "serverName is not a valid server name")
        minimum = req.query_int("minimum_valid_until_ts", hs.now_ms())
        return {"server_keys": await hs.keyring.notary_query(server, minimum)}

    async def query_many(req: Request) -> dict:
        """POST /_matrix/key/v2/query — "Querying Keys Through Another Server" (keys_query.yaml):
        ``{server_keys: {serverName: {keyId: {minimum_valid_until_ts}}}}``; we may return every key
        of a server whatever key IDs were asked; invalid server names are skipped."""
        body = await req.json()
        criteria = body.get("server_keys")
        if not isinstance(criteria, dict):
            raise error("M_BAD_JSON", "server_keys must be an object")
        if len(criteria) > MAX_NOTARY_SERVERS:
            raise error("M_INVALID_PARAM", f"at most {MAX_NOTARY_SERVERS} servers per query")
        now = hs.now_ms()
        asks: dict[str, int] = {}
        for server, by_key in criteria.items():
            if not isinstance(by_key, dict):
                raise error("M_BAD_JSON", "each server's criteria must be an object")
            minimum = now
            for c in by_key.values():
                if not isinstance(c, dict):
                    raise error("M_BAD_JSON", "each key's criteria must be an object")
                minimum = max(minimum, _minimum(c.get("minimum_valid_until_ts"), now))
            if is_valid_server_name(server):
                asks[server] = minimum
        results = await asyncio.gather(
            *(hs.keyring.notary_query(server, minimum) for server, minimum in asks.items())
        )
        return {"server_keys": [r for rs in results for r in rs]}

    router.add("GET", "/_matrix/key/v2/server", get_server, auth=False)
    router.add("GET", "/_matrix/key/v2/query/{serverName}", query_one, auth=False)
    router.add("POST", "/_matrix/key/v2/query", query_many, auth=False)
