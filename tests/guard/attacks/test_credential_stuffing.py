"""Attack simulation: credential stuffing from one address across 200 accounts (a leaked list of
user/password pairs: a few real accounts, mostly names that do not exist here), and password
spraying (one common password across many accounts from the addresses of one network).

What it shows: after ``stuffing_accounts`` distinct accounts fail from the address (or
``stuffing_prefix_accounts`` from the prefix), that source gets 429 ``M_LIMIT_EXCEEDED`` with
``retry_after_ms`` and its passwords are no longer checked; an alert is raised and the block is
recorded; users elsewhere log in as usual."""

from __future__ import annotations

from bastion.guard.login_policy import LoginConfig
from tests.guard.attacks.common import (
    FakeClock,
    capture_alerts,
    count_password_checks,
    decisions,
    password_login,
    wait_for,
)
from tests.support.accounts import PASSWORD, call_on_server

CFG = LoginConfig()


def test_stuffing_from_one_address_across_200_accounts(client, server):
    for i in range(10):
        client.register(f"member{i}")
    FakeClock(server, 1_900_000_000_000)
    alerts = capture_alerts(server)
    checks = count_password_checks(server)
    leaked = [(f"member{i}", f"leaked-{i}") for i in range(10)]
    leaked += [(f"someone{i}", f"hunter{i}") for i in range(190)]
    answers = [password_login(server.base_url, u, p, source="127.0.0.99") for u, p in leaked]
    statuses = [a.status for a in answers]
    assert statuses[: CFG.stuffing_accounts] == [403] * CFG.stuffing_accounts
    assert set(statuses[CFG.stuffing_accounts :]) == {429}
    refused = answers[-1].body
    assert refused["errcode"] == "M_LIMIT_EXCEEDED"
    assert refused["retry_after_ms"] > 0.9 * CFG.stuffing_block_ms
    assert checks[0] == CFG.stuffing_accounts
    print(f"\ncredential stuffing: {checks[0]} of {len(leaked)} pairs checked, then 429")
    # One guard decision (recorded in the ledger and in the review queue), one alert.
    [block] = decisions(server, "login.stuffing")
    assert block["origin"] == "127.0.0.99" and block["details"]["outcome"] == "block"
    wait_for(lambda: alerts)
    assert [(a[0], a[2]["source"], a[2]["origin"]) for a in alerts] == [
        ("guard.block", "login.stuffing", "127.0.0.99")
    ]
    # The neighbours and the members are not locked out.
    assert password_login(server.base_url, "member3", PASSWORD, source="127.0.0.98").status == 200
    assert password_login(server.base_url, "member4", PASSWORD, source="127.0.8.1").status == 200


def test_password_spraying_from_one_network(client, server):
    for i in range(5):
        client.register(f"staff{i}")
    FakeClock(server, 1_900_000_000_000)
    alerts = capture_alerts(server)
    checks = count_password_checks(server)
    # 8 addresses of one /24 take turns, so no address sees 10 accounts: the prefix does.
    sources = [f"127.0.4.{i}" for i in range(1, 9)]
    names = [f"staff{i}" for i in range(5)] + [f"guess{i}" for i in range(45)]
    answers = [
        password_login(server.base_url, name, "Summer2026!", source=sources[i % len(sources)])
        for i, name in enumerate(names)
    ]
    statuses = [a.status for a in answers]
    n = CFG.stuffing_prefix_accounts
    assert statuses[:n] == [403] * n and set(statuses[n:]) == {429}
    assert checks[0] == n
    [block] = decisions(server, "login.spraying")
    assert block["origin"] == "127.0.4.0/24"
    row = call_on_server(
        server, server.hs.store.get_guard_decision, block["details"]["decision_id"]
    )
    assert row["details"]["passwords"] == 1 and row["details"]["accounts"] == n
    wait_for(lambda: alerts)
    assert [(a[0], a[2]["source"]) for a in alerts] == [("guard.block", "login.spraying")]
    # Any address of that network is refused; another network is not.
    r = password_login(server.base_url, "staff1", PASSWORD, source="127.0.4.200")
    assert r.status == 429 and r.body["retry_after_ms"] > 0
    assert password_login(server.base_url, "staff1", PASSWORD, source="127.0.5.1").status == 200
