"""Pushers (C-S API "Pushers") and delivery to an HTTP push gateway (Push Gateway API): a
gateway on 127.0.0.1 (reachable because the test server lifts loopback from the egress filter
with ``federation_allow_ips``, as the federation tests do) receives the spec's payload; a failed
send is retried with back-off; a rejected pushkey loses its pusher; the egress filter and the
URL rules refuse the rest."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bastion.core.egress_filter import parse_networks
from bastion.services.pushers import FilteringResolver
from tests.support.accounts import assert_error, make_user
from tests.support.harness import ServerThread
from tests.support.rooms import V3, create_room, join, send

NOTIFY = "/_matrix/push/v1/notify"


class Gateway:
    """A push gateway on 127.0.0.1: records each POST body; answers from ``responses``
    (status, body) in order, then 200 ``{"rejected": []}``."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.responses: list[tuple[int, dict]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length", "0"))
                gateway.bodies.append(json.loads(self.rfile.read(length)))
                gateway.paths.append(self.path)
                status, body = (gateway.responses.pop(0) if gateway.responses
                                else (200, {"rejected": []}))  # fmt: skip
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{NOTIFY}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.bodies

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def loopback_server(tmp_path):
    srv = ServerThread(tmp_path / "data", federation_allow_ips=("127.0.0.0/8",)).start()
    assert srv.hs is not None
    srv.hs.pushers.backoff_s = 0.05
    yield srv
    srv.stop()


@pytest.fixture
def gateway():
    g = Gateway()
    yield g
    g.close()


def pusher_body(url: str, pushkey: str = "key-1", **extra) -> dict:
    return {
        "kind": "http", "app_id": "org.example.app", "pushkey": pushkey,
        "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
        "profile_tag": "tag", "data": {"url": url, "custom": 1}, **extra,
    }  # fmt: skip


def set_pusher(c, body: dict) -> None:
    r = c.request("POST", f"{V3}/pushers/set", body)
    assert r.status == 200, r.body


def test_set_list_delete(server):
    alice = make_user(server)
    assert alice.request("GET", f"{V3}/pushers").body == {"pushers": []}
    url = "https://push.example.org/_matrix/push/v1/notify"
    set_pusher(alice, pusher_body(url))
    r = alice.request("GET", f"{V3}/pushers")
    assert r.status == 200
    assert r.body == {"pushers": [{
        "app_display_name": "Example", "app_id": "org.example.app",
        "data": {"url": url, "custom": 1}, "device_display_name": "Phone", "kind": "http",
        "lang": "en", "profile_tag": "tag", "pushkey": "key-1",
    }]}  # fmt: skip
    # an update keeps one pusher
    set_pusher(alice, pusher_body(url, device_display_name="Tablet"))
    [p] = alice.request("GET", f"{V3}/pushers").body["pushers"]
    assert p["device_display_name"] == "Tablet"
    # kind null deletes
    set_pusher(alice, {"kind": None, "app_id": "org.example.app", "pushkey": "key-1"})
    assert alice.request("GET", f"{V3}/pushers").body == {"pushers": []}


def test_append_false_takes_the_pushkey_from_other_users(server):
    alice, bob = make_user(server), make_user(server)
    url = "https://push.example.org/_matrix/push/v1/notify"
    set_pusher(alice, pusher_body(url))
    set_pusher(bob, pusher_body(url, append=True))
    assert len(alice.request("GET", f"{V3}/pushers").body["pushers"]) == 1
    set_pusher(bob, pusher_body(url))  # append false (the default)
    assert alice.request("GET", f"{V3}/pushers").body == {"pushers": []}
    assert len(bob.request("GET", f"{V3}/pushers").body["pushers"]) == 1


