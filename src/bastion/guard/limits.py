"""The guard's rate limits (pure): their names, what each is keyed by, their defaults, the
``[guard.rate_limits]`` table and the per-user overrides an admin sets (bots, bridges).

C-S API "Rate limiting": a refused request is answered 429 ``M_LIMIT_EXCEEDED`` with
``retry_after_ms`` (:func:`bastion.errors.limit_exceeded`); a federated event over its limit is
soft-failed (S-S API "Soft failure"), never rejected: it is valid, only unwelcome now. The
buckets themselves are :class:`bastion.core.rate_limit.TokenBuckets`; the shell that holds them
is :mod:`bastion.guard.rate_limiter`.

Defaults are Synapse's ``rc_*`` defaults (read in ``synapse/config/ratelimiting.py`` of
matrix-synapse 1.163), so operators recognise them; where Synapse has no such limit the
:data:`LIMITS` entry says what the value rests on. Tests whose traffic is bulk by design (a
history of messages made in milliseconds, a scale test) exempt their user, as an operator
exempts a bot (tests/support/guard.py); real clients stay inside these values.

Keys. Authenticated actions are keyed by the account (``user``), never by the client address:
an address is shared (NAT, a mobile carrier, every test on loopback), and the number of
accounts one address can make is limited where accounts are made (the login part's per-address
registration limit). Per-room limits (``room``) are used only where Synapse uses them, for joins
and invites: a per-room bucket for messages would let one flooder use up the room's budget and
silence everyone else. Federation is keyed by the origin server that pushed the transaction
(``origin``) and by origin and room (``origin_room``), so one server's flood costs only that
server. ``ip`` is accepted by :meth:`~bastion.guard.rate_limiter.RateLimits.require` for the
parts that limit unauthenticated requests.

The TOML table::

    [guard.rate_limits]
    enabled = true            # false lifts every rate limit (benchmarks); login defence stays
    max_keys = 10000          # keys remembered per limit (least recently used forgotten first)
    [guard.rate_limits.message]
    per_second = 0.2          # tokens added a second (or per_minute = 12, per_hour = 720)
    burst = 10                # bucket size: what may be done at once
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bastion.guard.tables import check_keys, get_bool, get_number

__all__ = [
    "EXEMPT",
    "KEYS",
    "LIMITS",
    "RATE_UNITS",
    "USER_LIMITS",
    "LimitDef",
    "LimitSpec",
    "RateLimitConfig",
    "Overrides",
    "bucket_key",
    "overrides_json",
    "parse_overrides",
    "parse_rate_limits",
]

#: What a limit is keyed by (see the module docstring).
KEYS: Final = ("user", "ip", "room", "origin", "origin_room")

#: The override key that lifts every limit for a user (``{"*": null}``).
EXEMPT: Final = "*"

#: Largest rate and burst accepted (in the table and in overrides): above that a limit is
#: meaningless, and a bound keeps the arithmetic finite.
MAX_PER_SECOND: Final = 1_000_000.0
MAX_BURST: Final = 1_000_000_000
#: Keys remembered per limit by default: at roughly 0.4 KiB a bucket, at most about 4 MiB per
#: limit under a flood of new keys.
DEFAULT_MAX_KEYS: Final = 10_000


#: The keys a rate may be given in, and their length in seconds. JSON bodies of the Matrix
#: APIs are canonical JSON, which has no fractions (the admin API's ``per_second`` is a whole
#: number): a rate slower than one a second is given ``per_minute`` or ``per_hour`` there.
RATE_UNITS: Final = {"per_second": 1.0, "per_minute": 60.0, "per_hour": 3600.0}


@dataclass(frozen=True)
class LimitSpec:
    """A token bucket's shape: ``per_second`` tokens added a second, up to ``burst``.
    ``unit``: the key of :data:`RATE_UNITS` the rate was given in, kept so that it is shown
    (and recorded, in canonical JSON) as given: 1 ``per_hour``, not 0.000277… a second."""

    per_second: float
    burst: int
    unit: str = field(default="per_second", compare=False)

    def json(self) -> dict[str, float | int]:
        count = self.per_second * RATE_UNITS[self.unit]
        whole = round(count)
        return {self.unit: whole if abs(count - whole) < 1e-9 else count, "burst": self.burst}


@dataclass(frozen=True)
class LimitDef:
    """One rate limit: what it counts, what it is keyed by, and its default."""

    key: str
    default: LimitSpec
    #: What it counts, and where the default comes from (for the admin API and the docs).
    about: str


#: Every rate limit, by name. The names are stable: the TOML table, the overrides, the
#: ``rate.<name>`` decision source and the ``limit`` label of the metric use them.
LIMITS: Final[Mapping[str, LimitDef]] = {
    # -- room events from local users (GuardService.before_local_event) --------------------------
    "message": LimitDef("user", LimitSpec(0.2, 10),
        "non-state events a user sends (Synapse rc_message: 0.2/s, burst 10)"),
    "state": LimitDef("user", LimitSpec(0.2, 10),
        "state events a user sends, kicks and bans included; leaving is never limited (Synapse "
        "counts state events under rc_message too: 0.2/s, burst 10)"),
    "join": LimitDef("user", LimitSpec(0.1, 10),
        "rooms a user joins or knocks on; a join when already joined (a profile change) is not "
        "counted, as in Synapse (rc_joins.local: 0.1/s, burst 10)"),
    "join_remote": LimitDef("user", LimitSpec(0.01, 10),
        "rooms a user joins that this server is not in yet: each costs a remote join and its "
        "state (Synapse rc_joins.remote: 0.01/s, burst 10)"),
    "join_room": LimitDef("room", LimitSpec(1.0, 10),
        "local joins into one room (Synapse rc_joins_per_room: 1/s, burst 10)"),
    "invite": LimitDef("user", LimitSpec(0.3, 10),
        "invites a user sends (Synapse rc_invites.per_issuer: 0.3/s, burst 10)"),
    "invite_room": LimitDef("room", LimitSpec(0.3, 10),
        "invites sent into one room (Synapse rc_invites.per_room: 0.3/s, burst 10)"),
    "invite_target": LimitDef("user", LimitSpec(0.003, 5),
        "invites a local user receives, from local and remote senders (Synapse "
        "rc_invites.per_user: 0.003/s, burst 5)"),
    "room_create": LimitDef("user", LimitSpec(0.016, 10),
        "rooms a user creates (Synapse rc_room_creation: 0.016/s, burst 10)"),
    # -- client requests -------------------------------------------------------------------------
    "media_create": LimitDef("user", LimitSpec(10.0, 50),
        "POST /media/v1/create (Synapse rc_media_create: 10/s, burst 50)"),
    "media_upload": LimitDef("user", LimitSpec(10.0, 50),
        "uploads, POST /upload and PUT /upload/{serverName}/{mediaId} (Synapse limits uploads by "
        "size per period instead; the count uses rc_media_create's values)"),
    "to_device": LimitDef("user", LimitSpec(20.0, 100),
        "send-to-device requests (Synapse limits only key requests, rc_key_requests: 20/s, "
        "burst 100; the same values for every type)"),
    "typing": LimitDef("user", LimitSpec(2.0, 20),
        "typing notifications (Synapse has none; clients send about one every few seconds "
        "while typing and one when they stop)"),
    "receipt": LimitDef("user", LimitSpec(5.0, 50),
        "receipts and read markers (Synapse has none; clients send one or two per room read)"),
    "report": LimitDef("user", LimitSpec(1.0, 5),
        "reports of events, rooms and users (Synapse rc_reports: 1/s, burst 5)"),
    # -- federation ------------------------------------------------------------------------------
    "federation_send": LimitDef("origin", LimitSpec(10.0, 50),
        "PUT /send transactions per origin server; without a [guard.rate_limits."
        "federation_send] table the config's federation_send_per_second and "
        "federation_send_burst (10/s, burst 50) apply (Synapse rc_federation rejects past 50 "
        "requests a second per origin)"),
    "federation_event": LimitDef("origin", LimitSpec(50.0, 500),
        "events an origin server pushes, all rooms (Synapse has no such limit; a /send carries "
        "at most 50, so this caps an origin at a tenth of what /send alone allows)"),
    "federation_event_room": LimitDef("origin_room", LimitSpec(5.0, 50),
        "events an origin server pushes into one room (Synapse has none; 5/s is 25 of its "
        "users sending at rc_message's rate)"),
}  # fmt: skip

#: The limits keyed by a user: the ones a per-user override may change.
USER_LIMITS: Final = frozenset(name for name, d in LIMITS.items() if d.key == "user")

#: A user's overrides: limit name (or :data:`EXEMPT`) → its bucket, or None for no limit.
Overrides = Mapping[str, LimitSpec | None]


@dataclass(frozen=True)
class RateLimitConfig:
    """The ``[guard.rate_limits]`` table, typed: every limit's bucket (defaults filled in)."""

    enabled: bool = True
    limits: Mapping[str, LimitSpec] = field(
        default_factory=lambda: {name: d.default for name, d in LIMITS.items()}
    )
    #: The limits the table sets (the shell lets the config's ``federation_send_*`` keys give
    #: ``federation_send`` its default only when the table does not set it).
    configured: frozenset[str] = frozenset()
    max_keys: int = DEFAULT_MAX_KEYS


