"""Behavioural detectors (pure): what a window of recent observations says about one event.

Each detector is a function of the event (:class:`~bastion.guard.signals.EventContext`), the
window of recent observations the shell kept for it (passed in, already cut to the detector's
window) and the ``[guard.detectors]`` configuration, and returns
:class:`~bastion.guard.signals.Signal` s with their evidence. Nothing here reads a clock, a
database or the network; :mod:`bastion.guard.behaviour` keeps the windows.

The signals and their defaults are those of the moderation bots operators already run, so they
recognise them:

* **message flood** — Draupnir's ``BasicFloodingProtection`` (``DEFAULT_MAX_PER_MINUTE = 10``:
  more than 10 messages in 60 s from one user in one room; Draupnir bans and redacts there),
  Meowlnir's ``anti_flood`` (``limit`` events per ``per``, no default). Here: ``warn`` (recorded,
  alerted) when the 11th arrives, and a throttle of the flooder *in that room* above
  ``throttle_above`` (60 a minute: one a second for a whole minute, which no person types):
  429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``, which clients retry, so a legitimate burst
  (a pasted list, a test's 30 messages) passes and nothing is lost silently. At the defaults
  the per-user rate limit (Synapse's ``rc_message``: 0.2/s, burst 10) paces a flood long
  before; the throttle holds for users whose limits an admin raised without exempting them.
* **mention spam** — Draupnir's ``MentionLimitProtection`` (``maxMentions`` 3, body mentions
  optional), policyserv's ``MentionsFilter`` (``mention_filter_max_mentions`` 20) and
  ``ManyAtsFilter`` (20): more than 3 mentions → ``warn``, more than 10 → ``block``.
* **join wave** — Draupnir's ``JoinWaveShortCircuitProtection`` (``maxPer`` 50 joins per
  ``timescaleMinutes`` 60 → the room becomes invite-only), Meowlnir's ``join_rate``: more than 50
  joins in an hour → ``warn`` with the ``cool_room`` action (knock or invite-only for
  ``cooling_seconds``, the room's admins told).
* **membership churn** — Draupnir's ``MembershipChangeProtection`` (``maxChangesPerUser`` 7 per
  ``timescaleMinutes`` 60, a warning from ``floor(7 × 0.6) = 4`` changes). Leaving is never put
  to the guard (it is never refused), so joins and knocks are counted: a third join of the same
  room within an hour (two leave-and-rejoin cycles, 5 changes) → ``warn``; a fifth (9 changes,
  past Draupnir's 7) → ``block``.
* **first message is a link or media** — Draupnir's ``FirstMessageIsImageProtection`` (the first
  thing after joining is an image or video → ban): here the first message after a join less
  than a day old that carries a link or media is ``hold`` for a new account, ``info`` (evidence
  for the other checks) otherwise.
* **invite fan-out** — Synapse's ``rc_invites.per_issuer`` limits the rate; this counts the
  distinct users one sender invited in an hour: ``warn`` above 10, ``block`` above 25, and
  ``block`` above 5 for an account younger than a day.
* **new-account link blast** — policyserv flags links against allow/deny lists (``LinkFilter``)
  and media from senders it does not trust (``UntrustedMediaFilter``); none of the bots has a
  default for a new account's links, so here: an account younger than a day sending more than
  one message with links in 10 minutes (any rooms) → ``hold`` for a moderator (``severity``:
  ``block`` to refuse outright). With the first-message rule, a new account's links wait for a
  moderator from the first one in each room.
* **density and length outliers** — policyserv's ``DensityFilter``
  (``density_filter_max_density`` 0.95 for bodies of at least
  ``density_filter_min_trigger_length`` 150 characters) and ``LengthFilter``
  (``length_filter_max_length`` 10000): ``warn``; and a body far longer than the room's usual
  ones (20 × its median, at least 1000 characters, over at least 20 recent messages) → ``info``.
* **origin flood** — for federated events, more than 100 events a minute from one origin server
  into one room (many accounts of one server, each under the per-user limit) → ``warn``.

Encrypted rooms (``ctx.readable`` False): detectors use only counts and metadata (type, sender,
room, times, membership); they never read a body, a mention or a link there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from bastion.guard.classifier.urls import extract_urls, host_of
from bastion.guard.signals import SEVERITIES, EventContext, Signal
from bastion.guard.tables import check_keys, get_bool, get_number, get_str, subtable

__all__ = [
    "DETECTORS",
    "MEDIA_MSGTYPES",
    "ChurnConfig",
    "DensityConfig",
    "DetectorConfig",
    "FirstMessageConfig",
    "FloodConfig",
    "FloodOutcome",
    "InviteFanoutConfig",
    "JoinWaveConfig",
    "LengthConfig",
    "LinkBlastConfig",
    "MentionConfig",
    "OriginFloodConfig",
    "body_text",
    "density_outlier",
    "first_message",
    "has_link",
    "invite_fanout",
    "is_media",
    "join_wave",
    "length_outlier",
    "link_blast",
    "mentioned_users",
    "membership_churn",
    "mention_spam",
    "message_flood",
    "origin_flood",
    "parse_detector_config",
]

WHERE: Final = "guard.detectors"
DAY_S: Final = 86_400

#: The detectors, by the name of their sub-table (``[guard.detectors.<name>]``); the signal's
#: source is ``detector.<name>``.
DETECTORS: Final = (
    "message_flood", "mention_spam", "join_wave", "invite_fanout", "membership_churn",
    "first_message", "link_blast", "density", "length", "origin_flood",
)  # fmt: skip

#: ``msgtype`` s that are media (Draupnir's FirstMessageIsImage: m.image, m.video; policyserv's
#: media filters: m.sticker, m.image, m.video, m.file, m.audio).
MEDIA_MSGTYPES: Final = frozenset({"m.image", "m.video", "m.file", "m.audio"})

# A Matrix user ID in text (C-S "Identifier grammar": @localpart:server_name), for counting
# mentions written in a body or a matrix.to link.
_USER_ID_RE: Final = re.compile(r"@[a-z0-9._=\-/+]{1,255}:[a-z0-9.\-]+(?::\d{1,5})?(?:\[[0-9a-f:.]+\])?",
                                re.IGNORECASE)  # fmt: skip
# Matrix identifiers (users, rooms, aliases) and matrix.to permalinks: not links for the link
# rules (their server names look like hosts).
_MATRIX_ID_RE: Final = re.compile(r"[@!#$+][^\s:]{1,255}:[a-z0-9.\-\[\]:]+", re.IGNORECASE)
_MAX_TEXT: Final = 70_000  # bodies longer than an event can be are cut before any regex
#: The part of a body and of a formatted body searched for written mentions.
MENTION_SCAN: Final = 8192
#: The part of a body searched for links (see :func:`has_link`).
LINK_SCAN_HEAD: Final = 1024
LINK_SCAN_TAIL: Final = 256


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FloodConfig:
    """``[guard.detectors.message_flood]``: messages from one user in one room."""

    enabled: bool = True
    window_s: int = 60
    #: Draupnir's DEFAULT_MAX_PER_MINUTE: more than this → warn (once per episode).
    warn_above: int = 10
    #: More than this in the window → the user is throttled in that room (429 until one of
    #: their messages leaves the window); 0 turns the throttle off.
    throttle_above: int = 60


@dataclass(frozen=True)
class MentionConfig:
    """``[guard.detectors.mention_spam]``: users mentioned by one message."""

    enabled: bool = True
    warn_above: int = 3
    block_above: int = 10
    #: Count the user IDs written in the body and matrix.to links too (readable rooms only).
    body_mentions: bool = True


@dataclass(frozen=True)
class JoinWaveConfig:
    """``[guard.detectors.join_wave]``: joins into one room."""

    enabled: bool = True
    window_s: int = 3600
    max_joins: int = 50
    #: How long the room stays knock/invite-only.
    cooling_s: int = 3600


@dataclass(frozen=True)
class InviteFanoutConfig:
    """``[guard.detectors.invite_fanout]``: distinct users one sender invites."""

    enabled: bool = True
    window_s: int = 3600
    warn_above: int = 10
    block_above: int = 25
    new_account_block_above: int = 5


@dataclass(frozen=True)
class ChurnConfig:
    """``[guard.detectors.membership_churn]``: one's own joins and knocks of one room."""

    enabled: bool = True
    window_s: int = 3600
    warn_above: int = 2
    block_above: int = 4


