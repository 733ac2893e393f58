"""Attack simulation: password guessing against one account from 20 addresses (127.0.0.2 to
127.0.0.21, each request from its own bound source address), for one simulated day on the
login defence's fake clock; the attacker retries exactly when ``retry_after_ms`` says.

What it shows (issue 9, "Login and account defence"): the attacker's password checks against the
account in a day stay within the budget (printed, with the extrapolation), whatever the number of
addresses; the owner keeps syncing with their existing session and logs in again on their known
device; the throttle start is recorded once."""

from __future__ import annotations

from bastion.guard.login_policy import LoginConfig
from tests.guard.attacks.common import (
    DAY_MS,
    FakeClock,
    action_records,
    password_login,
    request,
)
from tests.support.accounts import PASSWORD, login

ADDRESSES = [f"127.0.0.{i}" for i in range(2, 22)]
START = 1_900_000_000_000


def test_guessing_from_20_addresses(client, server):
    owner = client.register("victim")  # the owner's laptop: a session that stays
    phone = login(client, "victim", device_id="PHONE")  # a device the account has
    clock = FakeClock(server, START)
    checks = refused = i = 0
    used: set[str] = set()
    while clock.now < START + DAY_MS:
        source = ADDRESSES[i % len(ADDRESSES)]
        i += 1
        r = password_login(server.base_url, "victim", f"guess {i}", source=source)
        if r.status == 403:
            checks += 1
            used.add(source)
        else:
            assert r.status == 429 and r.body["errcode"] == "M_LIMIT_EXCEEDED", r.body
            refused += 1
            clock.advance(r.body["retry_after_ms"])
    elapsed = clock.now - START
    per_day = checks * DAY_MS / elapsed
    old = len(ADDRESSES) * 5 * (DAY_MS // 300_000)  # 5 per (user, IP) per 5 minutes, before
    print(
        f"\npassword guessing from {len(ADDRESSES)} addresses ({len(used)} got a check in): "
        f"{checks} checks in "
        f"{elapsed / 3_600_000:.1f} simulated hours ({refused} requests refused unchecked); "
        f"extrapolated {per_day:.0f} guesses per account per day "
        f"(the per-(user, IP) limiter allowed {old} a day from 20 addresses)"
    )
    assert len(used) > 1
    assert checks <= LoginConfig().account.max_checks() <= 100
    assert per_day <= 100
    # The throttle started once (recorded), not once per refused attempt.
    starts = [x for x in action_records(server, "guard.throttle")
              if x["target"] == "account:@victim:localhost"]  # fmt: skip
    assert len(starts) == 1
    # The owner: the existing session keeps syncing ...
    r = owner.request("GET", "/_matrix/client/v3/sync", query={"timeout": "0"})
    assert r.status == 200, r.body
    # ... and the known device logs in again while the account is throttled for others.
    for _ in range(3):  # (the day ended as a wait did: the attacker's next guess starts one)
        if password_login(server.base_url, "victim", "one more", source=ADDRESSES[0]).status == 429:
            break
    assert password_login(server.base_url, "victim", PASSWORD).status == 429
    r = password_login(server.base_url, "victim", PASSWORD, device_id=phone.device_id)
    assert r.status == 200, r.body
    r = request(server.base_url, "GET", "/_matrix/client/v3/sync?timeout=0",
                token=r.body["access_token"])  # fmt: skip
    assert r.status == 200
