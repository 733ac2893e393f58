"""The detectors' shell (``hs.guard.detectors``): bounded in-memory sliding windows of what
users, rooms and origin servers did recently, fed to the pure detectors of
:mod:`bastion.guard.detectors`.

:meth:`Detectors.signals` observes one event (local, before it is built; federated, after its
checks) into its windows and returns what the detectors say. The windows:

* per user and room — messages (flood), own joins and knocks (churn), whether the first
  message since the last join was seen;
* per room — joins (join wave), recent body lengths (length outliers);
* per user — invitees (invite fan-out), messages with links (new-account link blast);
* per origin server and room — federated events (origin flood).

Each window keeps only what its detector can use (entries younger than its period, at most one
more than its largest threshold), and each map at most :data:`MAX_KEYS` keys (the least recently
used forgotten first), so memory stays bounded under a flood of new senders or rooms. They are
in memory only: a restart forgets them (a restarted server is lenient for one window).

A local sender throttled for flooding a room (:func:`bastion.guard.detectors.message_flood`)
is answered 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms`` (C-S API "Rate limiting"): the
exception is raised from :meth:`Detectors.signals`, like the rate limits' own, and the start of
each throttle is recorded (``GuardService.record``); in shadow mode the throttle is only
recorded (a ``block`` signal once per episode). Users exempt from the rate limits
(``hs.guard.limits.is_exempt``: bots, bridges) are not observed at all.

Cost: a few dict look-ups and deque operations per event; text is read only for readable
messages (one regex pass for mentions and links, each skipped when the body has no ``@`` or
``.``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from bastion.errors import limit_exceeded
from bastion.guard import detectors as d
from bastion.guard.signals import Decision, EventContext, Signal

if TYPE_CHECKING:
    from bastion.server import HomeServer

log = logging.getLogger(__name__)

__all__ = ["MAX_KEYS", "Detectors", "Windows"]

#: Keys each window map remembers (users, rooms, user+room pairs, origin+room pairs).
MAX_KEYS = 50_000
#: Rooms whose detector switches are kept.
_MAX_SWITCHES = 4096
#: Body lengths remembered per room (length outliers).
LENGTH_SAMPLES = 50

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Windows(Generic[K, V]):
    """Bounded map of key → deque (at most ``max_keys`` keys, least recently used forgotten
    first; each deque at most ``maxlen`` entries)."""

    __slots__ = ("_data", "max_keys", "maxlen")

    def __init__(self, maxlen: int, max_keys: int = MAX_KEYS) -> None:
        self._data: dict[K, deque[V]] = {}
        self.maxlen = maxlen
        self.max_keys = max_keys

    def get(self, key: K) -> deque[V]:
        """The key's deque (a new empty one if unknown), marked as recently used."""
        data = self._data
        dq = data.pop(key, None)
        if dq is None:
            dq = deque(maxlen=self.maxlen)
            while len(data) >= self.max_keys:
                del data[next(iter(data))]
        data[key] = dq
        return dq

    def peek(self, key: K) -> deque[V] | None:
        return self._data.get(key)

    def clear(self, key: K) -> None:
        self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


def _prune(dq: deque[int], since: int) -> deque[int]:
    while dq and dq[0] <= since:
        dq.popleft()
    return dq


def _prune_pairs(dq: deque[tuple[int, str]], since: int) -> deque[tuple[int, str]]:
    while dq and dq[0][0] <= since:
        dq.popleft()
    return dq


