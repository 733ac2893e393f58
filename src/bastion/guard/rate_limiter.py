"""The guard's rate limits (``hs.guard.limits``): one token bucket per limit and key, the
per-user overrides an admin sets (bots, bridges), and the record of a throttle starting.

C-S API "Rate limiting": a request over a limit is refused with 429 ``M_LIMIT_EXCEEDED`` and
``retry_after_ms`` (:func:`bastion.errors.limit_exceeded`; api/http.py adds ``Retry-After``).
S-S API "Soft failure": a federated event over its origin's limits is soft-failed by the caller
(:meth:`RateLimits.remote_event_allowed` answers False), never rejected.

The names, keys and defaults are :mod:`bastion.guard.limits` (pure). Here:

* the allow path is a dict lookup and a bucket's arithmetic (no database, no await);
* memory is bounded: at most ``max_keys`` buckets per limit (least recently used forgotten
  first, so a flood of new keys cannot grow it, and an active flooder's own bucket is the last
  to go), and at most :data:`MAX_NOTED` remembered refusals;
* every refusal counts ``bastion_guard_rate_limited_total{limit=...}``; the first refusal of a
  key after :data:`QUIET_S` without one (a throttle starting) is recorded as a guard decision
  (``rate.<limit>``, outcome ``block``) through ``hs.guard.record``, at most
  :data:`RECORDS_PER_SECOND` a second (a flood of keys is counted, not written row by row);
* overrides: ``{limit: {per_second, burst} | None}`` per user, ``{"*": None}`` for no limits at
  all (the user is not counted in per-room limits either, and :meth:`RateLimits.is_exempt`
  tells the detectors to skip them). Read from the store once, changed through
  :meth:`RateLimits.set_overrides` (the admin API), each change a ``guard.rate_override``
  record in the transaction that stores it.

Server admins are limited like everyone else unless an admin exempts them: an admin account is
the most valuable one to steal, and the limits bound what a stolen token can do in a minute; a
person administering a server stays well inside them, and a bot that needs more gets an
override, visible and recorded. (Synapse does the same: admins have no exemption from
``rc_message``.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import orjson

from bastion.core.identifiers import server_name_of
from bastion.core.rate_limit import TokenBucket, TokenBuckets, retry_after_ms
from bastion.errors import MatrixError, limit_exceeded
from bastion.guard.limits import (
    EXEMPT,
    LIMITS,
    LimitSpec,
    Overrides,
    bucket_key,
    overrides_json,
    parse_overrides,
)
from bastion.guard.signals import Decision, Signal
from bastion.ledger import records
from bastion.services.security_records import admin_request_in, record_in

if TYPE_CHECKING:
    from bastion.guard.signals import EventContext
    from bastion.server import HomeServer
    from bastion.storage.interface import Txn

log = logging.getLogger("bastion.guard.rate_limits")

#: The metric every refusal counts (label ``limit``).
METRIC = "bastion_guard_rate_limited_total"
#: A refusal of a key after this many seconds without one starts a throttle: it is recorded.
QUIET_S = 300.0
#: Refused keys remembered (to know whether a throttle is already on), across all limits.
MAX_NOTED = 10_000
#: Throttle records written at most this often (a second, and at once): past that a flood of
#: new keys is only counted.
RECORDS_PER_SECOND = 1.0
RECORDS_BURST = 30


#: One limit to count a request against: (limit name, user, ip, room, origin).
_Check = tuple[str, str | None, str | None, str | None, str | None]
#: A refusal: (limit name, bucket key, seconds to wait, the user it was keyed by).
_Refusal = tuple[str, str | None, float, str | None]


class RateLimits:
    """``hs.guard.limits``: :meth:`require` for a local request, :meth:`require_local_event`
    for a local room event, :meth:`remote_event_allowed` for a federated one."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        cfg = hs.config.guard_config.rate_limits
        #: ``[guard.rate_limits] enabled = false`` lifts every limit (benchmarks).
        self.enabled = cfg.enabled
        specs = dict(cfg.limits)
        if "federation_send" not in cfg.configured:
            # The config's older keys give this limit its default (they stay valid).
            specs["federation_send"] = LimitSpec(
                float(hs.config.federation_send_per_second), int(hs.config.federation_send_burst)
            )
        #: Each limit's bucket shape, after the config.
        self.specs: dict[str, LimitSpec] = specs
        self._buckets = {
            name: TokenBuckets(spec.per_second, spec.burst, cfg.max_keys)
            for name, spec in specs.items()
        }
        self._key_of = {name: d.key for name, d in LIMITS.items()}
        #: user ID → overrides (read from the store on first use).
        self._overrides: dict[str, Overrides] | None = None
        self._override_buckets: dict[tuple[str, str], TokenBucket] = {}
        self._noted: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._record_budget = TokenBucket(RECORDS_PER_SECOND, RECORDS_BURST)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- overrides ------------------------------------------------------------------------------
    def _all_overrides(self) -> dict[str, Overrides]:
        if self._overrides is None:
            loaded: dict[str, Overrides] = {}
            for row in self.hs.store.get_rate_overrides():
                try:
                    loaded[row.user_id] = parse_overrides(orjson.loads(row.overrides))
                except (ValueError, orjson.JSONDecodeError) as e:
                    log.warning("ignored the rate-limit overrides of %s: %s", row.user_id, e)
            self._overrides = loaded
        return self._overrides

    def overrides(self, user_id: str) -> Overrides:
        """``user_id``'s overrides ({} when none)."""
        return self._all_overrides().get(user_id, {})

    def is_exempt(self, user_id: str) -> bool:
        """Whether an admin lifted every limit for ``user_id`` (``{"*": null}``): a bot or a
        bridge. The detectors skip exempt users too."""
        return EXEMPT in self._all_overrides().get(user_id, ())

    def effective(self, user_id: str) -> dict[str, LimitSpec | None]:
        """The per-user limits that apply to ``user_id`` (None: not limited)."""
        own = self.overrides(user_id)
        return {
            name: None if EXEMPT in own else own.get(name, self.specs[name])
            for name, d in LIMITS.items()
            if d.key == "user"
        }

    async def set_overrides(
        self, actor: str, user_id: str, overrides: Overrides | None, *, route: str,
        reason: str | None, ip: str | None,
    ) -> bool:  # fmt: skip
        """Replace (``overrides``) or remove (None) ``user_id``'s overrides: the row, its
        ``guard.rate_override`` record and the ``admin.request`` record in one transaction,
        then the in-memory copy. Returns whether anything changed."""
        now = self.hs.now_ms()
        store = self.hs.store
        text = None if overrides is None else orjson.dumps(overrides_json(overrides)).decode()
        old = self._all_overrides().get(user_id)
        before = None if old is None else orjson.dumps(overrides_json(old)).decode()

        def fn(conn: Txn) -> bool:
            admin_request_in(
                store, conn, actor=actor, route=route, ts=now, target=user_id, subject=user_id,
                reason=reason, origin=ip,
            )  # fmt: skip
            if text is None:
                changed = store.delete_rate_override_in(conn, user_id)
            else:
                changed = before != text
                store.set_rate_override_in(conn, user_id, text, actor, now)
            if changed:
                record_in(
                    store, conn, records.ACTION_GUARD_RATE_OVERRIDE, actor=actor, ts=now,
                    target=user_id, subject=user_id, reason=reason, origin=ip,
                    details={"overrides": None if overrides is None else overrides_json(overrides)},
                )  # fmt: skip
            return changed

        changed = await store.transaction(fn)
        cache = self._all_overrides()
        if overrides is None:
            cache.pop(user_id, None)
        else:
            cache[user_id] = dict(overrides)
        for key in [k for k in self._override_buckets if k[1] == user_id]:
            del self._override_buckets[key]
        return changed

    # -- the checks -----------------------------------------------------------------------------
    def _take(
        self, name: str, now_s: float, user: str | None, ip: str | None, room: str | None,
        origin: str | None,
    ) -> tuple[float, str | None, TokenBucket | TokenBuckets | None]:  # fmt: skip
        """Spend a token of ``name`` for this request: (0 or the seconds to wait, the bucket's
        key, what to refund the token to)."""
        kind = self._key_of[name]
        overrides = self._overrides
        if user is not None and overrides is not None and user in overrides:
            own = overrides[user]
            if EXEMPT in own:
                return 0.0, None, None
            if kind == "user" and name in own:
                spec = own[name]
                if spec is None:
                    return 0.0, None, None
                bucket = self._override_buckets.get((name, user))
                if bucket is None:
                    bucket = self._override_buckets[(name, user)] = TokenBucket(
                        spec.per_second, spec.burst
                    )
                return bucket.take(now_s), user, bucket
        key = bucket_key(kind, user=user, ip=ip, room=room, origin=origin)
        if key is None:
            return 0.0, None, None
        buckets = self._buckets[name]
        return buckets.take(key, now_s), key, buckets

    def _take_all(self, checks: list[_Check], now_s: float) -> _Refusal | None:
        """Spend a token of each check's limit, or none: the first refusal gives back the
        tokens spent before it (a request refused costs nothing)."""
        if self._overrides is None:
            self._all_overrides()
        spent: list[tuple[str | None, TokenBucket | TokenBuckets]] = []
        for name, user, ip, room, origin in checks:
            wait, key, source = self._take(name, now_s, user, ip, room, origin)
            if wait > 0:
                for k, src in spent:
                    if isinstance(src, TokenBucket):
                        src.refund()
                    elif k is not None:
                        src.refund(k)
                return name, key, wait, user
            if source is not None:
                spent.append((key, source))
        return None

    def _require_all(
        self, checks: list[_Check], *, room: str | None = None, origin: str | None = None
    ) -> None:
        now_s = time.monotonic()
        refusal = self._take_all(checks, now_s)
        if refusal is not None:
            name, key, wait, subject = refusal
            self._refused(name, key, wait, now_s, subject=subject, room=room, origin=origin)
            raise limit_exceeded(retry_after_ms(wait), f"too many requests ({name}); retry later")

    def require(
        self, name: str, *, user: str | None = None, ip: str | None = None,
        room: str | None = None, origin: str | None = None,
    ) -> None:  # fmt: skip
        """Count one request against limit ``name`` (one of :data:`bastion.guard.limits.
        LIMITS`), keyed by what the limit is keyed by; 429 ``M_LIMIT_EXCEEDED`` with
        ``retry_after_ms`` when its bucket is empty. ``user``'s overrides apply."""
        if self.enabled:
            self._require_all([(name, user, ip, room, origin)], room=room, origin=origin)

    @contextmanager
    def counting(
        self, name: str, *, user: str | None = None, ip: str | None = None,
        room: str | None = None, origin: str | None = None,
    ) -> Iterator[None]:  # fmt: skip
        """:meth:`require`, around a request's handling: a request refused for its input (400)
        gives its token back. A client with a bug gets the error that explains it rather than
        429, and the limit counts what the server did; a flood of junk costs a parse and a
        lookup each, no write."""
        self.require(name, user=user, ip=ip, room=room, origin=origin)
        try:
            yield
        except MatrixError as e:
            if e.status == 400 and self.enabled:
                self._refund(name, user, ip, room, origin)
            raise

    def _refund(
        self, name: str, user: str | None, ip: str | None, room: str | None, origin: str | None
    ) -> None:
        own = (self._overrides or {}).get(user or "")
        if own is not None and EXEMPT in own:
            return
        if own is not None and name in own:
            bucket = self._override_buckets.get((name, user or ""))
            if bucket is not None:
                bucket.refund()
            return
        key = bucket_key(self._key_of[name], user=user, ip=ip, room=room, origin=origin)
        if key is not None:
            self._buckets[name].refund(key)

    def require_local_event(self, ctx: EventContext) -> None:
        """The limits of a local user's room event, before it is built (429 when over one; a
        refused event spends no token of the others):

        * a join or knock: ``join`` (and ``join_remote`` when this server does not hold the
          room) for the user, ``join_room`` for the room; a join when already joined (a profile
          change) is not counted, as in Synapse;
        * an invite: ``invite`` for the sender, ``invite_room``, ``invite_target`` for the
          invitee;
        * leaving (leave, rejecting an invite, a deactivation's leaves): not counted, so a limit
          never keeps anyone in a room; kicks, bans and unbans: ``state``;
        * any other state event: ``state``; anything else (messages, redactions, reactions):
          ``message``.
        """
        if not self.enabled:
            return
        sender, ip = ctx.sender, ctx.ip
        if self.is_exempt(sender):
            return
        membership = ctx.membership if ctx.etype == "m.room.member" else None
        room = ctx.room_id or None  # createRoom's invites are asked about before the room exists
        checks: list[_Check]
        if membership in ("join", "knock"):
            if membership == "join" and self.hs.rooms.membership_of(ctx.room_id, sender) == "join":
                return
            checks = [("join", sender, ip, None, None)]
            if self.hs.store.get_room_version(ctx.room_id) is None:
                checks.append(("join_remote", sender, ip, None, None))
            checks.append(("join_room", sender, None, room, None))
        elif membership == "invite":
            checks = [("invite", sender, ip, None, None), ("invite_room", sender, None, room, None)]
            if ctx.state_key:
                checks.append(("invite_target", ctx.state_key, None, room, None))
        elif membership is not None:
            if ctx.state_key == sender:
                return  # leaving
            checks = [("state", sender, ip, None, None)]  # kick, ban, unban
        elif ctx.state_key is not None:
            checks = [("state", sender, ip, None, None)]
        else:
            checks = [("message", sender, ip, None, None)]
        self._require_all(checks, room=room)

    def remote_event_allowed(self, ctx: EventContext) -> bool:
        """Whether a federated event pushed by ``ctx.origin`` is within that server's limits:
        ``federation_event_room`` (origin and room) and ``federation_event`` (origin); an invite
        of a local user also counts ``invite_target``. False: the caller soft-fails it (it is
        valid; only its rate is not welcome) and the throttle's start is recorded. Call it for
        events received live (/send), not for backfilled history."""
        if not self.enabled:
            return True
        origin, room = ctx.origin, ctx.room_id
        checks: list[_Check] = [
            ("federation_event_room", None, None, room, origin),
            ("federation_event", None, None, None, origin),
        ]
        target = ctx.state_key if ctx.membership == "invite" else None
        if target is not None and server_name_of(target) == self.hs.server_name:
            checks.append(("invite_target", target, None, room, None))
        now_s = time.monotonic()
        refusal = self._take_all(checks, now_s)
        if refusal is None:
            return True
        name, key, wait, user = refusal
        self._refused(name, key, wait, now_s, subject=user or ctx.sender, room=room,
                      origin=origin, event_id=ctx.event_id)  # fmt: skip
        return False

    # -- refusals -------------------------------------------------------------------------------
    def _refused(
        self, name: str, key: str | None, wait: float, now_s: float, *, subject: str | None,
        room: str | None, origin: str | None, event_id: str | None = None,
    ) -> None:  # fmt: skip
        """Count a refusal; record it when it starts a throttle of its key."""
        self.hs.guard.alerts.count(METRIC, {"limit": name})
        noted = (name, key or "")
        last = self._noted.get(noted)
        self._noted[noted] = now_s
        self._noted.move_to_end(noted)
        while len(self._noted) > MAX_NOTED:
            self._noted.popitem(last=False)
        if last is not None and now_s - last < QUIET_S:
            return  # the throttle is on already: recorded when it started
        if self._record_budget.take(now_s) > 0:
            log.info("rate limit %s refused %s (not recorded: too many at once)", name, key)
            return
        spec = self.specs[name]
        if subject is not None and subject in (self._overrides or {}):
            own = (self._overrides or {})[subject].get(name)
            spec = own if own is not None else spec
        reason = f"rate limit {name} exceeded: {spec.per_second:g} a second, {spec.burst} at once"
        evidence = {"limit": name, "keyed_by": self._key_of[name], "key": key,
                    "per_second": spec.per_second, "burst": spec.burst,
                    "retry_after_ms": retry_after_ms(wait)}  # fmt: skip
        decision = Decision(
            source=f"rate.{name}", outcome="block", reason=reason, ts=self.hs.now_ms(),
            status="done", subject=subject, room_id=room, event_id=event_id, origin=origin,
            score=1.0, signals=(Signal(f"rate.{name}", "block", 1.0, reason, evidence),),
            details=evidence,
        )  # fmt: skip
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._record(decision))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, decision: Decision) -> None:
        try:
            await self.hs.guard.record(decision)
        except Exception:  # noqa: BLE001 — a failed record must not fail anything else
            log.exception("could not record the throttle %s of %s", decision.source,
                          decision.subject)  # fmt: skip

    async def drain(self) -> None:
        """Wait for the throttle records being written (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def limits_json(specs: Mapping[str, LimitSpec | None]) -> dict[str, dict[str, float | int] | None]:
    """Limits as JSON (the admin API)."""
    return {name: None if s is None else s.json() for name, s in specs.items()}
