"""GET /_matrix/federation/v1/timestamp_to_event/{roomId} (S-S API, v1.6): X-Matrix
authenticated, only for servers in the room and allowed by its ACL, only events the asking
server may see whole (history visibility at the event, as /event decides)."""

from __future__ import annotations

import time
import urllib.parse
import uuid

import pytest

from tests.support.federation import start_fed_server
from tests.support.harness import Client
from tests.support.peer import V1, FakePeer
from tests.support.rooms import create_room, send

V3 = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def world(tmp_path_factory, test_ca):
    tmp = tmp_path_factory.mktemp("t2e")
    srv = start_fed_server(tmp, test_ca, "bastion", registration="open")
    peer = FakePeer(test_ca, "peer").start()
    outsider = FakePeer(test_ca, "outsider").start()
    admin = Client(srv.base_url).register("admin" + uuid.uuid4().hex[:6])
    yield srv, peer, outsider, admin
    peer.stop()
    outsider.stop()
    srv.stop()


def _join(srv, peer, room_id):
    u = peer.user("p1")
    eid, ev = peer.build_on(srv, room_id, u, "m.room.member", {"membership": "join"}, u)
    status, body = peer.send(srv, uuid.uuid4().hex, [ev])
    assert status == 200 and body["pdus"] == {eid: {}}, body
    return eid


def _ts(admin, room_id, eid) -> int:
    r = admin.request("GET", f"{V3}/rooms/{urllib.parse.quote(room_id)}/event/{eid}")
    assert r.status == 200, r.body
    return r.body["origin_server_ts"]


def _sent(admin, room_id, text) -> tuple[str, int]:
    time.sleep(0.01)
    eid = send(admin, room_id, text)
    time.sleep(0.01)
    return eid, _ts(admin, room_id, eid)


def test_servers_in_the_room_see_what_they_may(world):
    srv, peer, outsider, admin = world
    room_id = create_room(admin, initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}])  # fmt: skip
    secret, t_secret = _sent(admin, room_id, "before you came")
    _join(srv, peer, room_id)
    after, t_after = _sent(admin, room_id, "after you came")
    path = f"{V1}/timestamp_to_event/{room_id}"
    # Not in the room, or unsigned: refused.
    s, b = outsider.request(srv, "GET", f"{path}?ts={t_after}&dir=b")
    assert (s, b["errcode"]) == (403, "M_FORBIDDEN")
    s, b = peer.request(srv, "GET", f"{path}?ts={t_after}&dir=b", sign=False)
    assert s == 401
    # The member server: the event after its join; the one before is not visible to it.
    s, b = peer.request(srv, "GET", f"{path}?ts={t_after}&dir=b")
    assert s == 200 and b == {"event_id": after, "origin_server_ts": t_after}
    s, b = peer.request(srv, "GET", f"{path}?ts={t_secret}&dir=b")
    assert s == 200 and b["event_id"] != secret
    # (the history_visibility event itself, which /event serves whole too)
    s, ev = peer.request(srv, "GET", f"{V1}/event/{b['event_id']}")
    assert ev["pdus"][0]["type"] == "m.room.history_visibility"
    s, ev = peer.request(srv, "GET", f"{V1}/event/{secret}")
    assert ev["pdus"][0]["content"] == {}  # what it may not see, /event serves redacted
    s, b = peer.request(srv, "GET", f"{path}?ts={t_secret}&dir=f")
    assert s == 200 and b["event_id"] != secret  # its own join, the first it may see
    s, b = peer.request(srv, "GET", f"{path}?ts={t_after + 1}&dir=f")
    assert (s, b["errcode"]) == (404, "M_NOT_FOUND")
    # Junk parameters.
    for query in ("ts=abc&dir=f", "dir=f", "ts=1", "ts=1&dir=up"):
        s, b = peer.request(srv, "GET", f"{path}?{query}")
        assert s == 400 and b["errcode"] in ("M_INVALID_PARAM", "M_MISSING_PARAM"), query
    s, b = peer.request(srv, "GET", f"{V1}/timestamp_to_event/!nothere:bastion?ts=1&dir=f")
    assert s == 403
    # The room's server ACL denies the peer: refused.
    r = admin.request("PUT", f"{V3}/rooms/{urllib.parse.quote(room_id)}/state/m.room.server_acl/",
                      {"allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": True})  # fmt: skip
    assert r.status == 200, r.body
    s, b = peer.request(srv, "GET", f"{path}?ts={t_after}&dir=b")
    assert (s, b["errcode"]) == (403, "M_FORBIDDEN")
