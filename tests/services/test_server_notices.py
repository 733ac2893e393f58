"""Server notices (C-S API "Server Notices") on a real server: one room per user, created once
(also when two first notices race), tagged ``m.server_notice``, the user invited; the notice
seen in /sync; the user cannot send into it nor reject its invite, may leave it and is invited
back; the notices user cannot log in and a squatted name is never used."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from bastion.errors import MatrixError
from bastion.services.server_notices import (
    M_CANNOT_LEAVE_SERVER_NOTICE_ROOM,
    NOTICE_TAG,
    ServerNoticesUnavailable,
)
from tests.support.accounts import call_on_server, db_rows, make_user, run_on_server
from tests.support.harness import Client, ServerThread
from tests.support.rooms import V3, join, sync


@pytest.fixture
def srv(tmp_path):
    s = ServerThread(tmp_path / "data").start()
    yield s
    s.stop()


def notice(srv: ServerThread, user_id: str, body: str, **kw) -> str:
    assert srv.hs is not None
    return run_on_server(srv, srv.hs.server_notices.send_notice(user_id, body, **kw))


def room_of(srv: ServerThread, user_id: str) -> str | None:
    assert srv.hs is not None
    return call_on_server(srv, srv.hs.server_notices.notice_room_of, user_id)


def test_first_notice_creates_a_tagged_room_and_the_user_sees_it(srv):
    alice = make_user(srv)
    event_id = notice(srv, alice.user_id, "hello from the server", notice_type="m.test")
    room_id = room_of(srv, alice.user_id)
    assert room_id is not None
    # Invited, not joined (spec: "Servers should invite the target user").
    s = sync(alice)
    assert room_id in s["rooms"]["invite"]
    invite_state = s["rooms"]["invite"][room_id]["invite_state"]["events"]
    names = [e["content"].get("name") for e in invite_state if e["type"] == "m.room.name"]
    assert names == ["Server Notices"]
    join(alice, room_id)
    s = sync(alice)
    room = s["rooms"]["join"][room_id]
    tags = [e for e in room["account_data"]["events"] if e["type"] == "m.tag"]
    assert tags and NOTICE_TAG in tags[0]["content"]["tags"]
    msgs = [e for e in room["timeline"]["events"] if e["type"] == "m.room.message"]
    assert [m["event_id"] for m in msgs] == [event_id]
    content = msgs[0]["content"]
    assert content["msgtype"] == "m.server_notice"
    assert content["body"] == "hello from the server"
    assert content["server_notice_type"] == "m.test"
    assert msgs[0]["sender"] == srv.hs.server_notices.system_user_id
    # The second notice goes to the same room.
    second = notice(srv, alice.user_id, "again",
                    extra={"org.example": 1, "msgtype": "m.text", "score": 0.5})  # fmt: skip
    assert room_of(srv, alice.user_id) == room_id
    r = alice.request("GET", f"{V3}/rooms/{room_id}/event/{second}")
    assert r.status == 200, r.body
    assert r.body["content"]["msgtype"] == "m.server_notice"  # extra cannot replace it
    assert r.body["content"]["org.example"] == 1
    assert r.body["content"]["score"] == "0.5"  # no floats in canonical JSON
    assert r.body["content"]["server_notice_type"] == "org.bastion.notice"
    rows = db_rows(srv, "SELECT room_id FROM server_notice_rooms WHERE user_id = ?",
                   (alice.user_id,))  # fmt: skip
    assert [r["room_id"] for r in rows] == [room_id]


def test_concurrent_first_notices_create_one_room(srv):
    users = [make_user(srv) for _ in range(3)]
    hs = srv.hs
    assert hs is not None

    async def burst():
        coros = [hs.server_notices.send_notice(u.user_id, f"n{i}") for u in users
                 for i in range(4)]  # fmt: skip
        return await asyncio.gather(*coros)

    ids = run_on_server(srv, burst())
    assert len(set(ids)) == 12
    for u in users:
        rows = db_rows(srv, "SELECT room_id FROM server_notice_rooms WHERE user_id = ?",
                       (u.user_id,))  # fmt: skip
        assert len(rows) == 1
        invites = db_rows(
            srv, "SELECT room_id FROM current_membership WHERE user_id = ? AND membership = ?",
            (u.user_id, "invite"),
        )  # fmt: skip
        assert [r["room_id"] for r in invites] == [rows[0]["room_id"]]


def test_user_cannot_send_invite_or_reject_but_may_leave_and_is_invited_back(srv):
    alice = make_user(srv)
    bob = make_user(srv)
    notice(srv, alice.user_id, "first")
    room_id = room_of(srv, alice.user_id)
    # Rejecting the invite: M_CANNOT_LEAVE_SERVER_NOTICE_ROOM (spec, "Client behaviour").
    r = alice.request("POST", f"{V3}/rooms/{room_id}/leave", {})
    assert r.status == 403
    assert r.body["errcode"] == M_CANNOT_LEAVE_SERVER_NOTICE_ROOM
    join(alice, room_id)
    r = alice.request(
        "PUT", f"{V3}/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}",
        {"msgtype": "m.server_notice", "body": "fake notice", "server_notice_type": "x"},
    )  # fmt: skip
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.topic", {"topic": "mine"})
    assert r.status == 403
    r = alice.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": bob.user_id})
    assert r.status == 403
    # Bob may not join someone else's notices room.
    r = bob.request("POST", f"{V3}/join/{room_id}", {})
    assert r.status == 403
    # Joined, alice may leave ("Servers should not prevent the user leaving").
    r = alice.request("POST", f"{V3}/rooms/{room_id}/leave", {})
    assert r.status == 200, r.body
    # The next notice invites her back to the same room.
    notice(srv, alice.user_id, "second")
    assert room_of(srv, alice.user_id) == room_id
    s = sync(alice)
    assert room_id in s["rooms"]["invite"]


def test_notices_user_cannot_log_in_and_refuses_remote_and_unknown_users(srv):
    alice = make_user(srv)
    notice(srv, alice.user_id, "hi")
    system = srv.hs.server_notices.system_user_id
    r = Client(srv.base_url).request(
        "POST", f"{V3}/login",
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": system},
         "password": ""},
        token=None,
    )  # fmt: skip
    assert r.status in (400, 403), r.body
    rows = db_rows(srv, "SELECT password_hash FROM users WHERE user_id = ?", (system,))
    assert rows[0]["password_hash"] is None
    with pytest.raises(MatrixError) as e:
        notice(srv, "@someone:elsewhere.example", "hi")
    assert e.value.status == 400
    with pytest.raises(MatrixError) as e:
        notice(srv, "@nobody:localhost", "hi")
    assert e.value.status == 404


def test_a_squatted_notices_name_is_never_used(tmp_path):
    srv = ServerThread(tmp_path / "data", guard={"alerts": {"server_notices_localpart": "sys"}})
    srv.start()
    try:
        make_user(srv, "sys")  # registered by someone before the first notice
        alice = make_user(srv)
        with pytest.raises(ServerNoticesUnavailable):
            notice(srv, alice.user_id, "hi")
        assert room_of(srv, alice.user_id) is None
    finally:
        srv.stop()


def test_the_notices_name_cannot_be_registered(srv):
    c = Client(srv.base_url)
    r = c.request(
        "POST", f"{V3}/register",
        {"username": "notices", "password": "correct horse battery",
         "auth": {"type": "m.login.dummy"}},
        token=None,
    )  # fmt: skip
    assert r.status == 400 and r.body["errcode"] == "M_USER_IN_USE", r.body
    r = c.request("GET", f"{V3}/register/available", query={"username": "notices"}, token=None)
    assert r.status == 400 and r.body["errcode"] == "M_USER_IN_USE"
    alice = make_user(srv)
    notice(srv, alice.user_id, "still works")
    assert room_of(srv, alice.user_id) is not None
