"""The guard's alerts (guard/alerts.py): ``[guard.alerts]`` parsing (junk included), the counters,
and on a real server: alerts reach the automatic admin room (admins invited) and a configured
one, and a webhook on 127.0.0.1 with a valid HMAC; repeated alerts are coalesced; a dead or
hanging webhook slows nothing and its secret never reaches the logs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bastion.config import Config, ConfigError, load_config
from bastion.guard.alerts import (
    MAX_SERIES_PER_METRIC,
    AlertsConfig,
    Counters,
    parse_alerts_config,
    webhook_signature,
)
from tests.support.accounts import call_on_server, make_user, run_on_server
from tests.support.harness import ServerThread
from tests.support.rooms import V3, create_room, join, sync

SECRET = "s3cret-webhook-key-0123456789"


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
def test_defaults():
    c = parse_alerts_config({})
    assert c == AlertsConfig()
    assert c.admin_room is None and c.webhook_url is None and c.webhook_secret is None
    assert c.server_notices_localpart == "notices"
    assert c.metrics_allowed("127.0.0.1") and c.metrics_allowed("127.8.9.10")
    assert c.metrics_allowed("::1") and c.metrics_allowed("::ffff:127.0.0.1")
    assert not c.metrics_allowed("10.0.0.1") and not c.metrics_allowed("::2")
    assert (
        not c.metrics_allowed(None)
        and not c.metrics_allowed("")
        and not c.metrics_allowed("not an address")
    )


def test_a_full_table():
    c = parse_alerts_config({
        "admin_room": "!abc:example.org", "webhook_url": "https://hooks.example.org:8443/x?y=1",
        "webhook_secret": SECRET, "webhook_timeout_seconds": 2.5, "webhook_max_attempts": 3,
        "queue_size": 10, "coalesce_seconds": 0, "metrics_allow_ips": ["10.0.0.0/8", "::1"],
        "server_notices_localpart": "server-notices",
    })  # fmt: skip
    assert c.admin_room == "!abc:example.org"
    assert c.webhook_url == "https://hooks.example.org:8443/x?y=1"
    assert c.webhook_secret == SECRET and SECRET not in repr(c)
    assert (c.webhook_timeout_seconds, c.webhook_max_attempts, c.queue_size) == (2.5, 3, 10)
    assert c.coalesce_seconds == 0
    assert c.server_notices_localpart == "server-notices"
    assert c.metrics_allowed("10.1.2.3") and c.metrics_allowed("::1")
    assert not c.metrics_allowed("127.0.0.1")


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"nope": 1}, "nope"),
        ({"admin_room": 5}, "admin_room"),
        ({"admin_room": "#alias:example.org"}, "admin_room"),
        ({"admin_room": "!nocolon"}, "admin_room"),
        ({"admin_room": "!a:bad domain"}, "admin_room"),
        ({"admin_room": "!a b:example.org"}, "admin_room"),
        ({"webhook_url": "ftp://example.org/x"}, "webhook_url"),
        ({"webhook_url": "https:///nohost"}, "webhook_url"),
        ({"webhook_url": "http://exa mple.org/"}, "webhook_url"),
        ({"webhook_url": "http://example.org:99999/"}, "webhook_url"),
        ({"webhook_url": "http://example.org/\n"}, "webhook_url"),
        ({"webhook_url": ["http://example.org"]}, "webhook_url"),
        ({"webhook_secret": SECRET}, "webhook_secret"),
        ({"webhook_url": "https://example.org", "webhook_secret": "short"}, "webhook_secret"),
        ({"webhook_timeout_seconds": 0}, "webhook_timeout_seconds"),
        ({"webhook_timeout_seconds": "5"}, "webhook_timeout_seconds"),
        ({"webhook_max_attempts": 0}, "webhook_max_attempts"),
        ({"webhook_max_attempts": 2.5}, "webhook_max_attempts"),
        ({"webhook_max_attempts": True}, "webhook_max_attempts"),
        ({"queue_size": 10**9}, "queue_size"),
        ({"coalesce_seconds": -1}, "coalesce_seconds"),
        ({"coalesce_seconds": float("nan")}, "coalesce_seconds"),
        ({"metrics_allow_ips": "127.0.0.1"}, "metrics_allow_ips"),
        ({"metrics_allow_ips": ["127.0.0.1/33"]}, "metrics_allow_ips"),
        ({"metrics_allow_ips": ["localhost"]}, "metrics_allow_ips"),
        ({"metrics_allow_ips": [1]}, "metrics_allow_ips"),
        ({"server_notices_localpart": "Notices"}, "server_notices_localpart"),
        ({"server_notices_localpart": ""}, "server_notices_localpart"),
        ({"server_notices_localpart": "a:b"}, "server_notices_localpart"),
        # New-login notices are [guard.login]'s (guard/login_policy.py), not an alerts key.
        ({"new_login_notices": False}, "new_login_notices"),
    ],
)
def test_junk_is_refused_naming_the_key(table, key):
    with pytest.raises(ValueError, match=key) as e:
        parse_alerts_config(table)
    assert "guard.alerts" in str(e.value)
    assert SECRET not in str(e.value)


def test_the_config_file_reaches_the_guard(tmp_path):
    c = Config(server_name="localhost", data_dir=tmp_path,
               guard={"alerts": {"coalesce_seconds": 5}})  # fmt: skip
    assert c.guard_config.alerts.coalesce_seconds == 5
    with_secret = Config(server_name="localhost", data_dir=tmp_path, guard={"alerts": {
        "webhook_url": "https://example.org/hook", "webhook_secret": SECRET}})  # fmt: skip
    assert SECRET not in repr(with_secret) and SECRET not in repr(with_secret.guard_config)
    bad = Config(server_name="localhost", data_dir=tmp_path,
                 guard={"alerts": {"coalesce_seconds": "x"}})  # fmt: skip
    with pytest.raises(ConfigError, match="guard.alerts.coalesce_seconds"):
        bad.validate()


def test_a_toml_file(tmp_path):
    path = tmp_path / "bastion.toml"
    path.write_text(
        'server_name = "localhost"\n'
        "[guard.alerts]\n"
        'webhook_url = "https://hooks.example.org/bastion"\n'
        f'webhook_secret = "{SECRET}"\n'
        'metrics_allow_ips = ["127.0.0.1", "192.168.0.0/16"]\n'
        "coalesce_seconds = 30\n",
        encoding="utf-8",
    )
    c = load_config(path).validate().guard_config.alerts
    assert c.webhook_secret == SECRET and c.coalesce_seconds == 30
    assert c.metrics_allowed("192.168.4.5") and not c.metrics_allowed("127.0.0.2")


# ------------------------------------------------------------------------------------------------
# Counters and the signature
# ------------------------------------------------------------------------------------------------
def test_counters_ignore_junk_and_bound_their_series():
    c = Counters()
    c.inc("bastion_guard_alerts_total", {"kind": "a"})
    c.inc("bastion_guard_alerts_total", {"kind": "a"}, 2)
    assert c.value("bastion_guard_alerts_total", {"kind": "a"}) == 3
    for bad in ("1abc", "a-b", "", "a b"):
        c.inc(bad)
    c.inc("x_total", {"bad-label": "v"})
    c.inc("x_total", {"__reserved": "v"})
    c.inc("x_total", None, -1)
    c.inc("x_total", None, True)  # type: ignore[arg-type]
    c.inc(None)  # type: ignore[arg-type]
    assert c.value("x_total") == 0
    assert "1abc" not in c.exposition() and "x_total{" not in c.exposition()
    for i in range(MAX_SERIES_PER_METRIC + 50):
        c.inc("flood_total", {"limit": f"l{i}"})
    text = c.exposition()
    assert text.count("flood_total{limit=") == MAX_SERIES_PER_METRIC
    assert 'flood_total{overflow="true"} 50' in text


def test_webhook_signature_is_hmac_sha256_over_timestamp_and_body():
    body = b'{"kind":"x"}'
    expected = hmac.new(SECRET.encode(), b"1700000000000." + body, hashlib.sha256).hexdigest()
    assert webhook_signature(SECRET, "1700000000000", body) == "sha256=" + expected


# ------------------------------------------------------------------------------------------------
# A webhook receiver on 127.0.0.1 (its own thread and loop)
# ------------------------------------------------------------------------------------------------
@dataclass
class Receiver:
    """Answers ``fail_first`` requests with 500, then 200; ``hang`` never answers."""

    fail_first: int = 0
    hang: bool = False
    requests: list[tuple[dict, bytes]] = field(default_factory=list)
    port: int = 0

    def start(self) -> Receiver:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            self.requests.append((dict(request.headers), body))
            if self.hang:
                await asyncio.sleep(3600)
            if len(self.requests) <= self.fail_first:
                return web.Response(status=500)
            return web.Response(status=204)

        async def setup() -> None:
            app = web.Application()
            app.router.add_post("/hook/{tail:.*}", hook)
            self._runner = web.AppRunner(app, shutdown_timeout=0.1)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(setup())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/path-secret?token=query-secret"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def payloads(self) -> list[dict]:
        return [json.loads(body) for _, body in list(self.requests)]


def wait_for(pred, timeout: float = 10.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


def alert(srv: ServerThread, kind: str, summary: str, details: dict | None = None) -> None:
    assert srv.hs is not None
    run_on_server(srv, srv.hs.guard.alerts.alert(kind, summary, details or {}))


def counter(srv: ServerThread, name: str, labels: dict | None = None) -> int:
    assert srv.hs is not None
    return call_on_server(srv, srv.hs.guard.alerts.counters.value, name, labels)


def set_admin(srv: ServerThread, user_id: str, value: bool) -> None:
    store = srv.hs.store
    run_on_server(srv, store.transaction(
        lambda conn: store.set_user_flag_in(conn, user_id, "is_admin", value)
    ))  # fmt: skip


def membership(srv: ServerThread, room_id: str, user_id: str) -> str | None:
    return call_on_server(srv, srv.hs.rooms.membership_of, room_id, user_id)


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def start(tmp_path, **alerts) -> ServerThread:
    return ServerThread(tmp_path / "data", guard={"alerts": alerts}).start()


def room_messages(client, room_id: str) -> list[dict]:
    r = client.request("GET", f"{V3}/rooms/{room_id}/messages", query={"dir": "b", "limit": "50"})
    assert r.status == 200, r.body
    return [e for e in reversed(r.body["chunk"]) if e["type"] == "m.room.message"]


# ------------------------------------------------------------------------------------------------
# On a server
# ------------------------------------------------------------------------------------------------
def test_alerts_reach_the_admin_room_and_a_signed_webhook(tmp_path, receiver):
    srv = start(tmp_path, webhook_url=receiver.url, webhook_secret=SECRET)
    try:
        admin = make_user(srv, admin=True)
        alert(srv, "guard.block", "refused a link blast from @spam:localhost",
              {"subject": "@spam:localhost", "score": 0.97, "tags": {"a"}, "n": 2**60})  # fmt: skip
        # The webhook: one POST, signed over timestamp and body with the secret.
        wait_for(lambda: receiver.requests)
        headers, body = receiver.requests[0]
        ts = headers["X-Bastion-Timestamp"]
        expected = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256)
        assert headers["X-Bastion-Signature"] == "sha256=" + expected.hexdigest()
        assert abs(int(ts) - time.time() * 1000) < 60_000
        payload = json.loads(body)
        assert payload["kind"] == "guard.block" and payload["server"] == "localhost"
        assert payload["summary"] == "refused a link blast from @spam:localhost"
        assert payload["count"] == 1 and payload["coalesced"] is False
        # Floats, sets and huge integers are made JSON- (and event-) safe.
        assert payload["details"] == {"subject": "@spam:localhost", "score": "0.97",
                                      "tags": ["a"], "n": str(2**60)}  # fmt: skip
        # The admin room: created by the notices user with the admin invited.
        invites = wait_for(lambda: sync(admin)["rooms"]["invite"])
        (room_id,) = invites
        names = [e["content"].get("name") for e in invites[room_id]["invite_state"]["events"]
                 if e["type"] == "m.room.name"]  # fmt: skip
        assert names == ["Bastion guard alerts"]
        join(admin, room_id)
        msgs = room_messages(admin, room_id)
        assert len(msgs) == 1
        assert msgs[0]["content"]["msgtype"] == "m.notice"
        assert (
            msgs[0]["content"]["body"] == "[guard.block] refused a link blast from @spam:localhost"
        )
        assert msgs[0]["content"]["org.bastion.alert"]["kind"] == "guard.block"
        assert msgs[0]["sender"] == srv.hs.server_notices.system_user_id
        # An admin made later is invited with the next alert; the room stays the same.
        admin2 = make_user(srv, admin=True)
        alert(srv, "guard.hold", "held a message")
        wait_for(lambda: room_id in sync(admin2)["rooms"]["invite"])
        wait_for(lambda: len(room_messages(admin, room_id)) == 2)
        # A member who is no longer an admin is removed with the next alert.
        join(admin2, room_id)
        set_admin(srv, admin2.user_id, False)
        alert(srv, "guard.warn", "after the demotion")
        wait_for(lambda: membership(srv, room_id, admin2.user_id) == "leave")
        assert membership(srv, room_id, admin.user_id) == "join"
        r = admin2.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/t1",
                           {"msgtype": "m.text", "body": "still here?"})  # fmt: skip
        assert r.status == 403
        assert counter(srv, "bastion_guard_alerts_total", {"kind": "guard.block"}) == 1
        wait_for(lambda: counter(srv, "bastion_guard_alert_deliveries_total",
                                 {"channel": "webhook", "result": "ok"}) == 3)  # fmt: skip
    finally:
        srv.stop()


def test_a_configured_admin_room_is_joined_when_the_notices_user_is_invited(tmp_path):
    srv = ServerThread(tmp_path / "data").start()
    try:
        admin = make_user(srv, admin=True)
        room_id = create_room(admin, preset="private_chat")
        system = srv.hs.server_notices.system_user_id
    finally:
        srv.stop()
    srv = ServerThread(
        tmp_path / "data", guard={"alerts": {"admin_room": room_id, "coalesce_seconds": 0}}
    ).start()
    admin.base_url = srv.base_url
    try:
        # Not invited yet: the alert is not delivered (and nothing raises).
        alert(srv, "guard.warn", "first")
        wait_for(lambda: counter(srv, "bastion_guard_alert_deliveries_total",
                                 {"channel": "room", "result": "failed"}) == 1)  # fmt: skip
        r = admin.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": system})
        assert r.status == 200, r.body
        alert(srv, "guard.warn", "second")
        wait_for(lambda: [m["content"]["body"] for m in room_messages(admin, room_id)]
                 == ["[guard.warn] second"])  # fmt: skip
    finally:
        srv.stop()


def test_repeated_alerts_are_coalesced_per_kind(tmp_path, receiver):
    srv = start(tmp_path, webhook_url=receiver.url, coalesce_seconds=0.6)
    try:
        for i in range(20):
            alert(srv, "login.stuffing", f"attempt {i}")
        alert(srv, "guard.block", "something else")
        # At once: the first of each kind.
        wait_for(lambda: len(receiver.requests) >= 2)
        first = receiver.payloads()[:2]
        assert [(p["kind"], p["summary"], p["count"]) for p in first] == [
            ("login.stuffing", "attempt 0", 1), ("guard.block", "something else", 1),
        ]  # fmt: skip
        # When the window closes: one alert standing for the other 19.
        wait_for(lambda: len(receiver.requests) >= 3)
        third = receiver.payloads()[2]
        assert third["kind"] == "login.stuffing" and third["coalesced"] is True
        assert third["count"] == 19 and "19 more login.stuffing alerts" in third["summary"]
        assert third["summary"].endswith("attempt 19")
        assert counter(srv, "bastion_guard_alerts_total", {"kind": "login.stuffing"}) == 20
        assert counter(srv, "bastion_guard_alerts_coalesced_total",
                       {"kind": "login.stuffing"}) == 19  # fmt: skip
        time.sleep(1.5)  # a quiet window sends nothing more
        assert len(receiver.requests) == 3
        alert(srv, "login.stuffing", "again")  # a new window: delivered at once
        wait_for(lambda: len(receiver.requests) == 4)
        assert receiver.payloads()[3]["count"] == 1
    finally:
        srv.stop()
    assert len(receiver.requests) == 4


def test_held_back_alerts_are_sent_at_shutdown(tmp_path, receiver):
    srv = start(tmp_path, webhook_url=receiver.url, coalesce_seconds=3600)
    try:
        for i in range(5):
            alert(srv, "guard.warn", f"w{i}")
        wait_for(lambda: receiver.requests)
    finally:
        srv.stop()
    payloads = receiver.payloads()
    assert [p["count"] for p in payloads] == [1, 4]


def test_webhook_retries_with_backoff_until_it_answers(tmp_path):
    receiver = Receiver(fail_first=2).start()
    srv = start(tmp_path, webhook_url=receiver.url, webhook_secret=SECRET,
                webhook_max_attempts=3)  # fmt: skip
    try:
        srv.hs.guard.alerts.retry_base_seconds = 0.05
        alert(srv, "guard.block", "x")
        wait_for(lambda: len(receiver.requests) == 3)
        bodies = {body for _, body in receiver.requests}
        assert len(bodies) == 1  # the same alert each time, re-signed
        for headers, body in receiver.requests:
            ts = headers["X-Bastion-Timestamp"]
            assert headers["X-Bastion-Signature"] == webhook_signature(SECRET, ts, body)
        wait_for(lambda: counter(srv, "bastion_guard_alert_deliveries_total",
                                 {"channel": "webhook", "result": "ok"}) == 1)  # fmt: skip
    finally:
        srv.stop()
        receiver.stop()


def test_shutdown_ends_a_retry_wait(tmp_path):
    receiver = Receiver(fail_first=1000).start()
    srv = start(tmp_path, webhook_url=receiver.url, webhook_max_attempts=5)
    try:
        srv.hs.guard.alerts.retry_base_seconds = 30
        alert(srv, "guard.block", "x")
        wait_for(lambda: len(receiver.requests) == 1)
    finally:
        t0 = time.perf_counter()
        srv.stop()
        took = time.perf_counter() - t0
        receiver.stop()
    assert took < 3  # not the 30 s back-off, nor the 10 s drain deadline
    assert len(receiver.requests) == 2  # one last attempt when shutdown began


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("dead", ["refused", "hanging"])
def test_a_dead_webhook_slows_nothing_and_its_secret_is_never_logged(tmp_path, caplog, dead):
    caplog.set_level(logging.DEBUG)
    receiver = Receiver(hang=True).start() if dead == "hanging" else None
    url = (receiver.url if receiver is not None
           else f"http://127.0.0.1:{_closed_port()}/hook/path-secret?token=query-secret")  # fmt: skip
    srv = start(tmp_path, webhook_url=url, webhook_secret=SECRET, webhook_timeout_seconds=1,
                webhook_max_attempts=2, coalesce_seconds=0, queue_size=50)  # fmt: skip
    try:
        admin = make_user(srv, admin=True)
        hs = srv.hs

        async def burst() -> float:
            t0 = time.perf_counter()
            for i in range(200):
                await hs.guard.alerts.alert("guard.block", f"b{i}", {"i": i})
            return time.perf_counter() - t0

        took = run_on_server(srv, burst())
        assert took < 0.5, took  # never waits on the network
        # The queues are bounded: what does not fit is dropped and counted.
        assert counter(srv, "bastion_guard_alerts_dropped_total", {"channel": "webhook"}) >= 150
        # The admin room gets its alerts while the webhook is dead.
        room_id = wait_for(lambda: list(sync(admin)["rooms"]["invite"]))[0]
        join(admin, room_id)
        wait_for(lambda: len(room_messages(admin, room_id)) >= 40, timeout=20)
        # The server still answers at once.
        t0 = time.perf_counter()
        assert admin.request("GET", f"{V3}/account/whoami").status == 200
        assert time.perf_counter() - t0 < 1
        if dead == "refused":
            wait_for(lambda: counter(srv, "bastion_guard_alert_deliveries_total",
                                     {"channel": "webhook", "result": "failed"}) >= 1)  # fmt: skip
        else:
            wait_for(lambda: len(receiver.requests) >= 1)
    finally:
        t0 = time.perf_counter()
        srv.stop()
        stop_took = time.perf_counter() - t0
        if receiver is not None:
            receiver.stop()
    assert stop_took < 4  # the queue is not worked through at shutdown once the webhook fails
    text = caplog.text
    assert SECRET not in text and "path-secret" not in text and "query-secret" not in text


def test_many_kinds_at_once_share_one_window():
    from types import SimpleNamespace

    from bastion.guard.alerts import MAX_WINDOWS, Alerts

    cfg = parse_alerts_config({"coalesce_seconds": 60, "queue_size": 10_000})
    hs = SimpleNamespace(
        config=SimpleNamespace(guard_config=SimpleNamespace(alerts=cfg)),
        now_ms=lambda: 1, server_name="localhost",
    )  # fmt: skip

    async def main() -> tuple[int, int]:
        alerts = Alerts(hs)  # not started: the queue only fills
        for i in range(MAX_WINDOWS + 100):
            await alerts.alert(f"kind{i}", "s", {})
        text = alerts.exposition()
        alerts.begin_draining()
        alerts.mark_stopped()
        room = int(re.search(r'queue_length\{channel="room"\} (\d+)', text).group(1))
        return room, alerts.counters.value("bastion_guard_alerts_coalesced_total",
                                           {"kind": "kind250"})  # fmt: skip

    room, coalesced = asyncio.run(main())
    assert room == MAX_WINDOWS + 1  # one per kind, then one for all the others
    assert coalesced == 1