@dataclass(frozen=True)
class FirstMessageConfig:
    """``[guard.detectors.first_message]``: the first message after a join is a link/media."""

    enabled: bool = True
    #: Only for joins younger than this.
    within_s: int = DAY_S
    severity: str = "info"
    new_account_severity: str = "hold"


@dataclass(frozen=True)
class LinkBlastConfig:
    """``[guard.detectors.link_blast]``: messages with links from a new account, any room."""

    enabled: bool = True
    window_s: int = 600
    block_above: int = 1
    severity: str = "hold"


@dataclass(frozen=True)
class DensityConfig:
    """``[guard.detectors.density]``: a long body with (almost) no whitespace."""

    enabled: bool = True
    min_length: int = 150
    max_density: float = 0.95
    severity: str = "warn"


@dataclass(frozen=True)
class LengthConfig:
    """``[guard.detectors.length]``: a body longer than ``max_length`` (severity), or far longer
    than the room's recent ones (``info``)."""

    enabled: bool = True
    max_length: int = 10_000
    severity: str = "warn"
    outlier_factor: float = 20.0
    outlier_min_length: int = 1000
    outlier_min_samples: int = 20


@dataclass(frozen=True)
class OriginFloodConfig:
    """``[guard.detectors.origin_flood]``: federated events from one origin into one room."""

    enabled: bool = True
    window_s: int = 60
    warn_above: int = 100


