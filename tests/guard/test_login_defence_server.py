"""The login defence in a running server (bastion.guard.login_defence through POST /login, the
UIA password stage, POST /register and the admin API): unknown users look like real ones,
throttles survive a restart, starts and lifts are recorded, known devices keep their budget,
registration limits, confusable names, new-login notices."""

from __future__ import annotations

import time

import pytest

from tests.guard.attacks.common import (
    REGISTER,
    THROTTLES,
    FakeClock,
    action_records,
    capture_alerts,
    count_password_checks,
    decisions,
    password_login,
    request,
    wait_for,
)
from tests.support.accounts import (
    PASSWORD,
    add_registration_token,
    assert_error,
    call_on_server,
    login,
    make_admin,
    make_user,
    run_on_server,
)
from tests.support.harness import Client, ServerThread

START = 1_900_000_000_000


@pytest.fixture
def clock(server):
    return FakeClock(server, START)


def test_unknown_user_and_wrong_password_answer_alike(client, server, clock):
    client.register("carol")
    answers = {}
    for user in ("carol", "ghost"):
        seq = [password_login(server.base_url, user, "wrong password") for _ in range(6)]
        answers[user] = [(a.status, a.body.get("errcode"), a.body.get("retry_after_ms"))
                         for a in seq]  # fmt: skip
    assert answers["carol"] == answers["ghost"]
    assert answers["carol"][:5] == [(403, "M_FORBIDDEN", None)] * 5
    assert answers["carol"][5] == (429, "M_LIMIT_EXCEEDED", 60_000)
    # A throttled attempt is refused even with the right password (it is not checked).
    r = password_login(server.base_url, "carol", PASSWORD)
    assert r.status == 429
    clock.advance(60_000)
    assert password_login(server.base_url, "carol", PASSWORD).status == 200


def test_throttle_start_recorded_once_not_per_refusal(client, server, clock):
    client.register("dora")
    for _ in range(5):
        password_login(server.base_url, "dora", "wrong password")
    for _ in range(10):
        assert password_login(server.base_url, "dora", "wrong password").status == 429
    starts = [r for r in action_records(server, "guard.throttle")
              if r["target"] == "account:@dora:localhost"]  # fmt: skip
    assert len(starts) == 1
    # Each start is counted once, by scope (bastion_guard_login_throttles_total{scope}).
    counters = server.hs.guard.alerts.counters
    metric = "bastion_guard_login_throttles_total"
    assert counters.value(metric, {"scope": "account"}) == 1
    every = action_records(server, "guard.throttle")
    for scope in ("device", "devices", "address", "prefix"):
        started = [r for r in every if r["details"]["kind"] == scope]
        assert counters.value(metric, {"scope": scope}) == len(started), scope
    blocks = counters.value("bastion_guard_login_blocks_total", {"source": "login.backoff"})
    assert blocks == len(every)
    assert starts[0]["subject"] == "@dora:localhost"
    assert starts[0]["details"]["until"] == START + 60_000
    # Failures while throttled did not extend the wait.
    clock.advance(60_000)
    assert password_login(server.base_url, "dora", "wrong password").status == 403
    assert password_login(server.base_url, "dora", "wrong password").status == 429


def test_known_device_keeps_its_budget(client, server, clock):
    owner = client.register("erin")
    for _ in range(5):
        password_login(server.base_url, "erin", "guess", source="127.0.0.9")
    assert password_login(server.base_url, "erin", PASSWORD).status == 429
    # Logging in again on the device the account has works, from any address.
    r = password_login(server.base_url, "erin", PASSWORD, device_id=owner.device_id,
                       source="127.0.0.9")  # fmt: skip
    assert r.status == 200, r.body
    # A made-up device ID is not a known device: it gets the account's (exhausted) budget.
    r = password_login(server.base_url, "erin", PASSWORD, device_id="MADEUP")
    assert r.status == 429