@pytest.mark.parametrize(
    ("change", "errcode"),
    [
        ({"data": {"url": "https://127.0.0.1/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "http://localhost/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "http://[::1]/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "http://10.1.2.3/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "http://169.254.169.254/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "https://push.example.org/other"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "https://push.example.org/_matrix/push/v1/notify?x=1"}},
         "M_INVALID_PARAM"),
        ({"data": {"url": "ftp://push.example.org/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "https://u:p@push.example.org/_matrix/push/v1/notify"}},
         "M_INVALID_PARAM"),
        ({"data": {}}, "M_INVALID_PARAM"),
        ({"data": {"url": 5}}, "M_INVALID_PARAM"),
        ({"data": "x"}, "M_BAD_JSON"),
        ({"data": {"url": "https://push.example.org/_matrix/push/v1/notify",
                   "format": "full"}}, "M_INVALID_PARAM"),
        ({"data": {"url": "https://push.example.org/_matrix/push/v1/notify",
                   "pad": "x" * 5000}}, "M_INVALID_PARAM"),
        ({"kind": "email"}, "M_INVALID_PARAM"),
        ({"kind": 5}, "M_INVALID_PARAM"),
        ({"pushkey": "k" * 513}, "M_INVALID_PARAM"),
        ({"app_id": "a" * 65}, "M_INVALID_PARAM"),
        ({"app_id": 5}, "M_BAD_JSON"),
        ({"lang": None}, "M_MISSING_PARAM"),
        ({"append": "yes"}, "M_BAD_JSON"),
    ],
)  # fmt: skip
def test_hostile_bodies(server, change, errcode):
    alice = make_user(server)
    body = {**pusher_body("https://push.example.org/_matrix/push/v1/notify"), **change}
    assert_error(alice.request("POST", f"{V3}/pushers/set", body), 400, errcode)
    assert alice.request("GET", f"{V3}/pushers").body == {"pushers": []}


def test_missing_keys_and_wrong_body(server):
    alice = make_user(server)
    for body in ({"app_id": "a", "pushkey": "k"}, {"kind": "http", "pushkey": "k"}, [], 5):
        r = alice.request("POST", f"{V3}/pushers/set", body)
        assert r.status == 400 and r.body["errcode"] in ("M_MISSING_PARAM", "M_BAD_JSON"), r.body


def test_gateway_receives_the_spec_payload(loopback_server, gateway):
    srv = loopback_server
    alice, bob = make_user(srv), make_user(srv)
    room = create_room(alice, name="Mission Control")
    join(bob, room)
    set_pusher(bob, pusher_body(gateway.url))
    event_id = send(alice, room, "floating in a most peculiar way",
                    **{"m.mentions": {"user_ids": [bob.user_id]}})  # fmt: skip
    [body] = gateway.wait_for(1)
    assert gateway.paths == [NOTIFY]
    note = body["notification"]
    [device] = note.pop("devices")
    assert isinstance(device.pop("pushkey_ts"), int)
    assert device == {
        "app_id": "org.example.app", "pushkey": "key-1", "data": {"custom": 1},
        "tweaks": {"sound": "default", "highlight": True},
    }  # fmt: skip
    assert note == {
        "event_id": event_id, "room_id": room, "type": "m.room.message",
        "sender": alice.user_id, "prio": "high", "room_name": "Mission Control",
        "content": {"msgtype": "m.text", "body": "floating in a most peculiar way",
                    "m.mentions": {"user_ids": [bob.user_id]}},
        "counts": {"unread": 1},
    }  # fmt: skip
    # alice (the sender) has no pusher and is never notified of her own event
    assert len(gateway.bodies) == 1


def test_event_id_only_and_retry_and_rejected(loopback_server, gateway):
    srv = loopback_server
    alice, bob = make_user(srv), make_user(srv)
    room = create_room(alice)
    join(bob, room)
    set_pusher(bob, pusher_body(gateway.url, data={"url": gateway.url,
                                                   "format": "event_id_only"}))  # fmt: skip
    gateway.responses = [(500, {}), (503, {})]  # two failures, then success
    first = send(alice, room, "first message")
    bodies = gateway.wait_for(3)
    assert len(bodies) == 3 and all(b == bodies[0] for b in bodies)  # the same notification
    note = bodies[0]["notification"]
    assert set(note) == {"event_id", "room_id", "counts", "devices"}
    assert note["event_id"] == first and note["devices"][0]["data"] == {"format": "event_id_only"}
    # the gateway rejects the pushkey: the pusher goes
    gateway.responses = [(200, {"rejected": ["key-1"]})]
    send(alice, room, "second message")
    gateway.wait_for(4)
    deadline = time.monotonic() + 5
    while bob.request("GET", f"{V3}/pushers").body["pushers"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert bob.request("GET", f"{V3}/pushers").body == {"pushers": []}
    send(alice, room, "third message")
    time.sleep(0.3)
    assert len(gateway.bodies) == 4


def test_a_gateway_error_is_not_retried(loopback_server, gateway):
    alice, bob = make_user(loopback_server), make_user(loopback_server)
    room = create_room(alice)
    join(bob, room)
    set_pusher(bob, pusher_body(gateway.url))
    gateway.responses = [(400, {})]
    send(alice, room, "hello there")
    gateway.wait_for(1)
    time.sleep(0.3)
    assert len(gateway.bodies) == 1


def test_loopback_gateway_is_refused_by_default(server, gateway):
    """Without the test switch the egress filter refuses the loopback gateway at set time."""
    bob = make_user(server)
    r = bob.request("POST", f"{V3}/pushers/set", pusher_body(gateway.url))
    assert_error(r, 400, "M_INVALID_PARAM")


def test_names_are_filtered_when_connecting():
    """A host name passes at set time; its addresses go through the egress filter when the
    connection is made (``localhost`` stands for a name that resolves to loopback)."""

    async def go() -> None:
        with pytest.raises(OSError, match="egress filter"):
            await FilteringResolver(()).resolve("localhost", 80)
        allowed = parse_networks(["127.0.0.0/8", "::1/128"])
        found = await FilteringResolver(allowed).resolve("localhost", 80)
        assert found and all(r["host"] in ("127.0.0.1", "::1") for r in found)

    asyncio.run(go())


def test_deleting_a_pusher_stops_its_retries(loopback_server, gateway):
    alice, bob = make_user(loopback_server), make_user(loopback_server)
    room = create_room(alice)
    join(bob, room)
    set_pusher(bob, pusher_body(gateway.url))
    gateway.responses = [(500, {})] * 50  # the gateway keeps failing
    send(alice, room, "hello there")
    gateway.wait_for(1)
    set_pusher(bob, {"kind": None, "app_id": "org.example.app", "pushkey": "key-1"})
    time.sleep(0.5)
    settled = len(gateway.bodies)
    time.sleep(1.5)  # the back-off would have sent 2 or 3 more by now
    assert len(gateway.bodies) == settled
