"""Login and account defence, the shell (``hs.guard.login``): the accounting of
:mod:`bastion.guard.login_policy` kept in memory and persisted, registration limits, the
registration-wave detector, confusable usernames and new-login notices.

Used by :mod:`bastion.services.accounts` for ``POST /login`` (C-S API "Login"), the
``m.login.password`` stage of User-Interactive Authentication, ``POST /register`` and its
``m.login.registration_token`` stage; by :mod:`bastion.api.guard.throttles` (the admin API).

- **Memory and persistence.** Each key's state lives in memory; every failed check writes the
  states it changed to ``guard_login_throttles`` in the transaction of its ``login.failure``
  record, and the table is read back at start, so a restart does not reset an attacker's
  budget. Keys of existing accounts are kept apart from the others (unknown user names,
  addresses, prefixes), which are bounded (``max_keys``, least recently used forgotten first):
  a flood of random user names cannot push out a real account's throttle. Unknown user names
  are throttled exactly like real ones (the same keys, the same back-off, the same writes).
- **Records.** A key's first wait (a throttle *starting*) is a ``guard.throttle`` record in the
  transaction of the failure that started it; the waits that follow it are not (every failure
  already has its ``login.failure`` record). Stuffing and spraying blocks (``login.stuffing``,
  ``login.spraying``: outcome "block") and registration waves (``registration.wave``: "warn")
  are guard decisions (:meth:`GuardService.record_in`: a ``guard_decisions`` row and a
  ``guard.decision`` record, alerted by the core once committed). An admin's lift is a
  ``guard.throttle_lift`` record with the ``admin.request`` record of the call. Refused
  attempts write nothing.
- **New-login notices.** A successful login from a device or a network prefix the account has
  not logged in from is told to the user in their server-notices room (C-S API "Server
  Notices") after the login's transaction, in the background (a failing notice is logged; it
  never delays or fails the login), and recorded (``login.notice``). Registration's first device
  and prefix are known, not new; an account with no known login (created before this
  existed, or by an admin) learns its first login silently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bastion.core.rate_limit import TokenBuckets, retry_after_ms
from bastion.errors import M_INVALID_USERNAME, MatrixError, invalid_param, limit_exceeded, not_found
from bastion.guard.confusables import SkeletonIndex, skeleton
from bastion.guard.login_policy import (
    FRESH,
    Backoff,
    DistinctWindow,
    KeyState,
    admit,
    attempt_keys,
    canonical_address,
    fail,
    forget,
    key_kind,
    network_prefix,
    release,
    reserve,
    stuffing_kind,
    token_keys,
)
from bastion.guard.signals import Decision, Signal
from bastion.ledger import records
from bastion.services.lifecycle import BackgroundService
from bastion.services.security_records import admin_request_in, record, record_in

if TYPE_CHECKING:
    from bastion.server import HomeServer
    from bastion.storage.interface import Txn

log = logging.getLogger("bastion.guard.login")

#: ``server_notice_type`` of new-login notices (C-S API "Server Notices").
NOTICE_TYPE = "org.bastion.login"
#: Throttle starts, by scope (the key's kind: account, device, devices, address, prefix,
#: regtoken-address, regtoken-prefix); counted once the failure that started them committed.
THROTTLES_METRIC = "bastion_guard_login_throttles_total"
#: Login and registration throttles started, by source (``login.backoff``, ``login.stuffing``,
#: ``login.spraying``).
BLOCKS_METRIC = "bastion_guard_login_blocks_total"
#: Prune forgotten rows from ``guard_login_throttles`` once every this many writes.
PRUNE_EVERY = 1000
#: Sources (addresses, prefixes) whose distinct failing accounts are remembered.
MAX_SOURCES = 10_000


@dataclass
class Attempt:
    """One admitted check: the keys it reserved."""

    keys: tuple[str, ...]
    account: str
    ip: str | None
    #: Whether the account exists (its keys are kept apart from the bounded ones).
    real: bool
    done: bool = False


@dataclass(eq=False)
class Failure:
    """What one failed check changed: the rows to write and the records and alerts of the
    throttles it started. Written with :meth:`write_in` in the caller's transaction. Hashed
    by identity (the store's after-commit calls are keyed by their arguments)."""

    now: int
    states: list[tuple[str, KeyState]] = field(default_factory=list)
    #: (key, source, details) of each key's first wait.
    started: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    #: Stuffing and spraying blocks: guard decisions (recorded and alerted by the core).
    decisions: list[Decision] = field(default_factory=list)
    prune_before: int | None = None


@dataclass(frozen=True)
class NewLogin:
    """A login from a device or a network prefix the account had not logged in from."""

    user_id: str
    device_id: str
    display_name: str | None
    prefix: str | None
    ts: int
    new_device: bool
    new_prefix: bool


class LoginDefence(BackgroundService):
    """``hs.guard.login``. A background service for its new-login notices (drained at
    shutdown with the others)."""

    background_name = "new-login notices"

    def __init__(self, hs: HomeServer) -> None:
        super().__init__()
        self.hs = hs
        guard = hs.config.guard_config
        self.config = guard.login
        self.registration = guard.registration
        #: Keys of existing accounts (bounded by the accounts and their devices).
        self._real: dict[str, KeyState] = {}
        #: Every other key, least recently used first, at most ``max_keys``.
        self._other: OrderedDict[str, KeyState] = OrderedDict()
        self._loaded = False
        self._writes = 0
        self._sources: OrderedDict[str, DistinctWindow] = OrderedDict()
        #: Password fingerprints (to tell spraying from stuffing) are keyed by a secret of this
        #: process and kept only in memory.
        self._fingerprint_key = os.urandom(32)
        reg = self.registration
        self._reg_buckets = (
            TokenBuckets(reg.per_address_per_hour / 3600, reg.per_address_burst)
            if reg.per_address_burst > 0
            else None
        )
        self._reg_times: deque[int] = deque(maxlen=max(1, reg.wave_count))
        self._wave_alerted_until = 0
        self._last_registration = 0
        self._skeletons: SkeletonIndex | None = None
        #: The clock (tests replace it to skip waits).
        self.now_ms = hs.now_ms

    # -- state --------------------------------------------------------------------------------
    def _backoff(self, key: str) -> Backoff:
        if key_kind(key).startswith("regtoken"):
            return self.registration.token
        return self.config.backoff(key)

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for row in self.hs.store.guard_login_throttles():
            key = row["key"]
            try:
                key_kind(key)
            except ValueError:
                continue
            state = KeyState(row["failures"], row["level"], row["blocked_until"],
                             row["last_failure"])  # fmt: skip
            self._put(key, state, real=self._is_real_key(key))

    def _is_real_key(self, key: str) -> bool:
        kind = key_kind(key)
        if kind not in ("account", "device", "devices"):
            return False
        rest = key.partition(":")[2]
        user_id = rest.partition("|")[0] if kind == "device" else rest
        return user_id.startswith("@") and self.hs.store.get_user(user_id) is not None

    def _get(self, key: str) -> KeyState:
        state = self._real.get(key)
        if state is not None:
            return state
        state = self._other.get(key)
        if state is not None:
            self._other.move_to_end(key)
            return state
        return FRESH

    def _put(self, key: str, state: KeyState, *, real: bool) -> None:
        if state.idle:
            self._real.pop(key, None)
            self._other.pop(key, None)
            return
        if real:
            self._real[key] = state
            self._other.pop(key, None)  # (counted before the account existed)
            return
        self._other[key] = state
        self._other.move_to_end(key)
        while len(self._other) > self.config.max_keys:
            self._other.popitem(last=False)

    def state(self, key: str) -> KeyState:
        """A key's current state (after forgetting what is old)."""
        self._ensure_loaded()
        return forget(self._get(key), self._backoff(key), self.now_ms())

    # -- checks -------------------------------------------------------------------------------
    def _begin(self, keys: tuple[str, ...], account: str, ip: str | None, real: bool,
               message: str) -> Attempt:  # fmt: skip
        self._ensure_loaded()
        now = self.now_ms()
        wait = max(admit(self._get(k), self._backoff(k), now) for k in keys)
        if wait:
            raise limit_exceeded(wait, message)
        for k in keys:
            self._put(k, reserve(self._get(k), self._backoff(k), now), real=real and _own(k))
        return Attempt(keys, account, ip, real)

    def begin(self, account: str, ip: str | None, *, known_device: str | None = None,
              real: bool = False) -> Attempt:  # fmt: skip
        """Admit and reserve one password check for ``account`` (a user ID, or the attempted
        name) from ``ip`` (429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms`` when any of its
        keys is throttled: the password must then not be checked). ``known_device``: the
        presented ``device_id`` when the account has it. ``real``: the account exists (only
        where the state is kept; the answer is the same)."""
        keys = attempt_keys(account, ip, known_device)
        return self._begin(keys, account, ip, real, "too many failed login attempts")

    def succeed(self, attempt: Attempt) -> None:
        """The check passed: release its slots (nothing is forgiven)."""
        self.abort(attempt)

    def abort(self, attempt: Attempt) -> None:
        """The check did not happen (the hashing pool was busy, the request was cancelled)."""
        if attempt.done:
            return
        attempt.done = True
        for k in attempt.keys:
            state = self._get(k)
            if state.pending:
                self._put(k, release(state), real=attempt.real and _own(k))

    def fail(self, attempt: Attempt, password: str | None = None) -> Failure:
        """The check failed: count it on every key (in memory, now) and return what to write
        in the failure's transaction (:meth:`write_in`) and alert after it (:meth:`after`)."""
        now = self.now_ms()
        out = Failure(now)
        if attempt.done:
            return out
        attempt.done = True
        for k in attempt.keys:
            before = self._get(k)
            state, waits = fail(before, self._backoff(k), now)
            if waits and before.level == 0:
                out.started.append((k, "login.backoff", {
                    "kind": key_kind(k), "failures": state.failures,
                    "until": state.blocked_until,
                }))  # fmt: skip
            self._put(k, state, real=attempt.real and _own(k))
            out.states.append((k, state))
        if password is not None:
            self._watch_sources(attempt, password, now, out)
        self._writes += 1
        if self._writes % PRUNE_EVERY == 0:
            out.prune_before = now - max(self.config.account.forget_ms, DAY_MS_FALLBACK)
        return out

    def _watch_sources(self, attempt: Attempt, password: str, now: int, out: Failure) -> None:
        """Stuffing and spraying: distinct accounts failing from one address or prefix."""
        cfg = self.config
        fp = hashlib.blake2b(password.encode("utf-8", "surrogatepass"), digest_size=8,
                             key=self._fingerprint_key).digest()  # fmt: skip
        for k in attempt.keys:
            kind = key_kind(k)
            if kind not in ("address", "prefix"):
                continue
            threshold = cfg.stuffing_accounts if kind == "address" else cfg.stuffing_prefix_accounts
            if threshold <= 0:
                continue
            window = self._sources.get(k)
            if window is None:
                window = self._sources[k] = DistinctWindow(cfg.stuffing_window_ms)
                while len(self._sources) > MAX_SOURCES:
                    self._sources.popitem(last=False)
            self._sources.move_to_end(k)
            accounts, passwords = window.add(attempt.account, fp, now)
            source = stuffing_kind(accounts, passwords, threshold)
            if source is None:
                continue
            self._sources.pop(k, None)  # start counting afresh once it has been acted on
            state = self._get(k)
            until = max(state.blocked_until, now + cfg.stuffing_block_ms)
            state = replace(state, blocked_until=until, last_failure=now)
            self._put(k, state, real=False)
            out.states = [(key, s) for key, s in out.states if key != k] + [(k, state)]
            details = {"kind": key_kind(k), "from": k.partition(":")[2],
                       "accounts": accounts, "passwords": passwords, "until": until}  # fmt: skip
            what = "password spraying" if source == "login.spraying" else "credential stuffing"
            reason = (f"{what} from {k.partition(':')[2]}: {accounts} accounts failed within "
                      f"{cfg.stuffing_window_ms // 1000} s; blocked for "
                      f"{cfg.stuffing_block_ms // 1000} s")  # fmt: skip
            # A guard decision (recorded and alerted by the guard's core, :meth:`write_in`).
            out.decisions.append(Decision(
                source=source, outcome="block", reason=reason, ts=now,
                origin=k.partition(":")[2], score=1.0, details=details,
                signals=(Signal(source, "block", 1.0, reason, evidence=details),),
            ))  # fmt: skip

    def write_in(self, conn: Txn, failure: Failure) -> None:
        """Persist a failure's states and record the throttles it started (in the caller's
        transaction, with its ``login.failure`` record)."""
        store = self.hs.store
        for key, s in failure.states:
            store.guard_login_throttle_put_in(conn, key, s.failures, s.level, s.blocked_until,
                                              s.last_failure, failure.now)  # fmt: skip
        for key, source, details in failure.started:
            record_in(
                store, conn, records.ACTION_GUARD_THROTTLE, actor=self.hs.server_name,
                ts=failure.now, target=key, subject=_subject(key),
                details={"source": source, **details},
            )  # fmt: skip
        for decision in failure.decisions:
            self.hs.guard.record_in(conn, decision)
        if failure.started or failure.decisions:
            store.run_after_commit(self._count_started, failure)
        if failure.prune_before is not None:
            store.guard_login_throttles_prune_in(conn, failure.prune_before, failure.now)

    def _count_started(self, failure: Failure) -> None:
        """Once a failure committed: the throttles it started, in the metrics."""
        alerts = self.hs.guard.alerts
        for key, source, _details in failure.started:
            alerts.count(THROTTLES_METRIC, {"scope": key_kind(key)})
            alerts.count(BLOCKS_METRIC, {"source": source})
        for decision in failure.decisions:
            alerts.count(BLOCKS_METRIC, {"source": decision.source})

    async def failed(self, attempt: Attempt, password: str | None = None) -> None:
        """:meth:`fail` written in a transaction of its own (registration-token guesses)."""
        failure = self.fail(attempt, password)
        await self.hs.store.transaction(lambda conn: self.write_in(conn, failure))

    # -- registration -------------------------------------------------------------------------
    def begin_token(self, ip: str | None) -> Attempt:
        """Admit and reserve one registration-token guess from ``ip`` (429 when throttled)."""
        return self._begin(token_keys(ip), "", ip, False, "too many registration token attempts")

    def require_registration(self, ip: str | None) -> None:
        """A registration from ``ip`` may go ahead (429 ``M_LIMIT_EXCEEDED`` otherwise): the
        per-address bucket, and during a wave with ``wave_action = "slow"`` the spacing."""
        now = self.now_ms()
        reg = self.registration
        if reg.wave_action == "slow" and self._wave_active(now):
            wait = self._last_registration + reg.wave_interval_ms - now
            if wait > 0:
                raise limit_exceeded(wait, "registrations are slowed down; try again later")
        if self._reg_buckets is not None:
            wait_s = self._reg_buckets.take(canonical_address(ip) or "", now / 1000)
            if wait_s:
                raise limit_exceeded(retry_after_ms(wait_s), "too many registrations")

    def registration_requires_token(self) -> bool:
        """During a registration wave with ``wave_action = "token"``: open registration asks
        for a registration token."""
        reg = self.registration
        return reg.wave_action == "token" and self._wave_active(self.now_ms())

    def _wave_active(self, now: int) -> bool:
        reg = self.registration
        times = self._reg_times
        return (reg.wave_count > 0 and len(times) >= reg.wave_count
                and times[0] > now - reg.wave_window_ms)  # fmt: skip

    async def registered(self, user_id: str, ip: str | None) -> None:
        """A registration happened: the wave detector, the confusables index."""
        now = self.now_ms()
        self._last_registration = now
        self._reg_times.append(now)
        if self._skeletons is not None:
            self._skeletons.add(_localpart(user_id))
        reg = self.registration
        if self._wave_active(now) and now >= self._wave_alerted_until:
            self._wave_alerted_until = now + reg.wave_window_ms
            details = {"registrations": len(self._reg_times), "window_ms": reg.wave_window_ms,
                       "action": reg.wave_action, "last_address": network_prefix(ip)}  # fmt: skip
            reason = (f"registration wave: {len(self._reg_times)} registrations within "
                      f"{reg.wave_window_ms // 1000} s (action: {reg.wave_action})")  # fmt: skip
            decision = Decision(
                source="registration.wave", outcome="warn", reason=reason, ts=now, score=1.0,
                details=details, signals=(Signal("registration.wave", "warn", 1.0, reason,
                                                 evidence=details),),
            )  # fmt: skip
            try:
                # A guard decision: recorded, and alerted by the guard's core.
                await self.hs.guard.record(decision)
            except Exception:  # noqa: BLE001 - the registration itself succeeded
                log.exception("registration wave alert failed")

    def check_username(self, user_id: str) -> None:
        """``M_INVALID_USERNAME`` when the new name impersonates an admin (``confusables``
        "admins") or any existing user ("all") by confusable characters."""
        mode = self.registration.confusables
        if mode == "off":
            return
        localpart = _localpart(user_id)
        target = skeleton(localpart)
        if mode == "all":
            if self._skeletons is None:
                self._skeletons = SkeletonIndex(
                    _localpart(u) for u in self.hs.store.guard_all_user_ids()
                )
            clash = self._skeletons.confusable_with(localpart)
        else:
            clash = next((lp for lp in map(_localpart, self.hs.store.guard_admin_user_ids())
                          if lp != localpart and skeleton(lp) == target), None)  # fmt: skip
        if clash is not None:
            raise MatrixError(
                M_INVALID_USERNAME, "that username is too similar to an existing one", 400
            )

    # -- known logins and notices -------------------------------------------------------------
    def note_registration_in(self, conn: Txn, user_id: str, device_id: str, ip: str | None,
                             now: int) -> None:  # fmt: skip
        """Registration's device and prefix are the account's first known login."""
        store = self.hs.store
        store.guard_known_login_note_in(conn, user_id, "device", device_id, now)
        prefix = network_prefix(ip)
        if prefix is not None:
            store.guard_known_login_note_in(conn, user_id, "prefix", prefix, now)

    def note_login_in(self, conn: Txn, user_id: str, device_id: str, display: str | None,
                      ip: str | None, now: int) -> NewLogin | None:  # fmt: skip
        """Remember a successful login's device and prefix (in the login's transaction); what
        to tell the user when either is new and the account had known logins before."""
        store = self.hs.store
        had = store.guard_known_logins_any_in(conn, user_id)
        new_device = store.guard_known_login_note_in(conn, user_id, "device", device_id, now)
        prefix = network_prefix(ip)
        new_prefix = prefix is not None and store.guard_known_login_note_in(
            conn, user_id, "prefix", prefix, now
        )
        if not had or not self.config.new_login_notices or not (new_device or new_prefix):
            return None
        return NewLogin(user_id, device_id, display, prefix, now, new_device, new_prefix)

    def notify(self, new: NewLogin | None) -> None:
        """Send the notice of a new login in the background (never fails the login)."""
        if new is None:
            return
        self.spawn(self._notify(new))

    async def _notify(self, new: NewLogin) -> None:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(new.ts / 1000))
        name = f" ({new.display_name})" if new.display_name else ""
        what = " and ".join(w for w, on in (("a new device", new.new_device),
                                            ("a new network", new.new_prefix)) if on)  # fmt: skip
        body = (
            f"New login to your account from {what}: device {new.device_id}{name}, address "
            f"{new.prefix or 'unknown'}, at {when}. If this was not you, change your password "
            f"and sign that device out."
        )
        details = {"device_id": new.device_id, "display_name": new.display_name,
                   "prefix": new.prefix, "ts": new.ts, "new_device": new.new_device,
                   "new_prefix": new.new_prefix}  # fmt: skip
        try:
            event_id = await self.hs.server_notices.send_notice(
                new.user_id,
                body,
                notice_type=NOTICE_TYPE,
                extra={"org.bastion.login": details},
            )
            # The display name the client chose stays out of the record: a ledger leaf is never
            # rewritten, and an erasure of the account must be able to remove it (issue 10).
            kept = {k: v for k, v in details.items() if k != "display_name"}
            await record(
                self.hs.store, records.ACTION_LOGIN_NOTICE, actor=self.hs.server_name,
                ts=self.now_ms(), target=new.user_id, subject=new.user_id,
                details={**kept, "event_id": event_id},
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - a notice never fails the login it tells of
            log.exception("new-login notice for %s failed", new.user_id)

    def key_counts(self) -> tuple[int, int]:
        """Keys in memory: (of existing accounts, others — bounded by ``max_keys``)."""
        return len(self._real), len(self._other)

    # -- the admin API ------------------------------------------------------------------------
    def active_throttles(self) -> list[dict[str, Any]]:
        """The keys waiting now: kind, key, failures, until (ms)."""
        self._ensure_loaded()
        now = self.now_ms()
        out: list[dict[str, Any]] = []
        for key, s in [*self._real.items(), *self._other.items()]:
            if s.blocked_until > now:
                out.append({"kind": key_kind(key), "key": key, "failures": s.failures,
                            "level": s.level, "until": s.blocked_until})  # fmt: skip
        out.sort(key=lambda t: (-t["until"], t["key"]))
        return out

    async def lift(self, key: str, *, admin: str, route: str, ip: str | None,
                   reason: str | None) -> None:  # fmt: skip
        """An admin lifts a key's throttle: its failures are forgotten (memory and table),
        recorded (``guard.throttle_lift``) with the call (``admin.request``). 404 when the key
        has nothing to lift."""
        try:
            key_kind(key)
        except ValueError:
            raise invalid_param("not a throttle key (kind:value)") from None
        self._ensure_loaded()
        before = self.state(key)
        if before.idle:
            raise not_found("no throttle on that key")
        self._put(key, replace(FRESH, pending=before.pending), real=key in self._real)
        self._sources.pop(key, None)
        now = self.now_ms()
        store = self.hs.store

        def fn(conn: Txn) -> None:
            store.guard_login_throttle_delete_in(conn, key)
            admin_request_in(store, conn, actor=admin, route=route, ts=now, target=key,
                             subject=_subject(key), reason=reason, origin=ip)  # fmt: skip
            record_in(
                store, conn, records.ACTION_GUARD_THROTTLE_LIFT, actor=admin, ts=now,
                target=key, subject=_subject(key), reason=reason, origin=ip,
                details={"kind": key_kind(key), "failures": before.failures,
                         "until": before.blocked_until},
            )  # fmt: skip

        await store.transaction(fn)

    async def record_read(
        self, *, admin: str, route: str, ip: str | None, reason: str | None = None
    ) -> None:
        """An admin read of the throttles: its ``admin.request`` record (with the admin's
        optional ``reason``)."""
        now = self.now_ms()
        await self.hs.store.transaction(
            lambda conn: admin_request_in(
                self.hs.store,
                conn,
                actor=admin,
                route=route,
                ts=now,
                target=None,
                reason=reason,
                origin=ip,
            )  # fmt: skip
        )


DAY_MS_FALLBACK = 86_400_000


def _own(key: str) -> bool:
    """Whether a key belongs to one account (not to an address or prefix)."""
    return key_kind(key) in ("account", "device", "devices")


def _subject(key: str) -> str | None:
    """The local user a key is about (records about a user carry it as subject)."""
    kind = key_kind(key)
    if kind not in ("account", "device", "devices"):
        return None
    rest = key.partition(":")[2]
    user_id = rest.partition("|")[0] if kind == "device" else rest
    return user_id if user_id.startswith("@") and ":" in user_id else None


def _localpart(user_id: str) -> str:
    return user_id[1:].partition(":")[0] if user_id.startswith("@") else user_id