def test_throttles_survive_a_restart(tmp_path):
    data = tmp_path / "data"
    srv = ServerThread(data).start()
    try:
        Client(srv.base_url).register("fred")
        for _ in range(5):
            password_login(srv.base_url, "fred", "wrong password")
        for _ in range(5):
            password_login(srv.base_url, "nobody-at-all", "wrong password")
        assert password_login(srv.base_url, "fred", PASSWORD).status == 429
    finally:
        srv.stop()
    srv = ServerThread(data).start()
    try:
        r = password_login(srv.base_url, "fred", PASSWORD)
        assert r.status == 429 and r.body["retry_after_ms"] > 50_000
        assert password_login(srv.base_url, "nobody-at-all", PASSWORD).status == 429
    finally:
        srv.stop()


def test_admin_lists_and_lifts_throttles(client, server, clock):
    admin = client.register("root")
    make_admin(server, admin.user_id)
    user = client.register("gail")
    for _ in range(5):
        password_login(server.base_url, "gail", "wrong password")
    r = user.request("GET", THROTTLES)
    assert_error(r, 403, "M_FORBIDDEN")
    r = admin.request("GET", THROTTLES)
    assert r.status == 200
    assert {"kind": "account", "key": "account:@gail:localhost", "failures": 5, "level": 1,
            "until": START + 60_000} in r.body["throttles"]  # fmt: skip
    key = "account%3A%40gail%3Alocalhost"
    r = admin.request("DELETE", f"{THROTTLES}/{key}", {"reason": "the owner called"})
    assert r.status == 200, r.body
    assert password_login(server.base_url, "gail", PASSWORD).status == 200
    assert_error(admin.request("DELETE", f"{THROTTLES}/{key}"), 404, "M_NOT_FOUND")
    assert_error(admin.request("DELETE", f"{THROTTLES}/bogus"), 400, "M_INVALID_PARAM")
    lifts = action_records(server, "guard.throttle_lift")
    assert [(x["target"], x["actor"], x["reason"]) for x in lifts] == [
        ("account:@gail:localhost", admin.user_id, "the owner called")
    ]
    routes = [x["details"]["route"] for x in action_records(server, "admin.request")]
    assert routes.count("GET /_bastion/admin/v1/guard/throttles") == 1
    # (like the other admin endpoints, a refused call — 404, 400 — changes nothing and is not
    # recorded)
    assert routes.count("DELETE /_bastion/admin/v1/guard/throttles/{key*}") == 1


def test_uia_password_stage_shares_the_account_budget(client, server, clock):
    a = client.register("hank")
    path = f"{V3_DEVICES}/{a.device_id}"
    session = a.request("DELETE", path).body["session"]
    statuses = []
    for _ in range(7):
        auth = {"type": "m.login.password", "password": "bad password", "session": session,
                "identifier": {"type": "m.id.user", "user": "hank"}}  # fmt: skip
        statuses.append(a.request("DELETE", path, {"auth": auth}).status)
    assert statuses == [401] * 5 + [429] * 2


V3_DEVICES = "/_matrix/client/v3/devices"


def test_registration_limit_per_address(tmp_path):
    srv = ServerThread(tmp_path / "data", guard={"registration": {
        "per_address_burst": 3, "per_address_per_hour": 60}}).start()  # fmt: skip
    try:
        ok = [_register(srv.base_url, f"r{i}", source="127.0.0.7") for i in range(5)]
        assert [a.status for a in ok] == [200, 200, 200, 429, 429]
        assert ok[3].body["errcode"] == "M_LIMIT_EXCEEDED" and ok[3].body["retry_after_ms"] > 0
        # Another address is not affected.
        assert _register(srv.base_url, "other", source="127.0.0.8").status == 200
    finally:
        srv.stop()


def test_registration_token_guesses_are_limited(tmp_path):
    srv = ServerThread(tmp_path / "data", registration="token").start()
    try:
        add_registration_token(srv, "the-real-token")
        answers = [_register(srv.base_url, "tok", token=f"guess{i}") for i in range(7)]
        assert [a.status for a in answers] == [401] * 5 + [429] * 2
        # Throttled: even the right token is not checked now.
        assert _register(srv.base_url, "tok", token="the-real-token").status == 429
        # From another network it works.
        r = _register(srv.base_url, "tok", token="the-real-token", source="127.0.1.1")
        assert r.status == 200, r.body
    finally:
        srv.stop()