class Detectors:
    """``hs.guard.detectors``."""

    def __init__(self, hs: HomeServer, *, is_exempt: Callable[[str], bool] | None = None) -> None:
        self.hs = hs
        self.config: d.DetectorConfig = hs.config.guard_config.detectors
        #: False in shadow mode (``guard.mode = "shadow"``): the flood throttle is not enforced.
        self.enforce: bool = hs.config.guard_config.mode != "shadow"
        #: The flood throttle is a rate limit: ``[guard.rate_limits] enabled = false`` (the
        #: benchmarks) lifts it with the others; the flood is still detected and warned about.
        self.throttle: bool = hs.config.guard_config.rate_limits.enabled
        self._is_exempt = is_exempt
        c = self.config
        self.messages: Windows[tuple[str, str], int] = Windows(
            max(c.message_flood.warn_above, c.message_flood.throttle_above) + 1
        )
        self.joins: Windows[str, int] = Windows(c.join_wave.max_joins + 1)
        self.invites: Windows[str, tuple[int, str]] = Windows(
            max(c.invite_fanout.block_above, c.invite_fanout.new_account_block_above,
                c.invite_fanout.warn_above) + 1
        )  # fmt: skip
        self.churn: Windows[tuple[str, str], int] = Windows(c.membership_churn.block_above + 1)
        self.links: Windows[str, int] = Windows(c.link_blast.block_above + 1)
        self.lengths: Windows[str, int] = Windows(LENGTH_SAMPLES)
        self.origins: Windows[tuple[str, str], tuple[int, str]] = Windows(
            c.origin_flood.warn_above + 1
        )
        #: (room, user) → the join (its time) after which a message was seen.
        self.spoke_after_join: Windows[tuple[str, str], int] = Windows(1)
        #: (room, user) pairs currently throttled for flooding (the start was recorded).
        self.throttled: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Per room, its detector settings and the detectors they turn off.
        self._switches: dict[str, tuple[Mapping[str, Any], frozenset[str] | None]] = {}

    # ------------------------------------------------------------------------------------------
    def exempt(self, user_id: str) -> bool:
        if self._is_exempt is not None:
            return self._is_exempt(user_id)
        guard = getattr(self.hs, "guard", None)
        return guard is not None and bool(guard.limits.is_exempt(user_id))

    def room_switches(self, room_id: str) -> frozenset[str] | None:
        """The detectors a server admin turned off in this room (the room's guard settings,
        ``{"detectors": {"enabled": false}}`` or ``{"detectors": {"<name>": false}}``); None:
        all of them."""
        guard = getattr(self.hs, "guard", None)
        if guard is None:
            return frozenset()
        det = guard.room_settings(room_id).get("detectors")
        if not det:
            return frozenset()
        # (kept per settings object: the guard replaces the object when the settings change)
        hit = self._switches.get(room_id)
        if hit is not None and hit[0] is det:
            return hit[1]
        off = (
            None
            if det.get("enabled") is False
            else frozenset(k for k, v in det.items() if v is False)
        )
        if len(self._switches) >= _MAX_SWITCHES:
            self._switches.clear()
        self._switches[room_id] = (det, off)
        return off

    def signals(self, ctx: EventContext) -> list[Signal]:
        """Observe ``ctx`` into the windows and return what the detectors say about it.

        Raises 429 ``M_LIMIT_EXCEEDED`` (``retry_after_ms``) for a local message from a user
        throttled for flooding the room."""
        cfg = self.config
        if not cfg.enabled or not ctx.sender or self.exempt(ctx.sender):
            return []
        off = self.room_switches(ctx.room_id)
        if off is None:
            return []
        if ctx.state_key is None:
            if ctx.etype == "m.room.redaction":
                return []  # moderators clearing up spam are not flooding
            return self._message(ctx, off)
        if ctx.etype == "m.room.member":
            return self._membership(ctx, off)
        return []

    # -- messages ------------------------------------------------------------------------------
    def _message(self, ctx: EventContext, off: frozenset[str]) -> list[Signal]:
        cfg = self.config
        now = ctx.now_ms
        key = (ctx.room_id, ctx.sender)
        out: list[Signal] = []
        fc = cfg.message_flood
        if fc.enabled and "message_flood" not in off:
            window = _prune(self.messages.get(key), now - fc.window_s * 1000)
            flood = d.message_flood(fc, ctx, window)
            if flood.retry_after_ms is not None and self.throttle:
                if not self.enforce:
                    # Shadow mode: the throttle's start is recorded (as a shadow verdict), the
                    # message goes through.
                    if key in self.throttled:
                        return out
                    self.throttled[key] = now
                    return list(flood.signals)
                self._throttle(ctx, key, flood)
                raise limit_exceeded(
                    flood.retry_after_ms,
                    flood.signals[0].reason if flood.signals else "you are sending too fast",
                )
            self.throttled.pop(key, None)
            window.append(now)
            if flood.retry_after_ms is None:  # (a lifted throttle's block is not a verdict)
                out.extend(flood.signals)
        oc = cfg.origin_flood
        if not ctx.local and oc.enabled and "origin_flood" not in off:
            ow = _prune_pairs(self.origins.get((ctx.origin, ctx.room_id)),
                              now - oc.window_s * 1000)  # fmt: skip
            senders = len({s for _, s in ow} | {ctx.sender})
            out += d.origin_flood(oc, ctx, [t for t, _ in ow], senders)
            ow.append((now, ctx.sender))
        if not ctx.readable or ctx.etype not in ("m.room.message", "m.sticker"):
            return out
        if "mention_spam" not in off:
            out += d.mention_spam(cfg.mention_spam, ctx)
        new_account = cfg.is_new_account(ctx)
        joined = ctx.sender_joined_ms
        first = False
        if joined is not None:
            seen = self.spoke_after_join.get(key)
            first = not seen or seen[0] != joined
            if first:
                seen.append(joined)
        lc = cfg.link_blast
        blast_on = lc.enabled and new_account and "link_blast" not in off
        first_on = first and cfg.first_message.enabled and "first_message" not in off
        links = len(d.has_link(ctx)) if blast_on or first_on else 0  # searched once
        if first_on:
            out += d.first_message(cfg.first_message, ctx, first=True, new_account=new_account,
                                   links=links)  # fmt: skip
        if blast_on and links:
            lw = _prune(self.links.get(ctx.sender), now - lc.window_s * 1000)
            blast = d.link_blast(lc, ctx, lw, links=links, new_account=True)
            out += blast
            if not blast:
                lw.append(now)
        if "density" not in off:
            out += d.density_outlier(cfg.density, ctx)
        if cfg.length.enabled and "length" not in off:
            lengths = self.lengths.get(ctx.room_id)
            out += d.length_outlier(cfg.length, ctx, lengths)
            n = len(d.body_text(ctx))
            if n:
                lengths.append(n)
        return out

    def _throttle(self, ctx: EventContext, key: tuple[str, str], flood: d.FloodOutcome) -> None:
        """Record the start of a flood throttle (once per episode)."""
        if key in self.throttled:
            return
        if len(self.throttled) >= MAX_KEYS:
            self.throttled.clear()
        self.throttled[key] = ctx.now_ms
        sig = flood.signals[0]
        decision = Decision(
            source=sig.source, outcome="block", reason=sig.reason, ts=ctx.now_ms,
            status="done", subject=ctx.sender, room_id=ctx.room_id, origin=ctx.origin,
            score=sig.score, signals=(sig,),
            details={"throttle": True, "retry_after_ms": flood.retry_after_ms},
        )  # fmt: skip
        self._record(decision)

    def _record(self, decision: Decision) -> None:
        guard = getattr(self.hs, "guard", None)
        if guard is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(guard.record(decision))
        except RuntimeError:  # no loop (a pure caller): nothing to record with
            return
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording a detector's decision failed", exc_info=task.exception())

    # -- memberships ---------------------------------------------------------------------------
    def _membership(self, ctx: EventContext, off: frozenset[str]) -> list[Signal]:
        cfg = self.config
        now = ctx.now_ms
        membership = ctx.membership
        out: list[Signal] = []
        own = ctx.state_key == ctx.sender
        if membership == "invite" and not own:
            ic = cfg.invite_fanout
            if ic.enabled and "invite_fanout" not in off:
                iw = _prune_pairs(self.invites.get(ctx.sender), now - ic.window_s * 1000)
                sigs = d.invite_fanout(ic, ctx, [u for _, u in iw],
                                       new_account=cfg.is_new_account(ctx))  # fmt: skip
                out += sigs
                if not any(s.severity == "block" for s in sigs) and ctx.state_key is not None:
                    iw.append((now, ctx.state_key))
            return out
        if not own or membership not in ("join", "knock"):
            return out  # leaving is never refused: not counted either
        if membership == "join" and ctx.sender_joined_ms is not None:
            return out  # already joined: a profile change, not a join
        cc = cfg.membership_churn
        if cc.enabled and "membership_churn" not in off:
            cw = _prune(self.churn.get((ctx.room_id, ctx.sender)), now - cc.window_s * 1000)
            sigs = d.membership_churn(cc, ctx, cw)
            out += sigs
            if not any(s.severity == "block" for s in sigs):
                cw.append(now)
        wc = cfg.join_wave
        if membership == "join" and wc.enabled and "join_wave" not in off:
            jw = _prune(self.joins.get(ctx.room_id), now - wc.window_s * 1000)
            wave = d.join_wave(wc, ctx, jw)
            if wave:
                # The wave is acted on (the room cools); counting starts again.
                self.joins.clear(ctx.room_id)
                out += wave
            else:
                jw.append(now)
        return out
