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

:class:`Alerts` (``hs.guard.alerts``) never blocks its caller on the network and never raises:
:meth:`Alerts.alert` counts the alert, coalesces it and puts it on bounded queues drained by
background tasks (one for the admin room, one for the webhook, so a dead webhook delays nothing
else), which are drained at shutdown like every other
:class:`~bastion.services.lifecycle.BackgroundService`. :meth:`Alerts.count` keeps Prometheus
counters in memory, served by :mod:`bastion.api.metrics`. The webhook secret and the URL's
path, query and credentials are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from bastion.core.egress_filter import peer_address
from bastion.core.identifiers import parse_room_id
from bastion.errors import MatrixError
from bastion.guard.tables import check_keys, get_number, get_str, get_str_list
from bastion.services.lifecycle import BackgroundService

if TYPE_CHECKING:
    from bastion.server import HomeServer

__all__ = [
    "Alerts",
    "AlertsConfig",
    "Counters",
    "parse_alerts_config",
    "webhook_signature",
]

log = logging.getLogger(__name__)

WHERE = "guard.alerts"
_KEYS = frozenset({
    "admin_room", "webhook_url", "webhook_secret", "webhook_timeout_seconds",
    "webhook_max_attempts", "queue_size", "coalesce_seconds", "metrics_allow_ips",
    "server_notices_localpart",
})  # fmt: skip
_LOCALPART = re.compile(r"[a-z0-9._=/+\-]{1,64}")
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

    def metrics_allowed(self, address: str | None) -> bool:
        """True when ``address`` (the TCP peer) is in ``metrics_allow_ips``."""
        ip = peer_address(address)
        if ip is None:
            return False
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
    if admin_room is not None:
        try:
            parse_room_id(admin_room)
            ok = all(0x20 < ord(c) < 0x7F for c in admin_room)
        except MatrixError:
            ok = False
        if not ok:
            raise ValueError(f"{WHERE}.admin_room must be a room ID")
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
    )


# ------------------------------------------------------------------------------------------------
# Counters (Prometheus text exposition format 0.0.4)
# ------------------------------------------------------------------------------------------------
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: The guard's counters, described (others may be counted too: they get a generic HELP).
KNOWN_METRICS: dict[str, str] = {
    "bastion_guard_decisions_total": "Guard decisions recorded, by source, outcome and status.",
    "bastion_guard_rate_limited_total": "Requests refused by a rate limit, by limit.",
    "bastion_guard_login_blocks_total": "Login and registration throttles started, by source.",
    "bastion_guard_login_throttles_total": "Login throttles started, by scope.",
    "bastion_guard_alerts_total": "Alerts raised, by kind.",
    "bastion_guard_alerts_coalesced_total": "Alerts folded into a later 'N more' alert, by kind.",
    "bastion_guard_alerts_dropped_total": "Alerts dropped because a queue was full, by channel.",
    "bastion_guard_alert_deliveries_total": "Alert deliveries, by channel and result.",
}
#: Label sets kept per metric: label values may come from traffic (a limit's name, a source),
#: so their number is bounded; further ones are counted in one overflow series.
MAX_SERIES_PER_METRIC = 1000
MAX_LABEL_VALUE = 200
OVERFLOW_LABELS = (("overflow", "true"),)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LabelSet = tuple[tuple[str, str], ...]
#: Gauges computed when the metrics are read: name -> (help, {label set: value}).
Gauges = Mapping[str, tuple[str, Mapping[LabelSet, float]]]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