def test_confusable_admin_names_are_refused(client, server):
    admin = client.register("admin")
    make_admin(server, admin.user_id)
    for name in ("adm1n", "a.dmin", "adrnin"):
        r = _register(server.base_url, name)
        assert_error(r, 400, "M_INVALID_USERNAME")
        r = client.request("GET", f"{REGISTER}/available", query={"username": name}, token=None)
        assert_error(r, 400, "M_INVALID_USERNAME")
    assert _register(server.base_url, "alice").status == 200
    # Not against ordinary users by default.
    assert _register(server.base_url, "a1ice").status == 200


def test_confusables_against_every_user(tmp_path):
    srv = ServerThread(tmp_path / "data", guard={"registration": {"confusables": "all"}}).start()
    try:
        assert _register(srv.base_url, "wendy").status == 200
        assert_error(_register(srv.base_url, "vvendy"), 400, "M_INVALID_USERNAME")
        assert _register(srv.base_url, "wendell").status == 200
        assert_error(_register(srv.base_url, "vvendell"), 400, "M_INVALID_USERNAME")
    finally:
        srv.stop()


def test_registration_wave_alerts_and_requires_a_token(tmp_path):
    srv = ServerThread(tmp_path / "data", guard={"registration": {
        "wave_count": 5, "wave_window_s": 600, "wave_action": "token"}}).start()  # fmt: skip
    try:
        alerts = capture_alerts(srv)
        for i in range(5):
            assert _register(srv.base_url, f"w{i}", source=f"127.0.3.{i + 1}").status == 200
        wait_for(lambda: alerts)
        assert [(a[0], a[2]["source"]) for a in alerts] == [("guard.warn", "registration.wave")]
        r = request(srv.base_url, "POST", REGISTER, {}, source="127.0.3.9")
        assert r.status == 401
        assert r.body["flows"] == [{"stages": ["m.login.registration_token", "m.login.dummy"]}]
        assert len(decisions(srv, "registration.wave")) == 1
    finally:
        srv.stop()


class FakeNotices:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, str, dict]] = []
        self.types: list[str | None] = []
        self.fail = fail

    async def send_notice(self, user_id, body, *, notice_type=None, extra=None):
        if self.fail:
            raise RuntimeError("the notices room is broken")
        self.sent.append((user_id, body, dict(extra or {})))
        self.types.append(notice_type)
        return f"$notice{len(self.sent)}"


def _wait_notices(server) -> None:
    run_on_server(server, server.hs.guard.login.wait_idle())


def test_new_login_notices(client, server):
    notices = FakeNotices()
    server.hs.server_notices = notices
    user = client.register("ivy")
    # The registration's device and network are known: logging in again on it is not new.
    login(client, "ivy", device_id=user.device_id)
    _wait_notices(server)
    assert notices.sent == []
    # A new device.
    login(client, "ivy", device_id="PHONE", initial_device_display_name="Ivy's phone")
    _wait_notices(server)
    [(uid, body, extra)] = notices.sent
    assert uid == "@ivy:localhost"
    assert "PHONE" in body and "Ivy's phone" in body and "127.0.0.0/24" in body
    info = extra["org.bastion.login"]
    assert info["new_device"] and not info["new_prefix"] and info["prefix"] == "127.0.0.0/24"
    assert notices.types == ["org.bastion.login"]
    # A new network, on a known device.
    r = password_login(server.base_url, "ivy", PASSWORD, device_id="PHONE", source="127.0.9.1")
    assert r.status == 200
    _wait_notices(server)
    assert len(notices.sent) == 2
    info = notices.sent[1][2]["org.bastion.login"]
    assert info["new_prefix"] and not info["new_device"] and info["prefix"] == "127.0.9.0/24"
    recs = action_records(server, "login.notice")
    assert [(x["subject"], x["details"]["event_id"]) for x in recs] == [
        ("@ivy:localhost", "$notice1"), ("@ivy:localhost", "$notice2")
    ]  # fmt: skip


def test_a_failing_notice_never_fails_the_login(client, server):
    server.hs.server_notices = FakeNotices(fail=True)
    client.register("jill")
    t0 = time.monotonic()
    c = login(client, "jill", device_id="NEWDEV")
    assert time.monotonic() - t0 < 5
    _wait_notices(server)
    assert c.request("GET", "/_matrix/client/v3/account/whoami").status == 200
    assert action_records(server, "login.notice") == []