def _spec(table: Mapping[str, Any], where: str, default: LimitSpec | None) -> LimitSpec:
    """A bucket: ``burst`` and one rate key of :data:`RATE_UNITS` (each defaulting to
    ``default``'s; both required without one)."""
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table with per_second and burst")
    check_keys(table, {"burst", *RATE_UNITS}, where)
    units = [unit for unit in RATE_UNITS if unit in table]
    if len(units) > 1:
        raise ValueError(f"{where}: give one of {', '.join(units)}")
    if default is None:
        if not units:
            raise ValueError(f"{where}.per_second (or per_minute, per_hour) is required")
        if "burst" not in table:
            raise ValueError(f"{where}.burst is required")
    if units:
        unit = units[0]
        seconds = RATE_UNITS[unit]
        count = get_number(table, unit, 0.0, where, minimum=1e-6,
                           maximum=MAX_PER_SECOND * seconds)  # fmt: skip
        rate = count / seconds
    else:
        unit = default.unit if default is not None else "per_second"
        rate = default.per_second if default is not None else 0.0
    burst = get_number(table, "burst", default.burst if default else 0, where,
                       minimum=1, maximum=MAX_BURST, integer=True)  # fmt: skip
    return LimitSpec(rate, int(burst), unit)


def parse_rate_limits(table: Mapping[str, Any]) -> RateLimitConfig:
    """The ``[guard.rate_limits]`` table (:class:`ValueError` naming the key): ``enabled``,
    ``max_keys`` and one sub-table per limit name of :data:`LIMITS` with ``per_second`` and
    ``burst`` (a missing one keeps its default). Unknown names are refused."""
    where = "guard.rate_limits"
    check_keys(table, {"enabled", "max_keys", *LIMITS}, where)
    limits = {name: d.default for name, d in LIMITS.items()}
    configured = set()
    for name, d in LIMITS.items():
        if name in table:
            limits[name] = _spec(table[name], f"{where}.{name}", d.default)
            configured.add(name)
    return RateLimitConfig(
        enabled=get_bool(table, "enabled", True, where),
        limits=limits,
        configured=frozenset(configured),
        max_keys=int(get_number(table, "max_keys", DEFAULT_MAX_KEYS, where, minimum=1,
                                maximum=10_000_000, integer=True)),
    )  # fmt: skip