class Counters:
    """Monotonic counters in memory, rendered in the Prometheus text format (0.0.4). Pure: no
    clock, no I/O; :meth:`inc` never raises (a bad name or label is ignored)."""

    def __init__(self) -> None:
        self._values: dict[str, dict[LabelSet, int]] = {}
        self._help: dict[str, str] = dict(KNOWN_METRICS)

    def describe(self, name: str, help_text: str) -> None:
        """Set a metric's HELP line (parts that count their own metrics may describe them)."""
        if isinstance(name, str) and _METRIC_NAME.fullmatch(name) and isinstance(help_text, str):
            self._help[name] = help_text[:500]

    def inc(self, name: str, labels: Mapping[str, str] | None = None, n: int = 1) -> None:
        if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
            return
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return
        items: list[tuple[str, str]] = []
        if labels:
            if not isinstance(labels, Mapping):
                return
            for k, v in labels.items():
                if not isinstance(k, str) or not _LABEL_NAME.fullmatch(k) or k.startswith("__"):
                    return
                items.append((k, str(v)[:MAX_LABEL_VALUE] if v is not None else ""))
        key = tuple(sorted(items))
        series = self._values.setdefault(name, {})
        if key not in series and len(series) >= MAX_SERIES_PER_METRIC:
            key = OVERFLOW_LABELS
        series[key] = series.get(key, 0) + n

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> int:
        key = tuple(sorted((k, str(v)) for k, v in (labels or {}).items()))
        return self._values.get(name, {}).get(key, 0)

    def exposition(self, gauges: Gauges | None = None) -> str:
        """The text format: for each metric a HELP and a TYPE line, then its samples (metrics
        and samples sorted, so the output is stable). ``gauges``: name -> (help, samples)."""
        out: list[str] = []
        names = sorted(set(self._help) | set(self._values))
        for name in names:
            help_text = self._help.get(name, "A counter of the Bastion guard.")
            out.append(f"# HELP {name} {_escape_help(help_text)}")
            out.append(f"# TYPE {name} counter")
            for key, v in sorted(self._values.get(name, {}).items()):
                out.append(f"{name}{_labels(key)} {v}")
        for name, (help_text, samples) in sorted((gauges or {}).items()):
            out.append(f"# HELP {name} {_escape_help(help_text)}")
            out.append(f"# TYPE {name} gauge")
            for key, g in sorted(samples.items()):
                out.append(f"{name}{_labels(key)} {_number(g)}")
        return "\n".join(out) + "\n"


def _labels(key: LabelSet) -> str:
    if not key:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in key) + "}"


