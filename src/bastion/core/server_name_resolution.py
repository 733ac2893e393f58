"""Resolving server names (S-S API "Server discovery" → "Resolving server names").

A sans-I/O decision procedure. :func:`resolve_server_name` is a generator: it *yields* the
look-ups it needs (:class:`WellKnownLookup`, :class:`SrvLookup`, :class:`AddressLookup`), is
*sent* their answers, and *returns* a :class:`Resolution` (where to connect, which ``Host``
header and which certificate name to expect). The shell (``bastion.federation.resolver``) does the
DNS and HTTPS; tests drive the same generator with canned answers (:func:`drive`).

The steps, in the spec's numbering:

1. IP literal: that address, the given port or 8448; certificate for the IP; ``Host`` is the server
   name (with its port if given); no SNI (RFC 6066 forbids SNI for IP addresses).
2. Hostname with explicit port: CNAME/AAAA/A for the hostname; ``Host`` the server name with port;
   certificate for the hostname.
3. ``https://<hostname>/.well-known/matrix/server``; when it names a delegated server:
   3.1 IP literal, 3.2 hostname with port, 3.3 SRV ``_matrix-fed._tcp.<delegated>``,
   3.4 [deprecated] SRV ``_matrix._tcp.<delegated>``, 3.5 AAAA/A with port 8448 — all with
   ``Host`` and certificate name the delegated hostname (with the delegated port in 3.1/3.2).
4. SRV ``_matrix-fed._tcp.<hostname>``; 5. [deprecated] SRV ``_matrix._tcp.<hostname>``;
6. AAAA/A with port 8448 — ``Host`` and certificate name the original hostname.

An SRV target must not be an alias (RFC 2782: "the name MUST NOT be an alias"), so its address
look-up is made with ``allow_cname=False``; a target ``.`` means "no service here".
Also here: :func:`parse_well_known` (the body rules of wellknown.yaml) and
:func:`well_known_cache_ms` (24 h default, 48 h cap, errors 1 h).
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bastion.core.identifiers import parse_server_name
from bastion.errors import MatrixError

DEFAULT_PORT = 8448
WELL_KNOWN_DEFAULT_CACHE_MS = 24 * 3600 * 1000
WELL_KNOWN_MAX_CACHE_MS = 48 * 3600 * 1000
WELL_KNOWN_ERROR_CACHE_MS = 3600 * 1000
#: The largest ``.well-known/matrix/server`` body we read.
WELL_KNOWN_MAX_BYTES = 50 * 1024


class ResolutionError(Exception):
    """The server name cannot be resolved to any address."""


@dataclass(frozen=True, slots=True)
class WellKnownLookup:
    """Fetch ``https://<hostname>/.well-known/matrix/server``; answer: the ``m.server`` value
    (see :func:`parse_well_known`) or ``None`` for any error."""

    hostname: str


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class SrvLookup:
    """Look up SRV records for ``name``; answer: a list of :class:`SrvRecord` (empty if none)."""

    name: str


@dataclass(frozen=True, slots=True)
class AddressLookup:
    """Look up AAAA and A records for ``hostname``; answer: a list of IP address strings (empty
    if none). With ``allow_cname=False`` an alias must yield no addresses."""

    hostname: str
    allow_cname: bool = True


Query = WellKnownLookup | SrvLookup | AddressLookup


@dataclass(frozen=True)
class Resolution:
    """Where and how to connect.

    ``endpoints``: (IP address, port) pairs in order of preference. ``host_header``: the ``Host``
    header. ``tls_name``: the name the certificate must be valid for (a hostname, or an IP
    address without brackets). ``sni``: the SNI to send (``None`` for IP addresses).
    """

    server_name: str
    host_header: str
    tls_name: str
    sni: str | None
    endpoints: tuple[tuple[str, int], ...]


def _ip(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


def resolve_server_name(server_name: str) -> Generator[Query, Any, Resolution]:
    """The decision procedure; see the module docstring. Raises :class:`ResolutionError`."""
    try:
        sn = parse_server_name(server_name)
    except MatrixError as e:
        raise ResolutionError(str(e)) from None
    if sn.is_ip_literal:  # step 1
        ip = _ip(sn.host)
        return Resolution(server_name, server_name, ip, None, ((ip, sn.port or DEFAULT_PORT),))
    if sn.port is not None:  # step 2
        ips = yield AddressLookup(sn.host, True)
        return _done(server_name, server_name, sn.host, [(ip, sn.port) for ip in ips])
    delegated = yield WellKnownLookup(sn.host)  # step 3
    if delegated is not None:
        try:
            d = parse_server_name(delegated)
        except MatrixError:
            d = None
        if d is not None:
            if d.is_ip_literal:  # 3.1
                ip = _ip(d.host)
                return Resolution(server_name, delegated, ip, None, ((ip, d.port or DEFAULT_PORT),))
            if d.port is not None:  # 3.2
                ips = yield AddressLookup(d.host, True)
                return _done(server_name, delegated, d.host, [(ip, d.port) for ip in ips])
            return (yield from _srv_then_default(server_name, d.host))  # 3.3–3.5
    return (yield from _srv_then_default(server_name, sn.host))  # steps 4–6


def _srv_then_default(server_name: str, host: str) -> Generator[Query, Any, Resolution]:
    for service in ("_matrix-fed._tcp.", "_matrix._tcp."):
        records = yield SrvLookup(service + host)
        if not records:
            continue
        usable = [r for r in records if r.target not in (".", "")]
        if not usable:
            raise ResolutionError(f"{service}{host}: SRV says the service is not available")
        endpoints: list[tuple[str, int]] = []
        for rec in order_srv_records(usable):
            ips = yield AddressLookup(rec.target.rstrip("."), False)
            endpoints += [(ip, rec.port) for ip in ips]
        return _done(server_name, host, host, endpoints)
    ips = yield AddressLookup(host, True)
    return _done(server_name, host, host, [(ip, DEFAULT_PORT) for ip in ips])


def _done(
    server_name: str, host_header: str, tls_name: str, endpoints: list[tuple[str, int]]
) -> Resolution:
    if not endpoints:
        raise ResolutionError(f"{server_name}: no address found for {tls_name}")
    seen: dict[tuple[str, int], None] = dict.fromkeys(endpoints)
    return Resolution(server_name, host_header, tls_name, tls_name, tuple(seen))


def order_srv_records(records: list[SrvRecord]) -> list[SrvRecord]:
    """Lowest priority first; within a priority, heavier weight first (RFC 2782 order without
    the random draw, so the result is deterministic)."""
    return sorted(records, key=lambda r: (r.priority, -r.weight, r.target, r.port))


def drive(gen: Generator[Query, Any, Resolution], answer: Callable[[Query], Any]) -> Resolution:
    """Run the procedure synchronously, answering each query with ``answer(query)``."""
    try:
        query = next(gen)
        while True:
            query = gen.send(answer(query))
    except StopIteration as stop:
        result: Resolution = stop.value
        return result


def parse_well_known(status: int, body: bytes) -> str | None:
    """The delegated server name from a ``/.well-known/matrix/server`` response, or ``None``
    when the response is not usable (non-200, not JSON, not an object, ``m.server`` missing or not
    a valid server name). The body is JSON whatever its ``Content-Type`` (wellknown.yaml)."""
    if status != 200 or len(body) > WELL_KNOWN_MAX_BYTES:
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    delegated = value.get("m.server")
    if not isinstance(delegated, str):
        return None
    try:
        parse_server_name(delegated)
    except MatrixError:
        return None
    return delegated


_MAX_AGE = re.compile(r"(?:^|[,\s])(?:s-maxage|max-age)\s*=\s*\"?(\d+)\"?", re.IGNORECASE)


def well_known_cache_ms(headers: Mapping[str, str], now_ms: int, ok: bool) -> int:
    """How long to cache a ``.well-known`` result: errors for an hour; successes per
    ``Cache-Control: max-age`` (``no-store``/``no-cache`` → not cached) or ``Expires``, else 24 h,
    never more than 48 h."""
    if not ok:
        return WELL_KNOWN_ERROR_CACHE_MS
    lower = {k.lower(): v for k, v in headers.items()}
    cc = lower.get("cache-control", "")
    if re.search(r"(?:^|[,\s])no-(?:store|cache)\b", cc, re.IGNORECASE):
        return 0
    m = _MAX_AGE.search(cc)
    if m:
        return min(int(m.group(1)) * 1000, WELL_KNOWN_MAX_CACHE_MS)
    expires = lower.get("expires")
    if expires:
        try:
            when = email.utils.parsedate_to_datetime(expires)
            ms = int(when.timestamp() * 1000) - now_ms
        except (TypeError, ValueError, OverflowError):
            ms = 0  # RFC 9111 §5.3: an invalid Expires means "already expired"
        return max(0, min(ms, WELL_KNOWN_MAX_CACHE_MS))
    return WELL_KNOWN_DEFAULT_CACHE_MS