def parse_overrides(value: Any) -> dict[str, LimitSpec | None]:
    """A user's overrides as an admin gives them (the admin API's ``overrides``, a stored row):
    ``{limit name: {"per_second" (or "per_minute", "per_hour"): ..., "burst": ...} | null}``
    for limits keyed by the user
    (:data:`USER_LIMITS`; null: not limited), or ``{"*": null}``: no limits at all (and not
    counted in per-room limits). :class:`ValueError` with a message for the admin otherwise."""
    if not isinstance(value, Mapping):
        raise ValueError("'overrides' must be an object")
    out: dict[str, LimitSpec | None] = {}
    for name, spec in value.items():
        if name == EXEMPT:
            if spec is not None:
                raise ValueError("'overrides.*' must be null (no limits at all)")
            out[name] = None
            continue
        if not isinstance(name, str) or name not in USER_LIMITS:
            names = ", ".join(sorted(USER_LIMITS))
            raise ValueError(f"'overrides': unknown limit {str(name)[:50]!r} (one of {names}, *)")
        out[name] = None if spec is None else _spec(spec, f"overrides.{name}", None)
    return out


def overrides_json(overrides: Overrides) -> dict[str, dict[str, float | int] | None]:
    """Overrides as JSON (stored, answered by the admin API, recorded)."""
    return {name: None if spec is None else spec.json() for name, spec in sorted(overrides.items())}


def bucket_key(
    key: str, *, user: str | None, ip: str | None, room: str | None, origin: str | None
) -> str | None:
    """The bucket key of a limit keyed by ``key`` (one of :data:`KEYS`), or None when the
    caller did not give what it is keyed by (then nothing is counted)."""
    if key == "user":
        return user
    if key == "room":
        return room
    if key == "origin":
        return origin
    if key == "ip":
        return ip
    if origin is None or room is None:
        return None
    return f"{origin}|{room}"