def test_accounts_made_without_a_login_learn_their_first_silently(client, server):
    notices = FakeNotices()
    server.hs.server_notices = notices
    u = make_user(server, "kim")
    run_on_server(server, _set_password(server, u.user_id))
    login(client, "kim")
    _wait_notices(server)
    assert notices.sent == []


async def _set_password(server, user_id):
    hs = server.hs
    pw_hash = hs.passwords.hash(PASSWORD)
    await hs.store.transaction(lambda conn: hs.store.set_password_hash_in(conn, user_id, pw_hash))


def _register(base_url: str, username: str, *, token: str | None = None,
              source: str | None = None):  # fmt: skip
    first = request(base_url, "POST", REGISTER, {}, source=source)
    if first.status != 401:
        return first
    stages = first.body["flows"][0]["stages"]
    body = {"username": username, "password": PASSWORD}
    session = first.body["session"]
    if "m.login.registration_token" in stages:
        r = request(base_url, "POST", REGISTER, {**body, "auth": {
            "type": "m.login.registration_token", "token": token or "", "session": session}},
            source=source)  # fmt: skip
        if r.status != 401 or r.body.get("errcode"):
            return r
    return request(base_url, "POST", REGISTER,
                   {**body, "auth": {"type": "m.login.dummy", "session": session}},
                   source=source)  # fmt: skip


def test_random_username_flood_is_bounded_and_keeps_real_throttles(tmp_path):
    srv = ServerThread(tmp_path / "data", guard={"login": {"max_keys": 100}}).start()
    try:
        clock = FakeClock(srv, START)
        Client(srv.base_url).register("lena")
        for _ in range(5):
            password_login(srv.base_url, "lena", "wrong password")
        defence = srv.hs.guard.login

        def flood():
            # 2,000 random names from 2,000 addresses (a botnet): each one a failed check.
            for i in range(2000):
                ip = f"10.{i // 250 % 250}.{i % 250}.1"
                attempt = defence.begin(f"@rand{i}:localhost", ip)
                defence.fail(attempt, "pw")

        call_on_server(srv, flood)
        real, other = defence.key_counts()
        assert other <= 100 and real == 1
        r = password_login(srv.base_url, "lena", PASSWORD, source="127.0.6.1")
        assert r.status == 429 and r.body["retry_after_ms"] == 60_000
        clock.advance(60_000)
        assert password_login(srv.base_url, "lena", PASSWORD, source="127.0.6.1").status == 200
    finally:
        srv.stop()


def test_wave_slows_registrations(tmp_path):
    srv = ServerThread(tmp_path / "data", guard={"registration": {
        "wave_count": 3, "wave_action": "slow", "wave_interval_s": 30}}).start()  # fmt: skip
    try:
        clock = FakeClock(srv, START)
        for i in range(3):
            assert _register(srv.base_url, f"s{i}", source=f"127.0.3.{i + 1}").status == 200
            clock.advance(1000)
        r = _register(srv.base_url, "s3", source="127.0.3.9")
        assert r.status == 429 and r.body["retry_after_ms"] == 29_000
        clock.advance(29_000)
        assert _register(srv.base_url, "s3", source="127.0.3.9").status == 200
    finally:
        srv.stop()


def test_wrong_password_and_unknown_user_cost_one_check_each(client, server):
    client.register("mona")
    checks = count_password_checks(server)
    a = password_login(server.base_url, "mona", "wrong password")
    after_wrong = checks[0]
    b = password_login(server.base_url, "nomona", "wrong password")
    assert (a.status, a.body) == (b.status, b.body)
    assert after_wrong == 1 and checks[0] == 2


def test_new_login_notice_reaches_the_notices_room(client, server):
    client.register("nina")
    c = login(client, "nina", device_id="TABLET", initial_device_display_name="Tablet")
    _wait_notices(server)
    [rec] = action_records(server, "login.notice")
    assert rec["subject"] == "@nina:localhost" and rec["details"]["device_id"] == "TABLET"
    # The user is invited to their server-notices room (C-S API "Server Notices").
    r = c.request("GET", "/_matrix/client/v3/sync", query={"timeout": "0"})
    invites = r.body.get("rooms", {}).get("invite", {})
    assert len(invites) == 1
