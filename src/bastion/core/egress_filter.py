"""The egress filter for outbound federation: which IP addresses we refuse to connect to.

Federation makes us fetch URLs named by other servers (and, as a notary, by anyone), so without
a filter a remote party could make us reach services on our own network (SSRF). We refuse
private, loopback, link-local, shared, documentation, benchmarking, multicast and reserved
ranges unless the configuration lifts a range explicitly (``federation_allow_ips``). IPv4-mapped,
IPv4-compatible, NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses are judged by the IPv4 address
they carry. The check is applied to each resolved address at connect time, so a name that
re-resolves to a private address (DNS rebinding) is still refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DENIED_RANGES: tuple[str, ...] = (
    # IPv4 (RFC 6890 special-purpose registry and friends)
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "255.255.255.255/32",
    # IPv6
    "::/128", "::1/128", "::ffff:0:0/96", "::/96", "64:ff9b::/96", "64:ff9b:1::/48",
    "100::/64", "2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)  # fmt: skip

_DENIED = tuple(ipaddress.ip_network(n) for n in DENIED_RANGES)


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse CIDR strings (ValueError on a bad one); a bare address is a /32 or /128."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def peer_address(peer: str | None) -> IPAddress | None:
    """A connection's peer address as one address per host: the zone ID dropped and an
    IPv4-mapped IPv6 address as the IPv4 address it carries; None for anything that is not an
    address (a Unix socket peer). Rate limits, throttles and allow lists key on it."""
    if not peer:
        return None
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    packed = addr.packed
    if packed[:12] == b"\0" * 12 and packed[12:] != b"\0\0\0\0" and packed[12:] != b"\0\0\0\1":
        return ipaddress.IPv4Address(packed[12:])  # IPv4-compatible (deprecated)
    if packed[:12] == bytes.fromhex("0064ff9b0000000000000000"):
        return ipaddress.IPv4Address(packed[12:])  # NAT64 well-known prefix
    return None


def ip_allowed(ip: str | IPAddress, allowed: Iterable[IPNetwork] = ()) -> bool:
    """Whether we may connect to ``ip``: allowed if a configured range contains it (or, for an
    address carrying an IPv4 address, contains that), else if no denied range does."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0] if isinstance(ip, str) else ip)
    except ValueError:
        return False
    candidates: list[IPAddress] = [addr]
    if isinstance(addr, ipaddress.IPv6Address):
        inner = _embedded_ipv4(addr)
        if inner is not None:
            candidates.append(inner)
    allowed = tuple(allowed)
    for a in candidates:
        if any(a.version == n.version and a in n for n in allowed):
            return True
    judged = candidates[-1]  # the embedded IPv4 address when there is one
    return not any(judged.version == n.version and judged in n for n in _DENIED)
