"""The login defence's arithmetic (bastion.guard.login_policy): back-off, reservation, the daily
budget per account, network prefixes, stuffing and spraying, the [guard.login] and
[guard.registration] tables."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bastion.guard.config import parse_guard_config
from bastion.guard.login_policy import (
    DAY_MS,
    FRESH,
    HOUR_MS,
    MINUTE_MS,
    Backoff,
    DistinctWindow,
    KeyState,
    LoginConfig,
    admit,
    attempt_keys,
    fail,
    key_kind,
    network_prefix,
    parse_login_config,
    parse_registration_config,
    release,
    reserve,
    stuffing_kind,
    token_keys,
)

CFG = LoginConfig()
ACCOUNT = "@victim:example.org"


class Sim:
    """The accounting exactly as the shell drives it: admit on every key, reserve on every key,
    then fail or release on every key."""

    def __init__(self, cfg: LoginConfig = CFG) -> None:
        self.cfg = cfg
        self.states: dict[str, KeyState] = {}
        self.checks: list[int] = []

    def begin(self, keys: tuple[str, ...], now: int) -> int:
        wait = max(admit(self.states.get(k, FRESH), self.cfg.backoff(k), now) for k in keys)
        if wait:
            return wait
        for k in keys:
            self.states[k] = reserve(self.states.get(k, FRESH), self.cfg.backoff(k), now)
        self.checks.append(now)
        return 0

    def fail(self, keys: tuple[str, ...], now: int) -> None:
        for k in keys:
            self.states[k], _ = fail(self.states[k], self.cfg.backoff(k), now)

    def succeed(self, keys: tuple[str, ...]) -> None:
        for k in keys:
            self.states[k] = release(self.states[k])

    def max_in_a_day(self) -> int:
        best, lo = 0, 0
        for hi, t in enumerate(self.checks):
            while self.checks[lo] <= t - DAY_MS:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


def test_backoff_waits_double_and_are_capped():
    b = Backoff(free=5, base_ms=MINUTE_MS, cap_ms=HOUR_MS)
    assert [b.wait_ms(i) // MINUTE_MS for i in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert b.wait_ms(10_000) == HOUR_MS


def test_the_documented_daily_budget():
    # 5 free + 6 waits (1+2+4+8+16+32 = 63 min) + 22 hourly ones (63 + 22*60 = 1383 < 1440).
    assert CFG.account.max_checks() == 5 + 6 + 22 == 33
    assert CFG.devices.max_checks() == 10 + 6 + 22 == 38
    assert CFG.max_checks_per_account_per_day() == 71 <= CFG.daily_budget == 100


def test_five_failures_then_one_minute_doubling():
    b = CFG.account
    s, now = FRESH, 1_000_000
    for i in range(5):
        assert admit(s, b, now) == 0
        s, started = fail(reserve(s, b, now), b, now)
        assert started == (i == 4)
    assert admit(s, b, now) == MINUTE_MS
    # Failures while throttled are refused and change nothing: the wait is not extended.
    assert admit(s, b, now + 30_000) == 30_000
    now += MINUTE_MS
    assert admit(s, b, now) == 0
    s, started = fail(reserve(s, b, now), b, now)
    assert started and admit(s, b, now) == 2 * MINUTE_MS


def test_reservation_holds_under_concurrency():
    # 200 attempts at once against one account: only the free ones are checked.
    b = CFG.account
    s = FRESH
    admitted = 0
    for _ in range(200):
        if admit(s, b, 0) == 0:
            s = reserve(s, b, 0)
            admitted += 1
    assert admitted == b.free
    # A success releases its slot and forgives nothing.
    s = release(s)
    assert s.pending == b.free - 1 and s.failures == 0
    assert admit(s, b, 0) == 0


def test_one_attempt_between_waits_even_when_concurrent():
    b = CFG.account
    s = FRESH
    for _ in range(5):
        s, _ = fail(reserve(s, b, 0), b, 0)
    now = MINUTE_MS
    assert admit(s, b, now) == 0
    s = reserve(s, b, now)
    assert admit(s, b, now) > 0  # the one check of this interval is in flight


def test_forgotten_after_a_quiet_day():
    b = CFG.account
    s = FRESH
    for _ in range(7):
        s, _ = fail(reserve(s, b, s.blocked_until), b, s.blocked_until)
    later = s.last_failure + DAY_MS
    assert admit(s, b, later) == 0
    assert reserve(s, b, later).failures == 0


def test_keys_of_an_attempt():
    assert attempt_keys(ACCOUNT, "203.0.113.7") == (
        f"account:{ACCOUNT}",
        "address:203.0.113.7",
        "prefix:203.0.113.0/24",
    )
    assert attempt_keys(ACCOUNT, "::ffff:203.0.113.7", "PHONE") == (
        f"device:{ACCOUNT}|PHONE", f"devices:{ACCOUNT}", "address:203.0.113.7",
        "prefix:203.0.113.0/24",
    )  # fmt: skip
    assert attempt_keys(ACCOUNT, None) == (f"account:{ACCOUNT}",)
    assert network_prefix("2001:db8:aa:bbcc::1") == "2001:db8:aa:bb00::/56"
    assert network_prefix("fe80::1%eth0") == "fe80::/56"
    assert network_prefix("not an address") is None
    assert token_keys("198.51.100.9") == (
        "regtoken-address:198.51.100.9",
        "regtoken-prefix:198.51.100.0/24",
    )
    assert key_kind("prefix:10.0.0.0/24") == "prefix"
    for bad in ("nokind", "weird:x"):
        with pytest.raises(ValueError):
            key_kind(bad)


def test_guessing_from_many_addresses_meets_the_budget():
    """An attacker with 1,000 addresses (in 1,000 prefixes) retrying as soon as allowed, for
    three days, presenting in turn no device and three device IDs the account has (device IDs
    are visible to anyone sharing an encrypted room with the owner)."""
    sim = Sim()
    now, ip = 0, 0
    end = 3 * DAY_MS
    while now < end:
        ip += 1
        addr = f"10.{ip % 250}.{(ip // 250) % 250}.1"
        known = (None, "PHONE", "LAPTOP", "TABLET")[ip % 4]
        keys = attempt_keys(ACCOUNT, addr, known)
        if sim.begin(keys, now) == 0:
            sim.fail(keys, now)
        now += 5_000  # every 5 s
    assert sim.max_in_a_day() <= CFG.max_checks_per_account_per_day() <= 100
    assert sim.max_in_a_day() >= 60  # (the attacker did get close: the bound is not slack)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["start", "finish", "succeed"]),
        st.integers(0, 40),  # address
        st.sampled_from([None, "PHONE", "LAPTOP"]),  # presented known device
        st.sampled_from([0, 1, 1000, MINUTE_MS, 5 * MINUTE_MS, HOUR_MS, 6 * HOUR_MS, DAY_MS]),
    ),
    max_size=400,
)


@settings(max_examples=150, deadline=None)
@given(_OPS)
@example([("start", i % 40, None, 0) for i in range(200)] + [("finish", 0, None, 0)] * 200)
def test_no_sequence_of_attempts_gets_more_than_the_daily_budget(ops):
    """Whatever the order, concurrency and addresses, the failed checks against one account in
    any 24 hours stay within the budget (successes are the owner's and release their slot)."""
    sim = Sim()
    now = 0
    in_flight: list[tuple[str, ...]] = []
    failed: list[int] = []
    for op, addr, device, dt in ops:
        now += dt
        if op == "start":
            keys = attempt_keys(ACCOUNT, f"10.{addr}.0.1", device)
            if sim.begin(keys, now) == 0:
                in_flight.append(keys)
        elif in_flight:
            keys = in_flight.pop(0)
            if op == "finish":
                sim.fail(keys, now)
                failed.append(now)
            else:
                sim.succeed(keys)
    sim.checks = failed + [now] * len(in_flight)  # (in-flight ones will be checks too)
    sim.checks.sort()
    assert sim.max_in_a_day() <= CFG.max_checks_per_account_per_day()


def test_distinct_window_and_kind():
    w = DistinctWindow(window_ms=10 * MINUTE_MS)
    for i in range(9):
        assert w.add(f"@u{i}:x", b"same", i) == (i + 1, 1)
    accounts, passwords = w.add("@u9:x", b"same", 9)
    assert stuffing_kind(accounts, passwords, 10) == "login.spraying"
    assert stuffing_kind(10, 10, 10) == "login.stuffing"
    assert stuffing_kind(9, 9, 10) is None
    assert stuffing_kind(100, 1, 0) is None  # detection off
    # Old failures leave the window.
    assert w.add("@late:x", b"other", 10 * MINUTE_MS + 9) == (1, 1)


def test_login_table_defaults_and_errors():
    assert parse_login_config({}) == CFG
    cfg = parse_login_config({"account": {"free_failures": 3, "base_wait_s": 30}})
    assert cfg.account == Backoff(3, 30_000, HOUR_MS, DAY_MS)
    for table, key in (
        ({"nope": 1}, "nope"),
        ({"account": {"free_failures": 0}}, "guard.login.account.free_failures"),
        ({"account": {"base_wait_s": 100, "max_wait_s": 10}}, "max_wait_s"),
        ({"account": {"forget_after_s": 3600}}, "forget_after_s"),
        ({"account": {"free_failures": 200}}, "daily_budget"),
        ({"stuffing_accounts": -1}, "stuffing_accounts"),
        ({"new_login_notices": "yes"}, "new_login_notices"),
    ):
        with pytest.raises(ValueError, match=key):
            parse_login_config(table)
    # A bigger budget may be chosen explicitly.
    assert parse_login_config({"account": {"free_failures": 60}, "daily_budget": 200})


def test_registration_table():
    reg = parse_registration_config({})
    assert (reg.per_address_burst, reg.wave_count, reg.wave_action, reg.confusables) == (
        30,
        50,
        "alert",
        "admins",
    )
    reg = parse_registration_config({"wave_action": "token", "confusables": "all",
                                     "per_address_burst": 0})  # fmt: skip
    assert reg.wave_action == "token" and reg.per_address_burst == 0
    for table, key in (({"wave_action": "close"}, "wave_action"),
                       ({"confusables": "some"}, "confusables"),
                       ({"token": {"x": 1}}, "guard.registration.token")):  # fmt: skip
        with pytest.raises(ValueError, match=key):
            parse_registration_config(table)
    # Through the [guard] table.
    assert parse_guard_config({"login": {"prefix": {"free_failures": 7}}}).login.prefix.free == 7
