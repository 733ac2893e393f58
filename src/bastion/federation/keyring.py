"""The keyring: our own published keys, other servers' keys fetched directly or through
notaries, and the checks that use them (S-S API "Retrieving server keys", "Request
Authentication", "Validating hashes and signatures on received events"; key validity per
``rooms/fragments/v5-signing-requirements.md``).

``hs.federation.keyring``:

* ``await get_verify_keys(server, key_ids, minimum_valid_until_ts)`` → ``{key_id:
  ServerVerifyKey}`` holding those of ``key_ids`` known valid until at least the given time
  (current and old keys). Missing ones are fetched from the server itself, then from the
  configured notaries (``federation_trusted_key_servers``); banned keys never come back.
* ``await verify_event_signatures(event, room_version)``: PDU checks 2 (signatures of every
  required server, with keys valid at ``origin_server_ts`` in v5+) and 3 (the content hash);
  raises ``SignatureError`` on a bad or missing signature, returns whether the content hash
  matched (if not, carry on with the redacted event).
* ``await verify_request(method, uri, content, authorization)`` → the origin server name, or
  401 ``M_UNAUTHORIZED`` (missing or malformed header, wrong destination, unknown or old key, bad
  signature).
* ``own_key_response()`` and ``await notary_query(server, minimum_valid_until_ts)`` serve
  ``/_matrix/key/v2/server`` and ``/_matrix/key/v2/query``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bastion.core.events import required_signers, verify_event
from bastion.core.room_versions import get_room_version
from bastion.core.server_keys import (
    KeyResponseError,
    ServerKeys,
    ServerVerifyKey,
    check_notary_signature,
    effective_valid_until,
    key_valid_for_event,
    key_valid_for_request,
    server_key_response,
    validate_key_response,
)
from bastion.core.signing import (
    SignatureError,
    encode_verify_key,
    sign_json,
    signing_key_ids,
    verify_key_from_base64,
)
from bastion.core.x_matrix import XMatrixError, check_destination, parse_authorization
from bastion.core.x_matrix import verify_request as verify_request_signature
from bastion.federation.resolver import FederationError

if TYPE_CHECKING:
    from bastion.federation.client import FederationClient
    from bastion.server import HomeServer

log = logging.getLogger("bastion.federation.keyring")

#: How long our published keys are valid ("avoid returning responses that expire in less than
#: an hour"; peers re-fetch after this).
OWN_KEY_VALIDITY_MS = 24 * 3600 * 1000
#: After failing to obtain a key, do not ask again for it before this long.
MISSING_KEY_RETRY_MS = 60 * 1000
#: Notary: at most this many servers in one /_matrix/key/v2/query.
MAX_NOTARY_SERVERS = 100
KEY_FETCH_TIMEOUT = 20.0


class Keyring:
    def __init__(self, hs: HomeServer, client: FederationClient) -> None:
        self.hs = hs
        self.client = client
        self.banned: frozenset[str] = frozenset(hs.config.federation_banned_signing_keys)
        self.notaries: tuple[str, ...] = tuple(hs.config.federation_trusted_key_servers)
        self._inflight: dict[str, asyncio.Future] = {}
        self._missing: dict[tuple[str, str], int] = {}
        self._failed_fetch: dict[str, int] = {}

    # -- our own keys ---------------------------------------------------------------------------
    def own_keys(self) -> dict[str, ServerVerifyKey]:
        """This server's verify keys: the current signing key and the old ones it published."""
        sk = self.hs.signing_key
        now = self.hs.now_ms()
        keys = {
            sk.key_id: ServerVerifyKey(
                self.hs.server_name, sk.key_id, sk.key.verify_key, now + OWN_KEY_VALIDITY_MS
            )
        }
        for key_id, b64, expired in self.hs.store.get_local_old_signing_keys():
            if key_id != sk.key_id:
                keys[key_id] = ServerVerifyKey(
                    self.hs.server_name, key_id, verify_key_from_base64(b64), expired, old=True
                )
        return keys

    def own_key_response(self) -> dict:
        sk = self.hs.signing_key
        return server_key_response(
            self.hs.server_name, sk.key_id, sk.key, self.hs.now_ms() + OWN_KEY_VALIDITY_MS,
            self.hs.store.get_local_old_signing_keys(),
        )  # fmt: skip

    # -- looking keys up ------------------------------------------------------------------------
    def _stored_keys(self, server: str) -> dict[str, ServerVerifyKey]:
        out = {}
        for row in self.hs.store.get_server_keys(server):
            if row["verify_key"] in self.banned:
                continue
            try:
                key = verify_key_from_base64(row["verify_key"])
            except Exception:  # noqa: BLE001
                continue
            out[row["key_id"]] = ServerVerifyKey(
                server, row["key_id"], key, row["valid_until_ts"], bool(row["is_old"])
            )
        return out

    def _known(self, server: str) -> dict[str, ServerVerifyKey]:
        return self.own_keys() if server == self.hs.server_name else self._stored_keys(server)

    async def get_verify_keys(
        self, server: str, key_ids: Iterable[str], minimum_valid_until_ts: int = 0
    ) -> dict[str, ServerVerifyKey]:
        wanted = list(dict.fromkeys(key_ids))
        known = self._known(server)

        def satisfied() -> dict[str, ServerVerifyKey]:
            return {
                k: known[k]
                for k in wanted
                if k in known and known[k].valid_until_ts >= minimum_valid_until_ts
            }

        found = satisfied()
        if len(found) == len(wanted) or server == self.hs.server_name:
            return found
        now = self.hs.now_ms()
        missing = [k for k in wanted if k not in found]
        if all(self._missing.get((server, k), 0) > now for k in missing):
            return found
        await self._fetch_direct(server)
        known = self._known(server)
        found = satisfied()
        missing = [k for k in wanted if k not in found]
        if missing and self.notaries:
            await self._fetch_via_notaries(server, missing, minimum_valid_until_ts)
            known = self._known(server)
            found = satisfied()
            missing = [k for k in wanted if k not in found]
        retry_at = self.hs.now_ms() + MISSING_KEY_RETRY_MS
        for k in missing:
            self._missing[(server, k)] = retry_at
        if len(self._missing) > 100000:
            self._missing.clear()
        return found

    async def _fetch_direct(self, server: str) -> ServerKeys | None:
        """GET /_matrix/key/v2/server from ``server`` (one fetch at a time per server)."""
        fut = self._inflight.get(server)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[server] = fut
        try:
            result = await self._do_fetch_direct(server)
            fut.set_result(result)
            return result
        except BaseException as e:
            fut.set_result(None)
            if not isinstance(e, Exception):
                raise
            log.warning("fetching keys of %s failed: %s", server, e)
            return None
        finally:
            self._inflight.pop(server, None)

    async def _do_fetch_direct(self, server: str) -> ServerKeys | None:
        try:
            status, body = await self.client.request(
                "GET", server, "/_matrix/key/v2/server", timeout=KEY_FETCH_TIMEOUT
            )
        except FederationError as e:
            log.info("cannot fetch keys of %s: %s", server, e)
            self._failed_fetch[server] = self.hs.now_ms()
            return None
        if status != 200:
            log.info("keys of %s: HTTP %d", server, status)
            self._failed_fetch[server] = self.hs.now_ms()
            return None
        now = self.hs.now_ms()
        try:
            keys = validate_key_response(body, server, now, self.banned)
        except KeyResponseError as e:
            log.warning("refusing key response from %s: %s", server, e)
            self._failed_fetch[server] = now
            return None
        await self._store(keys, now, server, body)
        return keys

    async def _store(self, keys: ServerKeys, now: int, from_server: str, raw: dict | None) -> None:
        rows = [
            (k.key_id, encode_verify_key(k.key), k.valid_until_ts, k.old) for k in keys.all_keys()
        ]
        store = self.hs.store

        def fn(conn) -> None:
            store.store_server_keys_in(conn, keys.server_name, rows, now, from_server)
            if raw is not None:
                store.store_server_key_response_in(conn, keys.server_name, raw, now)

        await store.transaction(fn)

    async def _fetch_via_notaries(self, server: str, key_ids: list[str], minimum: int) -> None:
        query = {"server_keys": {server: {k: {"minimum_valid_until_ts": minimum} for k in key_ids}}}
        for notary in self.notaries:
            if notary == server or notary == self.hs.server_name:
                continue
            try:
                status, body = await self.client.request(
                    "POST", notary, "/_matrix/key/v2/query", query, timeout=KEY_FETCH_TIMEOUT
                )
            except FederationError as e:
                log.info("notary %s unreachable: %s", notary, e)
                continue
            if status != 200 or not isinstance(body, dict):
                continue
            entries = body.get("server_keys")
            if not isinstance(entries, list):
                continue
            got = False
            for entry in entries:
                if not isinstance(entry, dict) or entry.get("server_name") != server:
                    continue
                now = self.hs.now_ms()
                try:
                    keys = validate_key_response(entry, server, now, self.banned)
                    notary_key_ids = signing_key_ids(entry, notary)
                    notary_keys = await self.get_verify_keys(notary, notary_key_ids, now)
                    check_notary_signature(
                        entry, notary,
                        {k: v.key for k, v in notary_keys.items() if key_valid_for_request(v, now)},
                    )  # fmt: skip
                except KeyResponseError as e:
                    log.warning("refusing keys of %s from notary %s: %s", server, notary, e)
                    continue
                await self._store(keys, now, notary, None)
                got = True
            if got and all(k in self._stored_keys(server) for k in key_ids):
                return

    # -- checks ---------------------------------------------------------------------------------
    async def verify_event_signatures(self, event: dict, room_version: str) -> bool:
        """PDU checks 2–3; see the module docstring."""
        rv = get_room_version(room_version)
        if not isinstance(event, dict):
            raise SignatureError("event is not an object")
        ots = event.get("origin_server_ts")
        keys: dict[str, dict] = {}
        for server in required_signers(event, room_version):
            key_ids = signing_key_ids(event, server)
            minimum = ots if rv.enforce_key_validity and isinstance(ots, int) else 0
            found = await self.get_verify_keys(server, key_ids, minimum)
            keys[server] = {
                k: v.key
                for k, v in found.items()
                if key_valid_for_event(v, ots, rv.enforce_key_validity)
            }
        return verify_event(event, room_version, keys)

    async def verify_request(
        self, method: str, uri: str, content: object | None, authorization: str | None
    ) -> str:
        """Authenticate an inbound request; returns the origin server name (401 otherwise)."""
        auth = parse_authorization(authorization)
        check_destination(auth, self.hs.server_name)
        if auth.origin == self.hs.server_name:
            raise XMatrixError("X-Matrix: a request cannot come from this server")
        now = self.hs.now_ms()
        keys = await self.get_verify_keys(auth.origin, [auth.key], now)
        key = keys.get(auth.key)
        if key is None or not key_valid_for_request(key, now):
            raise XMatrixError(f"X-Matrix: no valid key {auth.key} of {auth.origin}")
        verify_request_signature(auth, method, uri, self.hs.server_name, content, key.key)
        return auth.origin

    # -- notary ---------------------------------------------------------------------------------
    async def notary_query(self, server: str, minimum_valid_until_ts: int) -> list[dict]:
        """The key responses we can vouch for, each with our signature added: ``server``'s last
        response fetched directly, refreshed first when it is older than asked for."""
        if server == self.hs.server_name:
            return [self.own_key_response()]
        cached = self.hs.store.get_server_key_response(server)
        now = self.hs.now_ms()
        stale = cached is None or effective_valid_until(
            cached[0]["valid_until_ts"], cached[1]
        ) < max(minimum_valid_until_ts, now)
        if stale and self._failed_fetch.get(server, 0) + MISSING_KEY_RETRY_MS <= now:
            await self._fetch_direct(server)
            cached = self.hs.store.get_server_key_response(server)
        if cached is None:
            return []
        sk = self.hs.signing_key
        return [sign_json(cached[0], self.hs.server_name, sk.key_id, sk.key)]
