"""Reporting content (C-S API "Reporting Content")."""

from __future__ import annotations

from urllib.parse import quote

from tests.support.accounts import call_on_server, make_user
from tests.support.rooms import V3, create_room, join, send


def _reports(server):
    return [dict(r) for r in call_on_server(server, server.hs.store.content_reports)]


def test_report_event(server):
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    ev = send(alice, room, "rude")
    r = bob.request("POST", f"{V3}/rooms/{room}/report/{quote(ev)}", {"reason": "rude"})
    assert r.status == 200 and r.body == {}
    [rep] = _reports(server)
    assert rep["kind"] == "event" and rep["reporter"] == bob.user_id
    assert rep["room_id"] == room and rep["event_id"] == ev and rep["reason"] == "rude"
    # reason is optional for event reports; empty body allowed
    assert bob.request("POST", f"{V3}/rooms/{room}/report/{quote(ev)}", {}).status == 200
    # an unknown event: answered like any other (no enumeration), not stored
    r = bob.request("POST", f"{V3}/rooms/{room}/report/{quote('$missing')}", {"reason": "x"})
    assert r.status == 200
    assert len(_reports(server)) == 2


def test_report_event_requires_membership(server):
    alice, carol = make_user(server), make_user(server)
    room = create_room(alice)
    ev = send(alice, room)
    r = carol.request("POST", f"{V3}/rooms/{room}/report/{quote(ev)}", {"reason": "x"})
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r2 = carol.request("POST", f"{V3}/rooms/!nope:localhost/report/{quote(ev)}", {"reason": "x"})
    assert r2.status == 404 and r2.body == r.body  # same answer: nothing leaks
    assert _reports(server) == []


def test_report_room_and_user(server):
    alice, carol = make_user(server), make_user(server)
    room = create_room(alice)
    # no membership needed
    r = carol.request("POST", f"{V3}/rooms/{room}/report", {"reason": "spam room"})
    assert r.status == 200 and r.body == {}
    r = carol.request("POST", f"{V3}/users/{alice.user_id}/report", {"reason": ""})
    assert r.status == 200
    reps = _reports(server)
    assert {(x["kind"], x["room_id"], x["target_user_id"]) for x in reps} == {
        ("room", room, None), ("user", None, alice.user_id)
    }  # fmt: skip
    # unknown targets: 200, not stored
    assert carol.request("POST", f"{V3}/rooms/!nope:localhost/report", {"reason": "x"}).status \
        == 200  # fmt: skip
    assert carol.request("POST", f"{V3}/users/@ghost:localhost/report", {"reason": "x"}).status \
        == 200  # fmt: skip
    assert len(_reports(server)) == 2


def test_report_bad_input(server, client):
    alice = make_user(server)
    room = create_room(alice)
    ev = send(alice, room)
    cases = [
        (f"{V3}/rooms/{room}/report", {}, "M_BAD_JSON"),  # reason required
        (f"{V3}/rooms/{room}/report", {"reason": 5}, "M_BAD_JSON"),
        (f"{V3}/rooms/{room}/report", {"reason": "x" * 3000}, "M_INVALID_PARAM"),
        (f"{V3}/users/{alice.user_id}/report", {}, "M_BAD_JSON"),
        (f"{V3}/users/not-a-user/report", {"reason": "x"}, "M_INVALID_PARAM"),
        (f"{V3}/rooms/not-a-room/report", {"reason": "x"}, "M_INVALID_PARAM"),
        (f"{V3}/rooms/{room}/report/{quote(ev)}", {"reason": ["x"]}, "M_BAD_JSON"),
    ]
    for path, body, errcode in cases:
        r = alice.request("POST", path, body)
        assert r.status == 400 and r.body["errcode"] == errcode, (path, body, r.body)
    r = alice.request("POST", f"{V3}/rooms/{room}/report", raw=b"nope")
    assert r.status == 400 and r.body["errcode"] == "M_NOT_JSON"
    r = client.request("POST", f"{V3}/rooms/{room}/report", {"reason": "x"}, token=None)
    assert r.status == 401
    assert _reports(server) == []
