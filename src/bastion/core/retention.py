"""Message retention (GDPR Art. 5(1)(e), storage limitation): policies and what expires.

Pure: no database, no clock. The purge job (:mod:`bastion.services.retention`) asks these
functions, with the time it read, which events and media have outlived their policy.

Policies follow the spec proposal MSC1763 (``m.room.retention``, which clients already send)
and Synapse's ``retention`` configuration (docs/message_retention_policies.md):

* A room's policy is the content of its current ``m.room.retention`` state event:
  ``max_lifetime`` (how long, in milliseconds after it was sent, a server may keep an event)
  and ``min_lifetime`` (how long it must keep it at least). A value that is not a positive
  integer within canonical JSON's range (a string, a float, a boolean, zero, a negative number,
  more than 2**53-1) is treated as absent: the room cannot ask for nonsense.
* A field the room does not set (or sets to nonsense) is taken from the server's default
  (``[retention] default_max_lifetime`` / ``default_min_lifetime``), as Synapse does; a room
  without the state event has the server's default policy.
* The room's ``max_lifetime`` is clamped into ``[allowed_lifetime_min, allowed_lifetime_max]``
  (either bound optional), as Synapse's purge jobs clamp it: a room may not keep data longer
  than the operator allows, nor purge it sooner than the operator needs it kept.
* ``min_lifetime`` wins over ``max_lifetime``: an event is never purged before its
  ``min_lifetime`` has passed (MSC1763: the server must keep it that long).
* An event expires at ``origin_server_ts + lifetime``. The timestamp is the sender's claim;
  a remote server that lies about it can only make its own users' content expire sooner or
  later, never anyone else's.

Which events never expire, whatever their age: the room's **current state** (what the room is
now: name, topic, members, power levels, ...), events under a **legal hold** (their sender or
their room is held), and events **already stripped** (nothing left to remove).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "MAX_SAFE_INTEGER",
    "Candidate",
    "RetentionConfig",
    "RetentionPolicy",
    "effective_policy",
    "expired",
    "media_expired",
    "parse_duration",
    "parse_retention_config",
    "room_policy",
]

#: The largest integer canonical JSON carries (appendices, "Canonical JSON").
MAX_SAFE_INTEGER = 2**53 - 1

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
          "w": 7 * 86_400_000, "y": 365 * 86_400_000}  # fmt: skip
_DURATION = re.compile(r"^([0-9]{1,15})(ms|s|m|h|d|w|y)?$")


def parse_duration(value: object, key: str) -> int:
    """A duration as Synapse writes them: an integer of milliseconds, or a string of digits
    with a unit (``ms``, ``s``, ``m``, ``h``, ``d``, ``w``, ``y``: "30m", "1d"); a bare digit
    string is milliseconds. Positive and at most 2**53-1 ms; ValueError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{key} must be a duration such as 30m, 1d or a number of milliseconds")
    if isinstance(value, int):
        ms = value
    else:
        m = _DURATION.match(value.strip())
        if m is None:
            raise ValueError(
                f"{key}: {value!r} is not a duration (digits with one of ms, s, m, h, d, w, y)"
            )
        ms = int(m.group(1)) * _UNITS[m.group(2) or "ms"]
    if not 0 < ms <= MAX_SAFE_INTEGER:
        raise ValueError(f"{key} must be positive and at most {MAX_SAFE_INTEGER} ms")
    return ms


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Lifetimes in milliseconds; None: no bound."""

    max_lifetime: int | None = None
    min_lifetime: int | None = None

    @property
    def lifetime(self) -> int | None:
        """How long an event lives under this policy (None: for ever): ``max_lifetime``, but
        never less than ``min_lifetime``."""
        if self.max_lifetime is None:
            return None
        return max(self.max_lifetime, self.min_lifetime or 0)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """The ``[retention]`` table, parsed."""

    enabled: bool = False
    default_max_lifetime: int | None = None
    default_min_lifetime: int | None = None
    allowed_lifetime_min: int | None = None
    allowed_lifetime_max: int | None = None
    #: How often the purge job runs (ms).
    purge_interval: int = 86_400_000
    #: Events stripped (or media deleted) per write transaction.
    purge_batch_size: int = 500
    #: Local media older than this is deleted (None: kept).
    local_media_max_lifetime: int | None = None
    #: Cached copies of remote media not served for this long are deleted (None: kept).
    remote_media_max_lifetime: int | None = None

    @property
    def default_policy(self) -> RetentionPolicy:
        return RetentionPolicy(self.default_max_lifetime, self.default_min_lifetime)


_DURATION_KEYS = ("default_max_lifetime", "default_min_lifetime", "allowed_lifetime_min",
                  "allowed_lifetime_max", "purge_interval", "local_media_max_lifetime",
                  "remote_media_max_lifetime")  # fmt: skip
MAX_BATCH = 10_000


def parse_retention_config(table: Mapping[str, object]) -> RetentionConfig:
    """The ``[retention]`` table (ValueError naming ``retention.<key>``)."""
    if not isinstance(table, Mapping):
        raise ValueError("retention must be a table")
    known = {"enabled", "purge_batch_size", *_DURATION_KEYS}
    unknown = sorted(str(k) for k in table if k not in known)
    if unknown:
        raise ValueError(f"retention: unknown key(s) {', '.join(unknown)}")
    values: dict[str, object] = {}
    enabled = table.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ValueError("retention.enabled must be true or false")
    values["enabled"] = enabled
    for key in _DURATION_KEYS:
        if key in table:
            values[key] = parse_duration(table[key], f"retention.{key}")
    batch = table.get("purge_batch_size", 500)
    if not isinstance(batch, int) or isinstance(batch, bool) or not 0 < batch <= MAX_BATCH:
        raise ValueError(f"retention.purge_batch_size must be an integer from 1 to {MAX_BATCH}")
    values["purge_batch_size"] = batch
    config = RetentionConfig(**values)  # type: ignore[arg-type]
    lo, hi = config.allowed_lifetime_min, config.allowed_lifetime_max
    if lo is not None and hi is not None and lo > hi:
        raise ValueError("retention.allowed_lifetime_min is greater than allowed_lifetime_max")
    dmax, dmin = config.default_max_lifetime, config.default_min_lifetime
    if dmax is not None and dmin is not None and dmin > dmax:
        raise ValueError("retention.default_min_lifetime is greater than default_max_lifetime")
    if dmax is not None and ((lo is not None and dmax < lo) or (hi is not None and dmax > hi)):
        raise ValueError(
            "retention.default_max_lifetime is outside allowed_lifetime_min..allowed_lifetime_max"
        )
    return config


def _lifetime(value: object) -> int | None:
    """A lifetime from ``m.room.retention`` content, or None when it is not a positive integer
    canonical JSON can carry (hostile or mistaken values are ignored, never trusted)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 < value <= MAX_SAFE_INTEGER else None


