"""The I/O half of server-name resolution (S-S API "Resolving server names"): DNS through
dnspython and the system resolver, ``.well-known/matrix/server`` over HTTPS with its cache, and
the egress filter applied to every address we would connect to.

The decisions are made by :mod:`bastion.core.server_name_resolution`; this module only answers
its queries. Addresses are resolved here once and the connection is made to exactly those
addresses (aiohttp asks :class:`PinnedResolver`, never DNS), so a name cannot re-resolve to a
private address between the check and the connect (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from bastion.core.egress_filter import IPNetwork, ip_allowed
from bastion.core.server_name_resolution import (
    WELL_KNOWN_MAX_BYTES,
    Resolution,
    ResolutionError,
    SrvLookup,
    SrvRecord,
    WellKnownLookup,
    parse_well_known,
    resolve_server_name,
    well_known_cache_ms,
)

log = logging.getLogger("bastion.federation.resolver")

MAX_REDIRECTS = 5
WELL_KNOWN_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=10)
DNS_TIMEOUT = 10.0


class FederationError(Exception):
    """An outbound federation request could not be made (resolution, egress filter, TLS,
    connection, timeout, or a response that is not JSON)."""


class EgressDenied(FederationError):
    """Every address of the destination is in a range the egress filter refuses."""


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver: answers only with addresses pinned beforehand (already filtered), and
    re-checks them against the egress filter."""

    def __init__(self, allowed: tuple[IPNetwork, ...]) -> None:
        self._pins: dict[tuple[str, int], tuple[str, ...]] = {}
        self._allowed = allowed

    def pin(self, host: str, port: int, ips: Iterable[str]) -> None:
        self._pins[(host.lower(), port)] = tuple(ips)

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[ResolveResult]:
        ips = self._pins.get((host.lower(), port))
        if not ips:
            raise OSError(f"no pinned address for {host}:{port}")
        out: list[ResolveResult] = []
        for ip in ips:
            if not ip_allowed(ip, self._allowed):
                continue
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            out.append({"hostname": host, "host": ip, "port": port, "family": fam,
                        "proto": 0, "flags": socket.AI_NUMERICHOST})  # fmt: skip
        if not out:
            raise OSError(f"every address of {host} is refused by the egress filter")
        return out

    async def close(self) -> None:
        return None


@dataclass
class _Cached:
    value: str | None
    expires_ms: int


class ServerNameResolver:
    """Runs the resolution procedure with real DNS and HTTPS. ``session`` is a callable giving
    the shared aiohttp session (whose connector uses ``pins``)."""

    def __init__(
        self,
        allowed: tuple[IPNetwork, ...],
        ssl_context: ssl.SSLContext,
        pins: PinnedResolver,
        session: Callable[[], aiohttp.ClientSession],
        now_ms: Callable[[], int],
    ) -> None:
        self.allowed = allowed
        self.ssl_context = ssl_context
        self.pins = pins
        self._session = session
        self._now_ms = now_ms
        self._well_known: dict[str, _Cached] = {}
        self._dns_resolver = None

    def _dns(self):
        """The dnspython resolver, made (and dnspython imported: 3 MiB) on first use."""
        if self._dns_resolver is None:
            import dns.asyncresolver

            self._dns_resolver = dns.asyncresolver.Resolver()
            self._dns_resolver.lifetime = DNS_TIMEOUT
        return self._dns_resolver

    async def resolve(self, server_name: str) -> Resolution:
        """Raises :class:`FederationError` when the name cannot be resolved."""
        gen = resolve_server_name(server_name)
        try:
            query = next(gen)
            while True:
                if isinstance(query, WellKnownLookup):
                    answer: object = await self.well_known(query.hostname)
                elif isinstance(query, SrvLookup):
                    answer = await self.srv(query.name)
                else:
                    answer = await self.addresses(query.hostname, query.allow_cname)
                query = gen.send(answer)
        except StopIteration as stop:
            return stop.value
        except ResolutionError as e:
            raise FederationError(str(e)) from None

    # -- DNS ------------------------------------------------------------------------------------
    async def addresses(self, hostname: str, allow_cname: bool = True) -> list[str]:
        """AAAA/A addresses of ``hostname`` that the egress filter allows (may be empty).

        With ``allow_cname`` the system resolver is used (CNAMEs followed, hosts file honoured);
        without, DNS is asked directly and an alias yields nothing (an SRV target must not be an
        alias, RFC 2782)."""
        if is_ip(hostname):
            ips = [hostname.strip("[]")]
        elif allow_cname:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    hostname, None, type=socket.SOCK_STREAM
                )
            except (OSError, UnicodeError):
                return []
            ips = [str(info[4][0]) for info in infos]
        else:
            import dns.exception
            import dns.name

            ips = []
            resolver = self._dns()
            qname = dns.name.from_text(hostname)
            for rdtype in ("AAAA", "A"):
                try:
                    answer = await resolver.resolve(qname, rdtype)
                except (dns.exception.DNSException, OSError):
                    continue
                if answer.canonical_name != qname:
                    log.info("SRV target %s is an alias; ignored (RFC 2782)", hostname)
                    return []
                ips += [r.address for r in answer]
        seen = dict.fromkeys(ips)
        allowed = [ip for ip in seen if ip_allowed(ip, self.allowed)]
        if seen and not allowed:
            log.info("every address of %s is refused by the egress filter", hostname)
        return allowed

    async def srv(self, name: str) -> list[SrvRecord]:
        import dns.exception
        import dns.resolver

        try:
            answer = await self._dns().resolve(name, "SRV")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.DNSException, OSError) as e:
            log.info("SRV look-up for %s failed: %s", name, e)
            return []
        return [
            SrvRecord(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True) or ".")
            for r in answer
        ]

    # -- .well-known ----------------------------------------------------------------------------
    async def well_known(self, hostname: str) -> str | None:
        now = self._now_ms()
        cached = self._well_known.get(hostname)
        if cached is not None and cached.expires_ms > now:
            return cached.value
        value: str | None = None
        headers: dict = {}
        try:
            value, headers = await self._fetch_well_known(hostname)
        except (TimeoutError, FederationError, aiohttp.ClientError, OSError, ssl.SSLError) as e:
            log.info(".well-known/matrix/server of %s: %s", hostname, e)
        ttl = well_known_cache_ms(headers, now, value is not None)
        if ttl > 0:
            self._well_known[hostname] = _Cached(value, now + ttl)
            if len(self._well_known) > 10000:
                self._well_known.pop(next(iter(self._well_known)))
        return value

    async def _fetch_well_known(self, hostname: str) -> tuple[str | None, dict]:
        url = URL.build(scheme="https", host=hostname, path="/.well-known/matrix/server")
        seen: set[str] = set()
        for _ in range(MAX_REDIRECTS + 1):
            if url.scheme != "https" or not url.host:
                raise FederationError(f"refusing to follow a redirect to {url}")
            if str(url) in seen:
                raise FederationError("redirect loop")
            seen.add(str(url))
            port = url.port or 443
            ips = await self.addresses(url.host, True)
            if not ips:
                raise FederationError(f"no allowed address for {url.host}")
            if not is_ip(url.host):
                self.pins.pin(url.host, port, ips)
            async with self._session().get(
                url, allow_redirects=False, ssl=self.ssl_context, timeout=WELL_KNOWN_TIMEOUT
            ) as resp:
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                    url = url.join(URL(resp.headers["Location"]))
                    continue
                body = await resp.content.read(WELL_KNOWN_MAX_BYTES + 1)
                return parse_well_known(resp.status, body), dict(resp.headers)
        raise FederationError("too many redirects")
