"""Outbound federation requests (S-S API "API standards", "TLS", "Request Authentication").

``await hs.federation.client.request(method, destination, path, body=None, query=None)``
resolves ``destination`` (:mod:`bastion.federation.resolver`), connects to the resolved
addresses that pass the egress filter, verifies the certificate for the expected name (system
store, or the configured CA bundle), sends ``Host``/SNI as the spec says, signs the request with
``X-Matrix`` (``destination`` included), and returns ``(status, json_body)``.

``path`` starts with ``/_matrix/`` and must already be percent-encoded segment by segment
(``urllib.parse.quote(room_id, safe="")``); it is sent and signed exactly as given. ``query``
values may be strings or lists of strings (repeated keys). Failures to reach the server raise
:class:`FederationError`; an HTTP error status is returned, not raised.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from yarl import URL

from bastion.core.egress_filter import ip_allowed, parse_networks
from bastion.core.x_matrix import authorization_header
from bastion.errors import M_UNKNOWN
from bastion.federation.resolver import (
    EgressDenied,
    FederationError,
    PinnedResolver,
    Resolution,
    ServerNameResolver,
    is_ip,
)
from bastion.federation.tls import client_ssl_context

if TYPE_CHECKING:
    from bastion.federation.acl import FederationACL
    from bastion.server import HomeServer

log = logging.getLogger("bastion.federation.client")

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0
USER_AGENT = "Bastion"

__all__ = ["EgressDenied", "FederationClient", "FederationError"]


class FederationClient:
    def __init__(self, hs: HomeServer, acl: FederationACL) -> None:
        self.hs = hs
        self.acl = acl
        config = hs.config
        self.allowed = parse_networks(config.federation_allow_ips)
        self.ssl_context: ssl.SSLContext = client_ssl_context(config.federation_ca_file or None)
        self.pins = PinnedResolver(self.allowed)
        self._session: aiohttp.ClientSession | None = None
        self.resolver = ServerNameResolver(
            self.allowed, self.ssl_context, self.pins, self.session, hs.now_ms
        )

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=self.pins, use_dns_cache=False, limit=200, limit_per_host=16,
                ssl=self.ssl_context,
            )  # fmt: skip
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT},
                auto_decompress=True,
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str | list[str]] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> tuple[int, Any]:
        """Send a signed federation request; see the module docstring."""
        if not path.startswith("/_matrix/"):
            raise ValueError("federation paths start with /_matrix/")
        if destination == self.hs.server_name:
            raise FederationError("refusing to send a federation request to ourselves")
        if not self.acl.server_allowed(destination):
            # The server-wide list (federation_domain_allow / _deny) applies both ways.
            raise EgressDenied(f"{destination} is refused by federation_domain_allow/_deny")
        method = method.upper()
        uri = path
        if query:
            uri += "?" + urlencode(
                [(k, v) for k, vs in query.items() for v in ([vs] if isinstance(vs, str) else vs)],
                quote_via=quote,
            )
        content = body if method in ("PUT", "POST") else None
        if content is None and method in ("PUT", "POST"):
            content = {}
        key = self.hs.signing_key
        headers = {
            "Authorization": authorization_header(
                method, uri, self.hs.server_name, destination, key.key_id, key.key, content
            ),
        }
        data = None
        if content is not None:
            data = orjson.dumps(content)
            headers["Content-Type"] = "application/json"
        return await self._send(method, destination, uri, headers, data, timeout)

    async def _send(
        self, method: str, destination: str, uri: str, headers: dict, data: bytes | None,
        timeout: float,
    ) -> tuple[int, Any]:  # fmt: skip
        resolution, targets = await self._targets(destination)
        headers = {**headers, "Host": resolution.host_header}
        client_timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 15))
        last_error: Exception | None = None
        for port, base in targets:
            url = URL(base + uri, encoded=True)
            try:
                async with self.session().request(
                    method, url, headers=headers, data=data, allow_redirects=False,
                    ssl=self.ssl_context, timeout=client_timeout,
                ) as resp:  # fmt: skip
                    raw = await _read_limited(resp, MAX_RESPONSE_BYTES)
                    return resp.status, _decode(resp.status, raw)
            except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as e:
                last_error = e
                log.info("%s %s on %s:%d failed: %s", method, destination, resolution.tls_name,
                         port, e)  # fmt: skip
        raise FederationError(f"{method} to {destination} failed: {last_error}") from None

    async def _targets(self, destination: str) -> tuple[Resolution, list[tuple[int, str]]]:
        """Where a request to ``destination`` goes: its resolution (S-S API "Resolving server
        names") and the ``https://name:port`` bases to try in turn, one per port (SRV may give
        several), with only the addresses the egress filter allows (:class:`EgressDenied` when
        none is left), pinned for the TLS connection."""
        resolution = await self.resolver.resolve(destination)
        endpoints = [
            (ip, port) for ip, port in resolution.endpoints if ip_allowed(ip, self.allowed)
        ]
        if not endpoints:
            raise EgressDenied(f"{destination}: every address is refused by the egress filter")
        host = resolution.tls_name
        url_host = f"[{host}]" if ":" in host else host
        by_port: dict[int, list[str]] = {}
        for ip, port in endpoints:
            by_port.setdefault(port, []).append(ip)
        targets: list[tuple[int, str]] = []
        for port, ips in by_port.items():
            if resolution.sni is not None:
                self.pins.pin(host, port, ips)
            elif ips != [host]:  # an IP-literal name connects to itself only
                continue
            targets.append((port, f"https://{url_host}:{port}"))
        return resolution, targets

    # -- streamed answers (media) ----------------------------------------------------------------
    @asynccontextmanager
    async def stream(
        self, destination: str, path: str, query: Mapping[str, str] | None = None, *,
        sign: bool = True, timeout: float = DEFAULT_TIMEOUT,
    ) -> AsyncIterator[aiohttp.ClientResponse]:  # fmt: skip
        """A ``GET`` to another server whose answer is read by the caller as it arrives (media
        files are not held in memory): the response, open for the body of the ``async with``.
        Resolved, filtered and TLS-checked as :meth:`request`; signed with X-Matrix unless
        ``sign`` is false (the legacy unauthenticated media endpoints). Redirects are not
        followed. Failing to connect raises :class:`FederationError`."""
        if not path.startswith("/_matrix/"):
            raise ValueError("federation paths start with /_matrix/")
        if destination == self.hs.server_name:
            raise FederationError("refusing to send a federation request to ourselves")
        if not self.acl.server_allowed(destination):
            raise EgressDenied(f"{destination} is refused by federation_domain_allow/_deny")
        uri = path + ("?" + urlencode(list(query.items()), quote_via=quote) if query else "")
        headers: dict[str, str] = {}
        if sign:
            key = self.hs.signing_key
            headers["Authorization"] = authorization_header(
                "GET", uri, self.hs.server_name, destination, key.key_id, key.key, None
            )
        resolution, targets = await self._targets(destination)
        headers["Host"] = resolution.host_header
        client_timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 15))
        last_error: Exception | None = None
        for port, base in targets:
            url = URL(base + uri, encoded=True)
            try:
                resp = await self.session().get(
                    url, headers=headers, allow_redirects=False, ssl=self.ssl_context,
                    timeout=client_timeout,
                )  # fmt: skip
            except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as e:
                last_error = e
                log.info("GET %s on %s:%d failed: %s", destination, resolution.tls_name, port, e)
                continue
            async with resp:
                yield resp
            return
        raise FederationError(f"GET to {destination} failed: {last_error}") from None

    @asynccontextmanager
    async def open_url(
        self, url: str, *, timeout: float = DEFAULT_TIMEOUT
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A plain ``GET`` of an ``http``/``https`` URL another server pointed us to (a media
        ``Location``): its host's addresses pass the egress filter and are pinned, as for
        ``.well-known``; nothing is signed and redirects are not followed."""
        target = URL(url)
        if target.scheme not in ("http", "https") or not target.host:
            raise EgressDenied("only http and https URLs are followed")
        port = target.port or (443 if target.scheme == "https" else 80)
        ips = await self.resolver.addresses(target.host, True)
        if not ips:
            raise EgressDenied(f"no address of {target.host} passes the egress filter")
        if not is_ip(target.host):
            self.pins.pin(target.host, port, ips)
        client_timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 15))
        try:
            resp = await self.session().get(
                target, allow_redirects=False, ssl=self.ssl_context, timeout=client_timeout
            )
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as e:
            raise FederationError(f"GET {target.host} failed: {e}") from None
        async with resp:
            yield resp


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise FederationError("response too large")
    data = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        data += chunk
        if len(data) > limit:
            raise FederationError("response too large")
    return bytes(data)


def _decode(status: int, raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        if 200 <= status < 300:
            raise FederationError("response is not JSON") from None
        return {"errcode": M_UNKNOWN, "error": f"non-JSON response with status {status}"}