@dataclass(frozen=True)
class DetectorConfig:
    """The ``[guard.detectors]`` table, typed (every key has a default)."""

    enabled: bool = True
    #: An account younger than this is new (local accounts; a remote account's age is unknown).
    new_account_s: int = DAY_S
    message_flood: FloodConfig = field(default_factory=FloodConfig)
    mention_spam: MentionConfig = field(default_factory=MentionConfig)
    join_wave: JoinWaveConfig = field(default_factory=JoinWaveConfig)
    invite_fanout: InviteFanoutConfig = field(default_factory=InviteFanoutConfig)
    membership_churn: ChurnConfig = field(default_factory=ChurnConfig)
    first_message: FirstMessageConfig = field(default_factory=FirstMessageConfig)
    link_blast: LinkBlastConfig = field(default_factory=LinkBlastConfig)
    density: DensityConfig = field(default_factory=DensityConfig)
    length: LengthConfig = field(default_factory=LengthConfig)
    origin_flood: OriginFloodConfig = field(default_factory=OriginFloodConfig)

    def is_new_account(self, ctx: EventContext) -> bool:
        """Whether the sender's account is younger than ``new_account_s`` (False: unknown)."""
        created = ctx.sender_created_ms
        return created is not None and ctx.now_ms - created < self.new_account_s * 1000


_WEEK_S: Final = 7 * DAY_S
_BIG: Final = 1_000_000


def _int(t: Mapping[str, Any], key: str, default: int, where: str, lo: int = 1,
         hi: int = _BIG) -> int:  # fmt: skip
    return int(get_number(t, key, default, where, minimum=lo, maximum=hi, integer=True))


