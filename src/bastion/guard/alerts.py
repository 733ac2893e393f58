"""The guard's alerts and metrics (issue 9: "Every action is recorded in the ledger and raised as
an alert: to an admin room, to a webhook, and as metrics").

Configuration: the ``[guard.alerts]`` table (:func:`parse_alerts_config`):

``admin_room``
    A room ID the alerts are posted to (the notices user must be able to post there). Default:
    an automatic "Bastion guard alerts" room owned by the notices user, created on the first
    alert, with every server admin invited (admins made later are invited with the next alert).
``webhook_url``, ``webhook_secret``
    An ``http(s)`` URL each alert is POSTed to as JSON. With a secret, the request carries
    ``X-Bastion-Timestamp`` (ms) and ``X-Bastion-Signature: sha256=<hex HMAC-SHA256 of
    "<timestamp>.<body>" keyed with the secret>`` so the receiver can check it came from this
    server and is fresh. Failures (connection errors, 408, 429, 5xx) are retried with doubling
    back-off (``webhook_max_attempts`` attempts in all); redirects are not followed.
``webhook_timeout_seconds``, ``webhook_max_attempts``, ``queue_size``
    The bound on each webhook request, the attempts per alert, and the queues' bound (an alert
    that finds its queue full is dropped and counted, never waited for).
``coalesce_seconds``
    Repeated alerts of one kind within this window are coalesced: the first is delivered at
    once, the rest are counted and delivered as one "N more" alert when the window closes (a
    flood of attacks does not flood the admin room). 0 delivers every alert.
``metrics_allow_ips``
    The networks (CIDRs) allowed to read ``/_bastion/metrics``; default loopback only.
``server_notices_localpart``
    The notices user's localpart (C-S API "Server Notices"; default ``notices``).
``new_login_notices``
    Whether logins from a new device or network prefix are told to the user (default true).

:class:`Alerts` (``hs.guard.alerts``) never blocks its caller on the network and never raises:
:meth:`Alerts.alert` counts the alert, coalesces it and puts it on bounded queues drained by
background tasks (one for the admin room, one for the webhook, so a dead webhook delays nothing
else), which are drained at shutdown like every other
:class:`~bastion.services.lifecycle.BackgroundService`. :meth:`Alerts.count` keeps Prometheus
counters in memory, served by :mod:`bastion.api.metrics`. The webhook secret and the URL's
path, query and credentials are never logged.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bastion.guard.tables import check_keys, get_bool, get_number, get_str, get_str_list

if TYPE_CHECKING:
    from bastion.server import HomeServer

__all__ = [
    "Alerts",
    "AlertsConfig",
    "parse_alerts_config",
]

log = logging.getLogger(__name__)

WHERE = "guard.alerts"
_KEYS = frozenset({
    "admin_room", "webhook_url", "webhook_secret", "webhook_timeout_seconds",
    "webhook_max_attempts", "queue_size", "coalesce_seconds", "metrics_allow_ips",
    "server_notices_localpart", "new_login_notices",
})  # fmt: skip
_LOCALPART = re.compile(r"[a-z0-9._=/+\-]{1,64}")
_ROOM_ID = re.compile(r"![!-~]{1,254}")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class AlertsConfig:
    """``[guard.alerts]`` (see the module docstring)."""

    admin_room: str | None = None
    webhook_url: str | None = None
    #: Never shown (``repr``), never logged.
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 5
    queue_size: int = 1000
    coalesce_seconds: float = 60.0
    metrics_allow_ips: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in LOOPBACK)
    server_notices_localpart: str = "notices"
    new_login_notices: bool = True

    def metrics_allowed(self, address: str | None) -> bool:
        """True when ``address`` (the TCP peer) is in ``metrics_allow_ips``."""
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == n.version and ip in n for n in self.metrics_allow_ips)


def _optional_str(table: Mapping[str, Any], key: str) -> str | None:
    if key not in table:
        return None
    return get_str(table, key, "", WHERE)


def _webhook_url(value: str) -> str:
    where = f"{WHERE}.webhook_url"
    if len(value) > 2048 or any(c.isspace() or ord(c) < 0x20 for c in value):
        raise ValueError(f"{where} must be an http(s) URL without spaces (at most 2048 chars)")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a bad port
    except ValueError:
        raise ValueError(f"{where} must be an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where} must be an http(s) URL with a host")
    del port
    return value


def parse_alerts_config(table: Mapping[str, Any]) -> AlertsConfig:
    """The ``[guard.alerts]`` table (:class:`ValueError` naming ``guard.alerts.<key>``)."""
    if not isinstance(table, Mapping):
        raise ValueError(f"{WHERE} must be a table")
    check_keys(table, _KEYS, WHERE)
    d = AlertsConfig()
    admin_room = _optional_str(table, "admin_room")
    if admin_room is not None and not (_ROOM_ID.fullmatch(admin_room) and ":" in admin_room):
        raise ValueError(f"{WHERE}.admin_room must be a room ID (!opaque:server)")
    url = _optional_str(table, "webhook_url")
    if url is not None:
        url = _webhook_url(url)
    secret = _optional_str(table, "webhook_secret")
    if secret is not None:
        if url is None:
            raise ValueError(f"{WHERE}.webhook_secret needs {WHERE}.webhook_url")
        if not 16 <= len(secret) <= 1024:
            raise ValueError(f"{WHERE}.webhook_secret must be 16 to 1024 characters")
    nets: list[Network] = []
    for text in get_str_list(table, "metrics_allow_ips", LOOPBACK, WHERE):
        try:
            nets.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"{WHERE}.metrics_allow_ips: {text[:60]!r} is not an address or a CIDR"
            ) from None
    localpart = get_str(table, "server_notices_localpart", d.server_notices_localpart, WHERE)
    if not _LOCALPART.fullmatch(localpart):
        raise ValueError(f"{WHERE}.server_notices_localpart must be 1-64 of a-z 0-9 . _ = / + -")
    return AlertsConfig(
        admin_room=admin_room,
        webhook_url=url,
        webhook_secret=secret,
        webhook_timeout_seconds=get_number(
            table,
            "webhook_timeout_seconds",
            d.webhook_timeout_seconds,
            WHERE,
            minimum=0.1,
            maximum=300,
        ),  # fmt: skip
        webhook_max_attempts=int(
            get_number(
                table,
                "webhook_max_attempts",
                d.webhook_max_attempts,
                WHERE,
                minimum=1,
                maximum=20,
                integer=True,
            )
        ),  # fmt: skip
        queue_size=int(
            get_number(
                table, "queue_size", d.queue_size, WHERE, minimum=1, maximum=100_000, integer=True
            )
        ),  # fmt: skip
        coalesce_seconds=get_number(
            table, "coalesce_seconds", d.coalesce_seconds, WHERE, minimum=0, maximum=86_400
        ),
        metrics_allow_ips=tuple(nets),
        server_notices_localpart=localpart,
        new_login_notices=get_bool(table, "new_login_notices", d.new_login_notices, WHERE),
    )


class Alerts:
    """(Skeleton until the alerts commit.)"""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs

    async def alert(self, kind: str, summary: str, details: Mapping[str, Any]) -> None:
        return None

    def count(self, metric: str, labels: Mapping[str, str] | None = None, n: int = 1) -> None:
        return None
