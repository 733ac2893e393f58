"""Login and registration defence, the arithmetic (pure: every time is passed in, nothing here
reads a clock, a database or the network). The shell is :mod:`bastion.guard.login_defence`.

C-S API "Login" (``POST /login``), "User-Interactive Authentication API" (the
``m.login.password`` stage), "Account registration" (``POST /register`` and its
``m.login.registration_token`` stage) and "Rate limiting" (429 ``M_LIMIT_EXCEEDED`` with
``retry_after_ms``).

**Failed-login accounting.** Every password check is made against several *keys*, and each key
has a progressive back-off (:class:`Backoff`): ``free`` failures without a wait, then a wait of
``base`` after the ``free``-th failure, doubling with each further failure, capped at ``cap``;
between two waits exactly one attempt is checked. A key forgets its failures ``forget`` after
its last failure. The keys of one attempt (:func:`attempt_keys`):

- ``account:<user ID>`` — failures for the account from every address, whether the account
  exists or not (an unknown user ID is throttled exactly like a real one);
- when the login presents a ``device_id`` the account already has: ``device:<user ID>|<device>``
  and ``devices:<user ID>`` (all of the account's known devices together) *instead of*
  ``account:``, so an attacker who exhausts the account's budget does not lock out its owner
  logging in again on their own device (device IDs are not secret — anyone sharing an
  encrypted room sees them — so all of an account's devices share the ``devices:`` budget,
  which keeps the daily bound; an attacker who presents one of the owner's device IDs can
  exhaust it, and then the owner still has their existing sessions);
- ``address:<ip>`` — failures from one address across accounts (a flood of random usernames);
- ``prefix:<net>`` — failures from the address's network (/24 for IPv4, /56 for IPv6; an
  IPv4-mapped IPv6 address counts as IPv4).

An attempt is checked only when every one of its keys admits it (:func:`admit`); a refused
attempt's password is never checked and the refusal changes nothing (failures while throttled
do not extend the wait). An admitted attempt *reserves* its slot on every key
(:func:`reserve`) before the password hash is awaited, so concurrent attempts cannot overrun a
key: while ``free`` attempts are failed or in flight, or while a blocked key's one attempt is
in flight, further attempts are refused. A wrong password turns the reservation into a failure
(:func:`fail`); a right one releases it (:func:`release`) and forgives nothing.

**The daily budget** (:meth:`Backoff.max_checks`). With ``forget`` at least a day, a key's
failures in any 24 hours are at most those of a fresh key: ``free`` plus the number of waits
whose running sum stays under 24 hours (the waits never shrink, and a key forgets only after a
whole day without failures, so a window that contains a reset holds nothing before it). With
the defaults (5 free, 1 minute doubling to 1 hour): 5 + 6 (after 1+2+4+8+16+32 = 63 minutes)
+ 22 (one an hour for the remaining 1,377 minutes: 63 + 22·60 = 1,383 < 1,440) = **33** a day
per key. Every attempt against an account goes through ``account:`` or ``devices:``, so an
attacker gets at most 33 + (for ``devices:``, 10 free: 10 + 28) 38 = **71 password checks per
account per day, however many addresses they use** (below the goal of 100;
:func:`parse_login_config` refuses settings whose sum exceeds ``daily_budget``).

**Credential stuffing and password spraying** (:class:`DistinctWindow`, :func:`stuffing_kind`):
when failures for ``stuffing_accounts`` (10) distinct accounts come from one address, or
``stuffing_prefix_accounts`` (30) from one prefix, within ``stuffing_window`` (10 minutes),
that source is blocked for ``stuffing_block`` (1 hour) and an alert is raised;
``login.spraying`` when few distinct passwords were tried (one password across many accounts),
``login.stuffing`` otherwise (a list of leaked pairs).

**Registration** (:class:`RegistrationConfig`): a token bucket per address for completed
registrations; registration-token guesses inside ``POST /register`` are failures on
``regtoken-address:`` and ``regtoken-prefix:`` keys with their own back-off; a server-wide
registration wave (``wave_count`` registrations within ``wave_window``) raises an alert and,
when ``wave_action`` says so, requires a registration token or spaces registrations
``wave_interval`` apart until the wave has passed.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from bastion.core.egress_filter import peer_address
from bastion.guard.tables import check_keys, get_bool, get_number, get_str, subtable

__all__ = [
    "DAY_MS",
    "KEY_KINDS",
    "WAVE_ACTIONS",
    "Backoff",
    "DistinctWindow",
    "KeyState",
    "LoginConfig",
    "RegistrationConfig",
    "admit",
    "attempt_keys",
    "fail",
    "forget",
    "key_kind",
    "network_prefix",
    "parse_login_config",
    "parse_registration_config",
    "release",
    "reserve",
    "stuffing_kind",
]

DAY_MS: Final = 86_400_000
MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000

#: The kinds of key, as they prefix a key (``account:@alice:example.org``).
KEY_KINDS: Final = ("account", "device", "devices", "address", "prefix", "regtoken-address",
                    "regtoken-prefix")  # fmt: skip

#: What the registration-wave detector does besides alerting: nothing more, require a
#: registration token while the wave lasts, or space registrations out.
WAVE_ACTIONS: Final = ("alert", "token", "slow")

#: How the refusal of confusable usernames applies: off, against admins, against every user.
CONFUSABLE_MODES: Final = ("off", "admins", "all")


# -- the back-off of one key --------------------------------------------------------------------
@dataclass(frozen=True)
class Backoff:
    """``free`` failures without a wait; then ``base_ms`` after the ``free``-th failure,
    doubling with each further failure, at most ``cap_ms``; forgotten ``forget_ms`` after the
    last failure."""

    free: int = 5
    base_ms: int = MINUTE_MS
    cap_ms: int = HOUR_MS
    forget_ms: int = DAY_MS

    def wait_ms(self, level: int) -> int:
        """The wait after the ``level``-th failure past the free ones (0 for the first)."""
        if level >= 62:
            return self.cap_ms
        return min(self.cap_ms, self.base_ms << level)

    def max_checks(self, period_ms: int = DAY_MS) -> int:
        """The most failed checks a key allows in any ``period_ms`` (see the module's docstring:
        ``free``, then one check after each wait while their running sum stays below the
        period). Only an upper bound when ``forget_ms`` is at least ``period_ms``."""
        if self.forget_ms < period_ms:
            raise ValueError("the bound holds only when failures are remembered for the period")
        count, elapsed, level = self.free, 0, 0
        while True:
            elapsed += self.wait_ms(level)
            if elapsed >= period_ms:
                return count
            count += 1
            level += 1


@dataclass(frozen=True)
class KeyState:
    """One key's accounting: failures since it was last forgotten, how many waits it has
    started (``level``), when its current wait ends, its last failure and the attempts in
    flight (reserved, not yet failed or released)."""

    failures: int = 0
    level: int = 0
    blocked_until: int = 0
    last_failure: int = 0
    pending: int = 0

    @property
    def idle(self) -> bool:
        """Nothing to remember (a fresh key)."""
        return self.failures == 0 and self.pending == 0 and self.blocked_until == 0


FRESH: Final = KeyState()


def forget(state: KeyState, backoff: Backoff, now_ms: int) -> KeyState:
    """The state with its failures forgotten once ``forget_ms`` has passed since the last one
    (never while blocked or with attempts in flight)."""
    if (
        state.failures
        and state.pending == 0
        and now_ms >= state.blocked_until
        and now_ms - state.last_failure >= backoff.forget_ms
    ):
        return FRESH
    return state


def admit(state: KeyState, backoff: Backoff, now_ms: int) -> int:
    """0 when an attempt may be checked now, else the milliseconds to wait (at least 1)."""
    state = forget(state, backoff, now_ms)
    if now_ms < state.blocked_until:
        return state.blocked_until - now_ms
    if state.failures + state.pending < backoff.free or state.pending == 0:
        return 0
    # Attempts in flight use up what is allowed: the answer is at least the next wait.
    return max(1, backoff.wait_ms(state.level))


def reserve(state: KeyState, backoff: Backoff, now_ms: int) -> KeyState:
    """The state with one more attempt in flight (call only after :func:`admit` said 0)."""
    state = forget(state, backoff, now_ms)
    return replace(state, pending=state.pending + 1)


def fail(state: KeyState, backoff: Backoff, now_ms: int) -> tuple[KeyState, bool]:
    """The state after a reserved attempt failed, and whether a wait started."""
    failures = state.failures + 1
    pending = max(0, state.pending - 1)
    if failures < backoff.free:
        return replace(state, failures=failures, pending=pending, last_failure=now_ms), False
    until = max(state.blocked_until, now_ms + backoff.wait_ms(state.level))
    new = KeyState(failures, state.level + 1, until, now_ms, pending)
    return new, True


def release(state: KeyState) -> KeyState:
    """The state after a reserved attempt succeeded: its slot is free, nothing is forgiven."""
    return replace(state, pending=max(0, state.pending - 1))


# -- keys ---------------------------------------------------------------------------------------
def network_prefix(ip: str | None) -> str | None:
    """The address's network: ``a.b.c.0/24`` for IPv4 (and IPv4-mapped IPv6), the /56 for
    IPv6; None for anything that is not an address (a Unix socket peer)."""
    addr = peer_address(ip)
    if addr is None:
        return None
    bits = 24 if isinstance(addr, ipaddress.IPv4Address) else 56
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


def canonical_address(ip: str | None) -> str | None:
    """The address as a key (an IPv4-mapped IPv6 address as IPv4); None when not an address."""
    addr = peer_address(ip)
    return None if addr is None else str(addr)


def attempt_keys(account: str, ip: str | None, known_device: str | None = None) -> tuple[str, ...]:
    """The keys of one password check for ``account`` (a user ID, or the attempted name when
    it is not one of ours) from ``ip``; ``known_device``: the ``device_id`` presented, when the
    account already has that device."""
    keys: list[str] = []
    if known_device is not None:
        keys += [f"device:{account}|{known_device}", f"devices:{account}"]
    else:
        keys.append(f"account:{account}")
    addr = canonical_address(ip)
    if addr is not None:
        keys.append(f"address:{addr}")
        prefix = network_prefix(addr)
        if prefix is not None:
            keys.append(f"prefix:{prefix}")
    return tuple(keys)


def token_keys(ip: str | None) -> tuple[str, ...]:
    """The keys of one registration-token guess from ``ip``."""
    addr = canonical_address(ip)
    if addr is None:
        return ("regtoken-address:unknown",)
    prefix = network_prefix(addr)
    return (f"regtoken-address:{addr}",) + ((f"regtoken-prefix:{prefix}",) if prefix else ())


def key_kind(key: str) -> str:
    """The kind of a key (``account``, ``device``, ...); ValueError for anything else."""
    kind, sep, _ = key.partition(":")
    if not sep or kind not in KEY_KINDS:
        raise ValueError("not a throttle key")
    return kind


# -- stuffing and spraying ----------------------------------------------------------------------
@dataclass
class DistinctWindow:
    """The distinct accounts (and password fingerprints) that failed from one source within a
    sliding window; at most ``limit`` accounts remembered (enough to decide). Times are passed
    in; no clock is read."""

    window_ms: int
    limit: int = 1000
    accounts: OrderedDict[str, int] = field(default_factory=OrderedDict)
    passwords: OrderedDict[bytes, int] = field(default_factory=OrderedDict)

    def add(self, account: str, password: bytes, now_ms: int) -> tuple[int, int]:
        """Count one failure; the distinct accounts and passwords now in the window."""
        for seen in (self.accounts, self.passwords):
            while seen:
                first = next(iter(seen.values()))
                if first > now_ms - self.window_ms:
                    break
                seen.popitem(last=False)
        for seen, item in ((self.accounts, account), (self.passwords, password)):
            seen.pop(item, None)  # type: ignore[arg-type]
            seen[item] = now_ms  # type: ignore[index]
            while len(seen) > self.limit:
                seen.popitem(last=False)
        return len(self.accounts), len(self.passwords)


def stuffing_kind(accounts: int, passwords: int, threshold: int) -> str | None:
    """``login.spraying`` (few passwords across many accounts), ``login.stuffing`` (many
    accounts, many passwords) once ``accounts`` reaches ``threshold``, else None."""
    if threshold <= 0 or accounts < threshold:
        return None
    return "login.spraying" if passwords * 4 <= accounts else "login.stuffing"


# -- configuration ------------------------------------------------------------------------------
_BACKOFF_KEYS = {"free_failures", "base_wait_s", "max_wait_s", "forget_after_s"}


def _backoff(table: Mapping[str, Any], key: str, where: str, default: Backoff) -> Backoff:
    sub = subtable(table, key, where)
    here = f"{where}.{key}"
    check_keys(sub, _BACKOFF_KEYS, here)
    free = int(get_number(sub, "free_failures", default.free, here, minimum=1, maximum=1000,
                          integer=True))  # fmt: skip
    base = get_number(sub, "base_wait_s", default.base_ms / 1000, here, minimum=1,
                      maximum=DAY_MS / 1000)  # fmt: skip
    cap = get_number(sub, "max_wait_s", default.cap_ms / 1000, here, minimum=1,
                     maximum=7 * DAY_MS / 1000)  # fmt: skip
    forget_s = get_number(sub, "forget_after_s", default.forget_ms / 1000, here, minimum=60,
                          maximum=30 * DAY_MS / 1000)  # fmt: skip
    if cap < base:
        raise ValueError(f"{here}.max_wait_s must be at least base_wait_s")
    return Backoff(free, int(base * 1000), int(cap * 1000), int(forget_s * 1000))


@dataclass(frozen=True)
class LoginConfig:
    """``[guard.login]``. Sub-tables ``account``, ``device``, ``devices``, ``address``,
    ``prefix`` (each ``free_failures``, ``base_wait_s``, ``max_wait_s``, ``forget_after_s``)."""

    account: Backoff = Backoff()
    #: One known device of an account.
    device: Backoff = Backoff()
    #: All the known devices of an account together (bounds the account's daily budget).
    devices: Backoff = Backoff(free=10)
    #: One address across accounts: a flood of random usernames.
    address: Backoff = Backoff(free=20)
    #: One network prefix across accounts and addresses.
    prefix: Backoff = Backoff(free=50)
    #: The most password checks an attacker may get per account per day (the settings are
    #: refused if ``account`` + ``devices`` allow more).
    daily_budget: int = 100
    #: Distinct accounts failing from one address within ``stuffing_window_ms`` that make it
    #: stuffing or spraying (0: detection off).
    stuffing_accounts: int = 10
    #: The same from one network prefix (higher: one address's attack is stopped at its
    #: address before its neighbours are blocked with it).
    stuffing_prefix_accounts: int = 30
    stuffing_window_ms: int = 10 * MINUTE_MS
    stuffing_block_ms: int = HOUR_MS
    #: Keys kept in memory (throttles of existing accounts are never pushed out by others).
    max_keys: int = 100_000
    #: Post a server notice on a login from a new device or a new network prefix.
    new_login_notices: bool = True

    def backoff(self, key: str) -> Backoff:
        """The back-off of a login key (not of registration-token keys)."""
        kind = key_kind(key)
        return {"account": self.account, "device": self.device, "devices": self.devices,
                "address": self.address, "prefix": self.prefix}[kind]  # fmt: skip

    def max_checks_per_account_per_day(self) -> int:
        """The bound on password checks per account per day (see the module's docstring)."""
        return self.account.max_checks(DAY_MS) + self.devices.max_checks(DAY_MS)


def _int(table: Mapping[str, Any], key: str, default: int, where: str, lo: int, hi: int) -> int:
    return int(get_number(table, key, default, where, minimum=lo, maximum=hi, integer=True))


def _ms(table: Mapping[str, Any], key: str, default_ms: int, where: str, lo_s: float,
        hi_s: float) -> int:  # fmt: skip
    """A ``*_s`` key (seconds) as milliseconds."""
    return int(1000 * get_number(table, key, default_ms / 1000, where, minimum=lo_s, maximum=hi_s))


def parse_login_config(table: Mapping[str, Any]) -> LoginConfig:
    """``[guard.login]`` as a :class:`LoginConfig` (ValueError naming the key)."""
    w = "guard.login"
    check_keys(table, {"account", "device", "devices", "address", "prefix", "daily_budget",
                       "stuffing_accounts", "stuffing_prefix_accounts", "stuffing_window_s",
                       "stuffing_block_s", "max_keys", "new_login_notices"}, w)  # fmt: skip
    d = LoginConfig()
    day_s = DAY_MS / 1000
    cfg = LoginConfig(
        account=_backoff(table, "account", w, d.account),
        device=_backoff(table, "device", w, d.device),
        devices=_backoff(table, "devices", w, d.devices),
        address=_backoff(table, "address", w, d.address),
        prefix=_backoff(table, "prefix", w, d.prefix),
        daily_budget=_int(table, "daily_budget", d.daily_budget, w, 1, 100_000),
        stuffing_accounts=_int(table, "stuffing_accounts", d.stuffing_accounts, w, 0, 100_000),
        stuffing_prefix_accounts=_int(
            table, "stuffing_prefix_accounts", d.stuffing_prefix_accounts, w, 0, 100_000
        ),
        stuffing_window_ms=_ms(table, "stuffing_window_s", d.stuffing_window_ms, w, 1, day_s),
        stuffing_block_ms=_ms(table, "stuffing_block_s", d.stuffing_block_ms, w, 1, 7 * day_s),
        max_keys=_int(table, "max_keys", d.max_keys, w, 100, 10_000_000),
        new_login_notices=get_bool(table, "new_login_notices", d.new_login_notices, w),
    )
    for name in ("account", "devices"):
        if getattr(cfg, name).forget_ms < DAY_MS:
            raise ValueError(f"{w}.{name}.forget_after_s must be at least a day (86400)")
    if cfg.max_checks_per_account_per_day() > cfg.daily_budget:
        raise ValueError(
            f"{w}: account and devices allow {cfg.max_checks_per_account_per_day()} password"
            f" checks per account per day, more than daily_budget ({cfg.daily_budget})"
        )
    return cfg


@dataclass(frozen=True)
class RegistrationConfig:
    """``[guard.registration]``.

    Defaults: 30 registrations per address at once, refilled at 30 an hour (a family or an
    office behind one address registers a few accounts; a script registering 900 a minute
    gets 30, then one every two minutes); registration-token guesses: 5 free per address, then
    1 minute doubling to 1 hour; a wave is 50 registrations server-wide within 10 minutes
    (alerted; ``wave_action`` "alert" by default: a launch or an event brings real waves, so
    requiring a token is the operator's choice); confusable usernames are refused against
    admins ("admins": impersonating an admin is the dangerous case, and there are few
    admins, so legitimate names are almost never refused; "all" also protects every user).
    Set ``per_address_burst = 0`` to lift the per-address limit (benchmarks)."""

    per_address_burst: int = 30
    per_address_per_hour: float = 30.0
    token: Backoff = Backoff(free=5)
    wave_count: int = 50
    wave_window_ms: int = 10 * MINUTE_MS
    wave_action: str = "alert"
    #: With ``wave_action = "slow"``: at most one registration this often while the wave lasts.
    wave_interval_ms: int = 10_000
    confusables: str = "admins"


def parse_registration_config(table: Mapping[str, Any]) -> RegistrationConfig:
    """``[guard.registration]`` as a :class:`RegistrationConfig` (ValueError naming the key)."""
    w = "guard.registration"
    check_keys(table, {"per_address_burst", "per_address_per_hour", "token", "wave_count",
                       "wave_window_s", "wave_action", "wave_interval_s", "confusables"},
               w)  # fmt: skip
    d = RegistrationConfig()
    return RegistrationConfig(
        per_address_burst=_int(table, "per_address_burst", d.per_address_burst, w, 0, 1_000_000),
        per_address_per_hour=get_number(
            table, "per_address_per_hour", d.per_address_per_hour, w, maximum=1_000_000
        ),
        token=_backoff(table, "token", w, d.token),
        wave_count=_int(table, "wave_count", d.wave_count, w, 0, 1_000_000),
        wave_window_ms=_ms(table, "wave_window_s", d.wave_window_ms, w, 1, DAY_MS / 1000),
        wave_action=get_str(table, "wave_action", d.wave_action, w, WAVE_ACTIONS),
        wave_interval_ms=_ms(table, "wave_interval_s", d.wave_interval_ms, w, 0, HOUR_MS / 1000),
        confusables=get_str(table, "confusables", d.confusables, w, CONFUSABLE_MODES),
    )