def room_policy(content: object) -> RetentionPolicy | None:
    """The policy an ``m.room.retention`` content asks for (fields not usable: None), or None
    when there is no content (no state event, or not a JSON object)."""
    if not isinstance(content, Mapping):
        return None
    return RetentionPolicy(_lifetime(content.get("max_lifetime")),
                           _lifetime(content.get("min_lifetime")))  # fmt: skip


def effective_policy(config: RetentionConfig, content: object) -> RetentionPolicy:
    """The policy that applies to a room whose ``m.room.retention`` content is ``content``
    (None: the room has none): the room's fields, else the server default's, with
    ``max_lifetime`` clamped into the allowed range."""
    room = room_policy(content)
    default = config.default_policy
    max_lt = room.max_lifetime if room is not None and room.max_lifetime is not None else None
    min_lt = room.min_lifetime if room is not None and room.min_lifetime is not None else None
    if max_lt is None:
        max_lt = default.max_lifetime
    elif config.allowed_lifetime_min is not None or config.allowed_lifetime_max is not None:
        if config.allowed_lifetime_min is not None:
            max_lt = max(max_lt, config.allowed_lifetime_min)
        if config.allowed_lifetime_max is not None:
            max_lt = min(max_lt, config.allowed_lifetime_max)
    if min_lt is None:
        min_lt = default.min_lifetime
    return RetentionPolicy(max_lt, min_lt)


def cutoff(policy: RetentionPolicy, now_ms: int) -> int | None:
    """Events sent strictly before this timestamp have expired (None: nothing expires)."""
    lifetime = policy.lifetime
    return None if lifetime is None else now_ms - lifetime


@dataclass(frozen=True, slots=True)
class Candidate:
    """An event the purge job considers: what the store knows about it."""

    event_id: str
    sender: str
    origin_server_ts: int
    #: It is one of the room's current state events.
    current_state: bool = False
    #: Its content is gone already (stripped, or redacted).
    stripped: bool = False


def expired(
    policy: RetentionPolicy, now_ms: int, candidates: Iterable[Candidate], *,
    room_held: bool = False, held_users: frozenset[str] | set[str] = frozenset(),
) -> list[str]:  # fmt: skip
    """The IDs of ``candidates`` to strip at ``now_ms``, in the order given: expired under
    ``policy``, not current state, not already stripped, not sent by a held user; none when the
    room is held."""
    limit = cutoff(policy, now_ms)
    if limit is None or room_held:
        return []
    return [
        c.event_id for c in candidates
        if c.origin_server_ts < limit and not c.current_state and not c.stripped
        and c.sender not in held_users
    ]  # fmt: skip


def media_expired(
    max_lifetime: int | None, now_ms: int, created_ts: int, *, held: bool = False
) -> bool:
    """Whether a local media item created at ``created_ts`` is past ``max_lifetime`` (None:
    media never expires) and not held."""
    return max_lifetime is not None and not held and created_ts < now_ms - max_lifetime