def _number(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


# ------------------------------------------------------------------------------------------------
# Alerts
# ------------------------------------------------------------------------------------------------
#: The webhook's signature headers (see the module docstring).
SIGNATURE_HEADER = "X-Bastion-Signature"
TIMESTAMP_HEADER = "X-Bastion-Timestamp"
#: Longest summary kept; details larger than this (as JSON) are replaced by a note.
MAX_SUMMARY = 1000
MAX_DETAILS_BYTES = 16_384
MAX_DEPTH = 6
#: Retries wait base * 2^(attempt-1) seconds, at most this long.
MAX_BACKOFF_SECONDS = 60.0
#: HTTP statuses worth retrying.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Kinds coalesced separately; beyond, new kinds share one window.
MAX_WINDOWS = 200
OTHER_KINDS = "(other kinds)"
_STOP = object()


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 keyed with ``secret`` over ``"<timestamp>.<body>"``."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def safe_target(url: str) -> str:
    """The URL as it may be logged: scheme, host and port (no credentials, path or query)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}"
    except ValueError:
        return "(webhook)"


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as canonical-JSON-safe data (event content has no floats and bounded
    integers): floats become strings, unknown types their ``str``, depth bounded."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -(2**53) < value < 2**53 else str(value)
    if isinstance(value, float):
        return format(value, ".6g")
    if depth >= MAX_DEPTH:
        return str(value)[:200]
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, depth + 1) for v in value]
    return str(value)[:1000]


@dataclass
class Alert:
    """One alert to deliver (``count`` > 1 when it stands for coalesced alerts)."""

    kind: str
    summary: str
    details: dict[str, Any]
    ts: int
    count: int = 1
    coalesced: bool = False

    def body(self) -> str:
        return f"[{self.kind}] {self.summary}"

    def payload(self, server_name: str) -> dict[str, Any]:
        return {"server": server_name, "kind": self.kind, "summary": self.summary,
                "details": self.details, "ts": self.ts, "count": self.count,
                "coalesced": self.coalesced}  # fmt: skip


@dataclass
class _Window:
    """Coalescing of one kind: opened by a delivered alert, counting the ones that follow."""

    start: float
    suppressed: int = 0
    last: Alert | None = None
    timer: asyncio.TimerHandle | None = None


class Alerts(BackgroundService):
    """``hs.guard.alerts``: alerts to the admin room and the webhook, and the counters."""

    background_name = "guard alerts"
    #: The first retry's wait (doubling after); tests shorten it.
    retry_base_seconds = 1.0

    def __init__(self, hs: HomeServer) -> None:
        super().__init__()
        self.hs = hs
        self.config: AlertsConfig = hs.config.guard_config.alerts
        self.counters = Counters()
        size = self.config.queue_size
        self._room_queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=size)
        self._webhook_queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=size)
        self._windows: dict[str, _Window] = {}
        self._closing = False
        #: Set when shutdown begins (ends back-off waits).
        self._closed = asyncio.Event()
        self._workers_started = False
        self._webhook_failed_closing = False

    # -- counters ------------------------------------------------------------------------------
    def count(self, metric: str, labels: Mapping[str, str] | None = None, n: int = 1) -> None:
        """Add ``n`` to a Prometheus counter (never raises)."""
        try:
            self.counters.inc(metric, labels, n)
        except Exception:  # noqa: BLE001 - counting never fails the caller
            log.warning("could not count %r", metric, exc_info=True)

    def exposition(self) -> str:
        """``GET /_bastion/metrics``: the counters, and the alert queues' lengths."""
        gauges: Gauges = {
            "bastion_guard_alert_queue_length": (
                "Alerts waiting to be delivered, by channel.",
                {(("channel", "room"),): self._room_queue.qsize(),
                 (("channel", "webhook"),): self._webhook_queue.qsize()},
            ),
        }  # fmt: skip
        return self.counters.exposition(gauges)

    # -- raising -------------------------------------------------------------------------------
    async def alert(self, kind: str, summary: str, details: Mapping[str, Any]) -> None:
        """Raise an alert: counted, coalesced with the same kind's recent alerts, queued for the
        admin room and the webhook. Never raises, never waits on the network."""
        try:
            self._raise(kind, summary, details)
        except Exception:  # noqa: BLE001 - an alert never fails its caller
            log.warning("could not raise a %r alert", kind, exc_info=True)

    def _raise(self, kind: str, summary: str, details: Mapping[str, Any]) -> None:
        kind = str(kind)[:100] or "alert"
        self.count("bastion_guard_alerts_total", {"kind": kind})
        alert = Alert(kind, str(summary)[:MAX_SUMMARY], self._details(details),
                      self.hs.now_ms())  # fmt: skip
        window_s = self.config.coalesce_seconds
        if window_s <= 0 or self._closing:
            self._enqueue(alert)
            return
        now = time.monotonic()
        window = self._windows.get(kind)
        if window is None and len(self._windows) >= MAX_WINDOWS:
            kind_key = OTHER_KINDS  # many kinds at once: coalesced together
            window = self._windows.get(kind_key)
        else:
            kind_key = kind
        if window is not None and now - window.start < window_s:
            window.suppressed += 1
            window.last = alert
            self.count("bastion_guard_alerts_coalesced_total", {"kind": kind})
            return
        if window is not None:
            self.cancel_timer(window.timer)
        window = self._windows[kind_key] = _Window(start=now)
        window.timer = self._arm(kind_key, window_s)
        self._enqueue(alert)

    def _arm(self, kind: str, delay: float) -> asyncio.TimerHandle | None:
        try:
            return self.call_later(delay, self._close_window, kind)
        except RuntimeError:  # no running loop (never in the server)
            return None

    def _close_window(self, kind: str) -> None:
        """A coalescing window ends: the alerts it held back go out as one; while they keep
        coming, a new window opens (one message per window during a flood)."""
        window = self._windows.get(kind)
        if window is None:
            return
        if window.suppressed == 0 or window.last is None:
            del self._windows[kind]
            return
        self._enqueue(self._summary(kind, window))
        window.start = time.monotonic()
        window.suppressed, window.last = 0, None
        window.timer = self._arm(kind, self.config.coalesce_seconds)

    def _summary(self, kind: str, window: _Window) -> Alert:
        last = window.last
        assert last is not None
        n = window.suppressed
        secs = format(self.config.coalesce_seconds, "g")
        summary = f"{n} more {kind} alert{'s' if n != 1 else ''} in {secs} s; latest: "
        return Alert(kind, (summary + last.summary)[:MAX_SUMMARY], last.details, last.ts,
                     count=n, coalesced=True)  # fmt: skip

    @staticmethod
    def _details(details: Mapping[str, Any]) -> dict[str, Any]:
        safe = json_safe(details) if isinstance(details, Mapping) else {"value": str(details)}
        if len(orjson.dumps(safe)) > MAX_DETAILS_BYTES:
            return {"truncated": True}
        return safe

    def _enqueue(self, alert: Alert) -> None:
        if self.stopped:
            self.count("bastion_guard_alerts_dropped_total", {"channel": "stopped"})
            return
        for channel, queue, on in (
            ("room", self._room_queue, True),
            ("webhook", self._webhook_queue, self.config.webhook_url is not None),
        ):
            if not on:
                continue
            try:
                queue.put_nowait(alert)
            except asyncio.QueueFull:
                self.count("bastion_guard_alerts_dropped_total", {"channel": channel})

    # -- delivering ----------------------------------------------------------------------------
    def start(self) -> None:
        super().start()
        self._closing = self._webhook_failed_closing = False
        self._closed.clear()
        if not self._workers_started:
            self._workers_started = True
            self.spawn(self._drain_queue(self._room_queue, self._post_room))
            if self.config.webhook_url is not None:
                self.spawn(self._webhook_worker())

    def begin_draining(self) -> None:
        """Shutdown: the alerts held back go out now, then the workers end once their queues
        are empty (retries are not waited for)."""
        super().begin_draining()
        self._closing = True
        self._closed.set()
        self._workers_started = False
        for kind, window in list(self._windows.items()):
            if window.suppressed and window.last is not None:
                self._enqueue(self._summary(kind, window))
            window.timer = None
        self._windows.clear()
        for queue in (self._room_queue, self._webhook_queue):
            try:
                queue.put_nowait(_STOP)
            except asyncio.QueueFull:
                pass  # the worker sees _closing once the queue is empty

    async def _drain_queue(self, queue: asyncio.Queue[Any], deliver) -> None:
        while not (self._closing and queue.empty()):
            item = await queue.get()
            if item is _STOP:
                return
            try:
                await deliver(item)
            except Exception as e:  # noqa: BLE001 - one failed alert never stops the rest
                why = e.message if isinstance(e, MatrixError) else type(e).__name__
                log.warning("delivering a %s alert failed: %s", item.kind, why)

    async def _post_room(self, alert: Alert) -> None:
        extra = {"org.bastion.alert": {"kind": alert.kind, "details": alert.details,
                                       "count": alert.count, "coalesced": alert.coalesced,
                                       "ts": alert.ts}}  # fmt: skip
        try:
            await self.hs.server_notices.post_alert(self.config.admin_room, alert.body(), extra)
        except Exception:
            self.count("bastion_guard_alert_deliveries_total",
                       {"channel": "room", "result": "failed"})  # fmt: skip
            raise
        self.count("bastion_guard_alert_deliveries_total", {"channel": "room", "result": "ok"})

    async def _webhook_worker(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.webhook_timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await self._drain_queue(
                self._webhook_queue, lambda alert: self._post_webhook(session, alert)
            )

    async def _post_webhook(self, session: aiohttp.ClientSession, alert: Alert) -> None:
        url = self.config.webhook_url
        assert url is not None
        if self._closing and self._webhook_failed_closing:
            # Shutting down and the webhook is not answering: do not hold the shutdown up.
            self.count("bastion_guard_alerts_dropped_total", {"channel": "webhook"})
            return
        body = orjson.dumps(alert.payload(self.hs.server_name))
        target = safe_target(url)
        attempts = self.config.webhook_max_attempts
        for attempt in range(1, attempts + 1):
            ts = str(self.hs.now_ms())
            headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: ts}
            if self.config.webhook_secret is not None:
                headers[SIGNATURE_HEADER] = webhook_signature(self.config.webhook_secret, ts,
                                                              body)  # fmt: skip
            wait: float | None = None
            try:
                async with session.post(url, data=body, headers=headers,
                                        allow_redirects=False) as resp:  # fmt: skip
                    status = resp.status
                    if 200 <= status < 300:
                        self.count("bastion_guard_alert_deliveries_total",
                                   {"channel": "webhook", "result": "ok"})  # fmt: skip
                        return
                    if status not in RETRY_STATUSES:
                        log.warning("alert webhook %s answered %d; not retried", target, status)
                        break
                    wait = _retry_after(resp.headers.get("Retry-After"))
                    problem = f"HTTP {status}"
            except Exception as e:  # noqa: BLE001 - connection errors, timeouts
                problem = type(e).__name__
            if attempt == attempts or self._closing:
                log.warning("alert webhook %s failed (%s) after %d attempt(s)", target, problem,
                            attempt)  # fmt: skip
                self._webhook_failed_closing = self._closing
                break
            backoff = min(self.retry_base_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
            # Cut short when shutdown begins: then one last attempt.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), max(backoff, wait or 0.0))
        self.count("bastion_guard_alert_deliveries_total",
                   {"channel": "webhook", "result": "failed"})  # fmt: skip


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (at most :data:`MAX_BACKOFF_SECONDS`), or None."""
    if not value:
        return None
    try:
        secs = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(secs) or secs < 0:
        return None
    return min(secs, MAX_BACKOFF_SECONDS)