def parse_detector_config(table: Mapping[str, Any]) -> DetectorConfig:
    """The ``[guard.detectors]`` table (:class:`ValueError` naming the key)::

        [guard.detectors]
        enabled = true                 # false: no detector runs
        new_account_seconds = 86400    # younger accounts are "new"
        [guard.detectors.message_flood]
        enabled = true
        window_seconds = 60
        warn_above = 10
        throttle_above = 60            # 0: never throttle
        [guard.detectors.mention_spam]
        warn_above = 3
        block_above = 10
        body_mentions = true
        [guard.detectors.join_wave]
        window_seconds = 3600
        max_joins = 50
        cooling_seconds = 3600
        [guard.detectors.invite_fanout]
        window_seconds = 3600
        warn_above = 10
        block_above = 25
        new_account_block_above = 5
        [guard.detectors.membership_churn]
        window_seconds = 3600
        warn_above = 2                 # joins and knocks of one room
        block_above = 4
        [guard.detectors.first_message]
        within_seconds = 86400
        severity = "info"              # info | warn | hold | block
        new_account_severity = "hold"
        [guard.detectors.link_blast]
        window_seconds = 600
        block_above = 1
        severity = "hold"              # or "block" (or "warn")
        [guard.detectors.density]
        min_length = 150
        max_density = 0.95
        severity = "warn"
        [guard.detectors.length]
        max_length = 10000
        severity = "warn"
        outlier_factor = 20
        outlier_min_length = 1000
        outlier_min_samples = 20
        [guard.detectors.origin_flood]
        window_seconds = 60
        warn_above = 100

    Every sub-table also takes ``enabled``."""
    check_keys(table, {"enabled", "new_account_seconds", *DETECTORS}, WHERE)

    def sub(name: str, keys: set[str]) -> tuple[Mapping[str, Any], str, bool]:
        t = subtable(table, name, WHERE)
        where = f"{WHERE}.{name}"
        check_keys(t, {"enabled", *keys}, where)
        return t, where, get_bool(t, "enabled", True, where)

    def sev(t: Mapping[str, Any], key: str, default: str, where: str) -> str:
        return get_str(t, key, default, where, SEVERITIES)

    t, w, on = sub("message_flood", {"window_seconds", "warn_above", "throttle_above"})
    flood = FloodConfig(
        on,
        _int(t, "window_seconds", 60, w, hi=_WEEK_S),
        _int(t, "warn_above", 10, w),
        _int(t, "throttle_above", 60, w, lo=0),
    )
    t, w, on = sub("mention_spam", {"warn_above", "block_above", "body_mentions"})
    mention = MentionConfig(
        on,
        _int(t, "warn_above", 3, w),
        _int(t, "block_above", 10, w),
        get_bool(t, "body_mentions", True, w),
    )
    t, w, on = sub("join_wave", {"window_seconds", "max_joins", "cooling_seconds"})
    wave = JoinWaveConfig(
        on,
        _int(t, "window_seconds", 3600, w, hi=_WEEK_S),
        _int(t, "max_joins", 50, w),
        _int(t, "cooling_seconds", 3600, w, hi=30 * DAY_S),
    )
    t, w, on = sub(
        "invite_fanout", {"window_seconds", "warn_above", "block_above", "new_account_block_above"}
    )
    fanout = InviteFanoutConfig(
        on,
        _int(t, "window_seconds", 3600, w, hi=_WEEK_S),
        _int(t, "warn_above", 10, w),
        _int(t, "block_above", 25, w),
        _int(t, "new_account_block_above", 5, w),
    )
    t, w, on = sub("membership_churn", {"window_seconds", "warn_above", "block_above"})
    churn = ChurnConfig(
        on,
        _int(t, "window_seconds", 3600, w, hi=_WEEK_S),
        _int(t, "warn_above", 2, w),
        _int(t, "block_above", 4, w),
    )
    t, w, on = sub("first_message", {"within_seconds", "severity", "new_account_severity"})
    first = FirstMessageConfig(
        on,
        _int(t, "within_seconds", DAY_S, w, hi=30 * DAY_S),
        sev(t, "severity", "info", w),
        sev(t, "new_account_severity", "hold", w),
    )
    t, w, on = sub("link_blast", {"window_seconds", "block_above", "severity"})
    blast = LinkBlastConfig(
        on,
        _int(t, "window_seconds", 600, w, hi=_WEEK_S),
        _int(t, "block_above", 1, w, lo=0),
        get_str(t, "severity", "hold", w, ("warn", "hold", "block")),
    )
    t, w, on = sub("density", {"min_length", "max_density", "severity"})
    density = DensityConfig(
        on,
        _int(t, "min_length", 150, w),
        get_number(t, "max_density", 0.95, w, minimum=0.01, maximum=1.0),
        sev(t, "severity", "warn", w),
    )
    t, w, on = sub(
        "length",
        {"max_length", "severity", "outlier_factor", "outlier_min_length", "outlier_min_samples"},
    )
    length = LengthConfig(
        on,
        _int(t, "max_length", 10_000, w),
        sev(t, "severity", "warn", w),
        get_number(t, "outlier_factor", 20.0, w, minimum=1.0, maximum=1e6),
        _int(t, "outlier_min_length", 1000, w),
        _int(t, "outlier_min_samples", 20, w, hi=1000),
    )
    t, w, on = sub("origin_flood", {"window_seconds", "warn_above"})
    origin = OriginFloodConfig(
        on, _int(t, "window_seconds", 60, w, hi=_WEEK_S), _int(t, "warn_above", 100, w)
    )
    return DetectorConfig(
        enabled=get_bool(table, "enabled", True, WHERE),
        new_account_s=_int(table, "new_account_seconds", DAY_S, WHERE, lo=0, hi=365 * DAY_S),
        message_flood=flood, mention_spam=mention, join_wave=wave, invite_fanout=fanout,
        membership_churn=churn, first_message=first, link_blast=blast, density=density,
        length=length, origin_flood=origin,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Reading an event (readable rooms only)
# ----------------------------------------------------------------------------------------------
def body_text(ctx: EventContext) -> str:
    """The message's ``body`` (cut to an event's size); ``""`` when unreadable or absent."""
    if not ctx.readable:
        return ""
    body = ctx.content.get("body")
    return body[:_MAX_TEXT] if isinstance(body, str) else ""


def _formatted(ctx: EventContext) -> str:
    if not ctx.readable:
        return ""
    fb = ctx.content.get("formatted_body")
    return fb[:_MAX_TEXT] if isinstance(fb, str) else ""


def _id_list(content: object) -> list[str]:
    if not isinstance(content, Mapping):
        return []
    mentions = content.get("m.mentions")
    if not isinstance(mentions, Mapping):
        return []
    ids = mentions.get("user_ids")
    if not isinstance(ids, list):
        return []
    return [u for u in ids[:1000] if isinstance(u, str)]


def mentioned_users(
    ctx: EventContext, *, body_mentions: bool = True, stop_above: int | None = None
) -> frozenset[str]:
    """The distinct users a message mentions: ``m.mentions.user_ids`` (C-S "User and room
    mentions"; also those of an edit's ``m.new_content``) and, with ``body_mentions``, the user
    IDs written in the first :data:`MENTION_SCAN` characters of the body or linked from the
    formatted body (legacy mentions, matrix.to pills). ``stop_above``: stop counting body
    mentions once there are more than that many (the caller needs no exact count). Nothing at
    all in an unreadable (encrypted) event."""
    if not ctx.readable:
        return frozenset()
    users = set(_id_list(ctx.content))
    users.update(_id_list(ctx.content.get("m.new_content")))
    if body_mentions:
        for text in (body_text(ctx), _formatted(ctx)):
            if "@" not in text and "%40" not in text:
                continue
            for m in _USER_ID_RE.finditer(text[:MENTION_SCAN].replace("%40", "@")):
                users.add(m.group().lower())
                if stop_above is not None and len(users) > stop_above:
                    return frozenset(users)
    return frozenset(users)


def is_media(ctx: EventContext) -> bool:
    """A media message (``msgtype`` m.image/m.video/m.file/m.audio, a sticker, an inline
    ``<img>``); False when unreadable."""
    if not ctx.readable:
        return False
    if ctx.etype == "m.sticker":
        return True
    if ctx.etype != "m.room.message":
        return False
    if ctx.content.get("msgtype") in MEDIA_MSGTYPES:
        return True
    return "<img" in _formatted(ctx).lower()


def has_link(ctx: EventContext) -> list[str]:
    """The links of a message's body (Matrix identifiers and matrix.to permalinks are not
    links); empty when unreadable. Only the body's first :data:`LINK_SCAN_HEAD` and last
    :data:`LINK_SCAN_TAIL` characters are searched: finding links costs about 0.25 ms per
    thousand characters, and a 64 KiB body would take most of the guard's 5 ms budget (a long
    padded body is the density and length rules' and the classifier's)."""
    if ctx.etype != "m.room.message":
        return []
    text = body_text(ctx)
    if len(text) > LINK_SCAN_HEAD + LINK_SCAN_TAIL:
        text = text[:LINK_SCAN_HEAD] + " " + text[-LINK_SCAN_TAIL:]
    if "." not in text:
        return []
    text = _MATRIX_ID_RE.sub(" ", text)
    return [u for u in extract_urls(text) if host_of(u) not in ("matrix.to", "")]


# ----------------------------------------------------------------------------------------------
# The detectors
# ----------------------------------------------------------------------------------------------
def _ratio(n: int, limit: int) -> float:
    """A score in 0..1 growing with how far ``n`` is above ``limit``."""
    return min(1.0, 0.5 + 0.5 * (n - limit) / max(1, limit))


@dataclass(frozen=True)
class FloodOutcome:
    """What the flood detector says: the signals and, when the sender is throttled in the room,
    how long until they may send again (the message is then not accepted: 429)."""

    signals: tuple[Signal, ...] = ()
    retry_after_ms: int | None = None


def message_flood(cfg: FloodConfig, ctx: EventContext, window: Sequence[int]) -> FloodOutcome:
    """One user's messages in one room: ``window`` holds the times of their accepted messages in
    the last ``window_s`` (oldest first, this one not included). Local senders above
    ``throttle_above`` are throttled (429, the message not counted); the message that makes the
    count exceed ``warn_above`` is a ``warn`` (once per episode)."""
    if not cfg.enabled:
        return FloodOutcome()
    n = len(window)
    window_ms = cfg.window_s * 1000
    if ctx.local and cfg.throttle_above and n >= cfg.throttle_above:
        # The message is refused until enough of the window has passed.
        oldest = window[n - cfg.throttle_above]
        retry = max(1, oldest + window_ms - ctx.now_ms)
        sig = Signal(
            "detector.message_flood", "block", 1.0,
            f"{ctx.sender} is flooding the room: {n} messages in {cfg.window_s} s (more than "
            f"{cfg.throttle_above}); throttled for {-(-retry // 1000)} s",
            {"count": n, "window_s": cfg.window_s, "throttle_above": cfg.throttle_above,
             "retry_after_ms": retry},
        )  # fmt: skip
        return FloodOutcome((sig,), retry)
    count = n + 1
    if count == cfg.warn_above + 1:
        return FloodOutcome((Signal(
            "detector.message_flood", "warn", _ratio(count, cfg.warn_above),
            f"{ctx.sender} sent {count} messages in {cfg.window_s} s to this room (more than "
            f"{cfg.warn_above})",
            {"count": count, "window_s": cfg.window_s, "warn_above": cfg.warn_above},
        ),))  # fmt: skip
    return FloodOutcome()


def mention_spam(cfg: MentionConfig, ctx: EventContext) -> list[Signal]:
    """Mentions in one message: more than ``warn_above`` → warn, more than ``block_above`` →
    block. Readable events only."""
    if not cfg.enabled or not ctx.readable or ctx.etype not in ("m.room.message", "m.sticker"):
        return []
    users = mentioned_users(ctx, body_mentions=cfg.body_mentions, stop_above=cfg.block_above)
    n = len(users)
    if n <= cfg.warn_above:
        return []
    severity, limit = ("block", cfg.block_above) if n > cfg.block_above else (
        "warn", cfg.warn_above)  # fmt: skip
    return [Signal(
        "detector.mention_spam", severity, _ratio(n, limit),
        f"the message mentions more than {limit} users"
        + (f" ({n})" if severity == "warn" else ""),
        {"mentions": n, "warn_above": cfg.warn_above, "block_above": cfg.block_above},
    )]  # fmt: skip


def join_wave(cfg: JoinWaveConfig, ctx: EventContext, window: Sequence[int]) -> list[Signal]:
    """Joins into one room: ``window`` holds the times of the joins seen in the last
    ``window_s`` (this one not included). The join that makes them more than ``max_joins`` is a
    ``warn`` asking for ``cool_room`` until ``now + cooling_s`` (``evidence["until_ms"]``)."""
    if not cfg.enabled:
        return []
    count = len(window) + 1
    if count <= cfg.max_joins:
        return []
    until = ctx.now_ms + cfg.cooling_s * 1000
    return [Signal(
        "detector.join_wave", "warn", _ratio(count, cfg.max_joins),
        f"join wave: {count} joins in {cfg.window_s // 60} minutes (more than "
        f"{cfg.max_joins}); the room is closed to new joins for {cfg.cooling_s // 60} minutes",
        {"joins": count, "window_s": cfg.window_s, "max_joins": cfg.max_joins,
         "cooling_s": cfg.cooling_s, "until_ms": until},
        action="cool_room",
    )]  # fmt: skip


def invite_fanout(
    cfg: InviteFanoutConfig, ctx: EventContext, invitees: Sequence[str], *, new_account: bool
) -> list[Signal]:
    """Invites from one sender: ``invitees`` are the users they invited in the last
    ``window_s`` (any room, this one not included). More distinct users than ``warn_above`` →
    warn; than ``block_above`` (``new_account_block_above`` for a new account) → block."""
    if not cfg.enabled or ctx.membership != "invite":
        return []
    distinct = set(invitees)
    if ctx.state_key is not None:
        distinct.add(ctx.state_key)
    n = len(distinct)
    block_above = cfg.new_account_block_above if new_account else cfg.block_above
    if n > block_above:
        severity, limit = "block", block_above
    elif n > cfg.warn_above:
        severity, limit = "warn", cfg.warn_above
    else:
        return []
    who = "a new account" if new_account else ctx.sender
    return [Signal(
        "detector.invite_fanout", severity, _ratio(n, limit),
        f"{who} invited {n} users in {cfg.window_s // 60} minutes (more than {limit})",
        {"invitees": n, "window_s": cfg.window_s, "limit": limit, "new_account": new_account},
    )]  # fmt: skip


def membership_churn(cfg: ChurnConfig, ctx: EventContext, window: Sequence[int]) -> list[Signal]:
    """One's own joins and knocks of one room (a join when already joined, a profile change,
    is not one): ``window`` holds their times in the last ``window_s`` (this one not included).
    More than ``warn_above`` → warn; more than ``block_above`` → block."""
    if not cfg.enabled or ctx.membership not in ("join", "knock"):
        return []
    count = len(window) + 1
    if count <= cfg.warn_above:
        return []
    if count > cfg.block_above:
        severity, limit = "block", cfg.block_above
    else:
        severity, limit = "warn", cfg.warn_above
    return [Signal(
        "detector.membership_churn", severity, _ratio(count, limit),
        f"{ctx.sender} joined this room {count} times in {cfg.window_s // 60} minutes (more "
        f"than {limit}); leaving and rejoining over and over is a spam pattern",
        {"joins": count, "window_s": cfg.window_s, "limit": limit},
    )]  # fmt: skip


def first_message(
    cfg: FirstMessageConfig, ctx: EventContext, *, first: bool, new_account: bool,
    links: int | None = None,
) -> list[Signal]:  # fmt: skip
    """The sender's first message in the room since a join younger than ``within_s``
    (``first``), when it carries a link or media: ``new_account_severity`` for a new account,
    ``severity`` otherwise. Readable events only. ``links``: the body's links, when the caller
    counted them already (:func:`has_link`)."""
    if not cfg.enabled or not first or not ctx.readable:
        return []
    joined = ctx.sender_joined_ms
    if joined is None or ctx.now_ms - joined >= cfg.within_s * 1000:
        return []
    media = is_media(ctx)
    n_links = 0 if media else (len(has_link(ctx)) if links is None else links)
    if not media and not n_links:
        return []
    what = "media" if media else "a link"
    severity = cfg.new_account_severity if new_account else cfg.severity
    return [Signal(
        "detector.first_message", severity, 0.8 if new_account else 0.4,
        f"the first message after joining is {what}"
        + (" from an account less than a day old" if new_account else ""),
        {"media": media, "links": n_links, "joined_s_ago": (ctx.now_ms - joined) // 1000,
         "new_account": new_account},
    )]  # fmt: skip


def link_blast(cfg: LinkBlastConfig, ctx: EventContext, window: Sequence[int], *,
               links: int, new_account: bool) -> list[Signal]:  # fmt: skip
    """Messages with links (``links`` in this one) from a new account: ``window`` holds the
    times of its earlier ones in the last ``window_s`` (any room). More than ``block_above`` →
    ``severity`` (block or hold)."""
    if not cfg.enabled or not new_account or links == 0:
        return []
    count = len(window) + 1
    if count <= cfg.block_above:
        return []
    return [Signal(
        "detector.link_blast", cfg.severity, _ratio(count, cfg.block_above),
        f"an account less than a day old sent {count} messages with links in "
        f"{cfg.window_s // 60} minutes (more than {cfg.block_above})",
        {"link_messages": count, "window_s": cfg.window_s, "block_above": cfg.block_above},
    )]  # fmt: skip


def density_outlier(cfg: DensityConfig, ctx: EventContext) -> list[Signal]:
    """policyserv's density rule: a body of at least ``min_length`` characters of which at least
    ``max_density`` are not whitespace (walls of text, encoded blobs)."""
    if not cfg.enabled:
        return []
    body = body_text(ctx)
    n = len(body)
    if n < cfg.min_length:
        return []
    density = len("".join(body.split())) / n
    if density < cfg.max_density:
        return []
    return [Signal(
        "detector.density", cfg.severity, 0.6,
        f"a {n}-character message with almost no spaces (density {density:.2f})",
        {"length": n, "density": round(density, 3), "max_density": cfg.max_density},
    )]  # fmt: skip


def length_outlier(cfg: LengthConfig, ctx: EventContext, recent: Sequence[int]) -> list[Signal]:
    """A body longer than ``max_length`` (``severity``), or at least ``outlier_min_length`` and
    ``outlier_factor`` times the median of the room's ``recent`` body lengths (``info``, with
    at least ``outlier_min_samples`` of them)."""
    if not cfg.enabled:
        return []
    n = len(body_text(ctx))
    if n > cfg.max_length:
        return [Signal(
            "detector.length", cfg.severity, 0.6,
            f"a {n}-character message (more than {cfg.max_length})",
            {"length": n, "max_length": cfg.max_length},
        )]  # fmt: skip
    if n < cfg.outlier_min_length or len(recent) < cfg.outlier_min_samples:
        return []
    ordered = sorted(recent)
    median = ordered[len(ordered) // 2]
    if n < cfg.outlier_factor * max(1, median):
        return []
    return [Signal(
        "detector.length", "info", 0.3,
        f"a {n}-character message where this room's are about {median}",
        {"length": n, "room_median": median, "samples": len(recent)},
    )]  # fmt: skip


def origin_flood(cfg: OriginFloodConfig, ctx: EventContext, window: Sequence[int],
                 senders: int) -> list[Signal]:  # fmt: skip
    """Federated events from one origin into one room: ``window`` holds their times in the last
    ``window_s`` (this one not included), ``senders`` how many distinct senders sent them. The
    event that makes them more than ``warn_above`` is a ``warn``."""
    if not cfg.enabled or ctx.local:
        return []
    count = len(window) + 1
    if count != cfg.warn_above + 1:
        return []
    return [Signal(
        "detector.origin_flood", "warn", _ratio(count, cfg.warn_above),
        f"{ctx.origin} sent {count} events to this room in {cfg.window_s} s from {senders} "
        f"users (more than {cfg.warn_above})",
        {"origin": ctx.origin, "count": count, "senders": senders,
         "window_s": cfg.window_s, "warn_above": cfg.warn_above},
    )]  # fmt: skip
