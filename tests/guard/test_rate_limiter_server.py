"""The guard's rate limits through the real HTTP API (C-S API "Rate limiting"): each limit
answers 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms`` (and ``Retry-After``) exactly when its
bucket is empty; a throttle's start is recorded once; a per-user override set through the admin
API lifts or changes a limit; junk input to the admin API gets a Matrix error.

Each test starts a server whose limit under test refills slowly (one token in 1000 s), so the
refusal comes at the burst exactly, however slow the machine."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.support.accounts import (
    assert_error,
    call_on_server,
    db_rows,
    make_user,
    run_on_server,
)
from tests.support.harness import Client, ServerThread
from tests.support.rooms import create_room, join, send
from tests.support.server_pair import q, wait_for

V3 = "/_matrix/client/v3"
ADMIN = "/_bastion/admin/v1/guard/users"
SLOW = 0.001  # tokens a second: none come back during a test


@pytest.fixture
def start(tmp_path):
    servers: list[ServerThread] = []

    def go(**limits) -> ServerThread:
        table = {k: v if isinstance(v, dict) or k == "max_keys"
                 else {"per_second": SLOW, "burst": v} for k, v in limits.items()}  # fmt: skip
        srv = ServerThread(tmp_path / f"data{len(servers)}", guard={"rate_limits": table})
        servers.append(srv.start())
        return srv

    yield go
    for srv in servers:
        srv.stop()


def refused(r, limit: str | None = None) -> None:
    assert_error(r, 429, "M_LIMIT_EXCEEDED")
    ms = r.body["retry_after_ms"]
    assert isinstance(ms, int) and ms > 0
    assert int(r.headers["Retry-After"]) * 1000 >= ms  # waiting that long is enough
    if limit is not None:
        assert limit in r.body["error"]


def decisions(srv: ServerThread, source: str) -> list:
    return db_rows(srv, "SELECT * FROM guard_decisions WHERE source = ? ORDER BY id", (source,))


def put_text(c: Client, room_id: str, text: str):
    return c.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/{uuid.uuid4().hex}",
                     {"msgtype": "m.text", "body": text})  # fmt: skip


def test_messages_refused_past_the_burst_and_the_throttle_recorded_once(start):
    srv = start(message=3)
    alice = make_user(srv)
    counted: list = []
    srv.hs.guard.alerts.count = lambda metric, labels=None, n=1: counted.append((metric, labels))
    room = create_room(alice)  # the room's own events are not messages
    for i in range(3):
        assert put_text(alice, room, f"m{i}").status == 200
    for _ in range(3):
        r = put_text(alice, room, "one too many")
        refused(r, "message")
        assert r.body["retry_after_ms"] > 900_000  # one token in 1000 s
    # State events have their own bucket.
    r = alice.request("PUT", f"{V3}/rooms/{q(room)}/state/m.room.topic", {"topic": "t"})
    assert r.status == 200
    assert counted.count(("bastion_guard_rate_limited_total", {"limit": "message"})) == 3
    wait_for(lambda: len(decisions(srv, "rate.message")) == 1)
    (d,) = decisions(srv, "rate.message")
    assert (d["outcome"], d["subject"]) == ("block", alice.user_id)
    details = json.loads(d["details"])
    assert details["limit"] == "message" and details["burst"] == 3
    ledger = db_rows(srv, "SELECT * FROM admin_audit WHERE action = 'guard.decision'")
    assert len(ledger) == 1


def test_retry_after_is_rounded_up(start):
    # One token each 2.5 s: the wait is never whole seconds, and Retry-After must cover it.
    srv = start(message={"per_second": 0.4, "burst": 1})
    alice = make_user(srv)
    room = create_room(alice)
    assert put_text(alice, room, "first").status == 200
    r = put_text(alice, room, "second")
    refused(r)
    assert 1_000 < r.body["retry_after_ms"] <= 2_500
    assert r.headers["Retry-After"] in ("2", "3")
    assert int(r.headers["Retry-After"]) * 1000 >= r.body["retry_after_ms"]


def test_state_events(start):
    srv = start(state=2)
    alice = make_user(srv)
    room = create_room(alice)
    for i in range(2):
        r = alice.request("PUT", f"{V3}/rooms/{q(room)}/state/m.room.topic", {"topic": f"t{i}"})
        assert r.status == 200, r.body
    r = alice.request("PUT", f"{V3}/rooms/{q(room)}/state/m.room.topic", {"topic": "t9"})
    refused(r, "state")
    assert put_text(alice, room, "messages still go").status == 200


def test_joins_per_user_and_profile_changes_are_not_joins(start):
    srv = start(join=2)
    alice, bob = make_user(srv), make_user(srv)
    rooms = [create_room(alice) for _ in range(3)]
    join(bob, rooms[0])
    join(bob, rooms[1])
    refused(bob.request("POST", f"{V3}/join/{q(rooms[2])}", {}), "join")
    # Joining again a room one is in, and a display name sent to every joined room, are not
    # counted (as in Synapse: profile updates are never refused as joins).
    assert bob.request("POST", f"{V3}/join/{q(rooms[0])}", {}).status == 200
    r = bob.request("PUT", f"{V3}/profile/{q(bob.user_id)}/displayname", {"displayname": "B"})
    assert r.status == 200
    name = bob.request("GET", f"{V3}/rooms/{q(rooms[1])}/state/m.room.member/{q(bob.user_id)}")
    assert name.body.get("displayname") == "B"
    # Leaving is never limited (nor a deactivation's leaves).
    assert bob.request("POST", f"{V3}/rooms/{q(rooms[0])}/leave", {}).status == 200


def test_joins_per_room(start):
    srv = start(join_room=2)
    alice = make_user(srv)
    room = create_room(alice)  # the creator's join is the room's own
    others = [make_user(srv) for _ in range(3)]
    join(others[0], room)
    join(others[1], room)
    refused(others[2].request("POST", f"{V3}/join/{q(room)}", {}), "join_room")
    join(others[2], create_room(alice))  # another room is another bucket


def test_knocks_count_as_joins(start):
    srv = start(join=1)
    alice, bob = make_user(srv), make_user(srv)
    r1 = create_room(alice, preset="private_chat", room_version="10")
    r2 = create_room(alice, preset="private_chat", room_version="10")
    for r in (r1, r2):
        assert alice.request("PUT", f"{V3}/rooms/{q(r)}/state/m.room.join_rules",
                             {"join_rule": "knock"}).status == 200  # fmt: skip
    assert bob.request("POST", f"{V3}/knock/{q(r1)}", {}).status == 200
    refused(bob.request("POST", f"{V3}/knock/{q(r2)}", {}), "join")


def test_invites_per_sender_and_per_invitee(start):
    srv = start(invite=2, invite_target=1)
    alice, bob = make_user(srv), make_user(srv)
    users = [make_user(srv) for _ in range(4)]
    room = create_room(alice, preset="private_chat")

    def invite(by: Client, room_id: str, who: Client):
        return by.request("POST", f"{V3}/rooms/{q(room_id)}/invite", {"user_id": who.user_id})

    assert invite(alice, room, users[0]).status == 200
    assert invite(alice, room, users[1]).status == 200
    refused(invite(alice, room, users[2]), "invite")  # alice's third invite
    # The invitee's limit: users[0] has had its one invite (from alice); bob's is refused.
    room_b = create_room(bob, preset="private_chat")
    refused(invite(bob, room_b, users[0]), "invite_target")
    assert invite(bob, room_b, users[3]).status == 200
    # createRoom's invite list is counted like invites.
    r = bob.request("POST", f"{V3}/createRoom", {"invite": [users[3].user_id]})
    refused(r, "invite_target")


def test_invites_per_room(start):
    srv = start(invite_room=2)
    alice = make_user(srv)
    room = create_room(alice, preset="private_chat")
    users = [make_user(srv) for _ in range(3)]
    for u in users[:2]:
        r = alice.request("POST", f"{V3}/rooms/{q(room)}/invite", {"user_id": u.user_id})
        assert r.status == 200, r.body
    r = alice.request("POST", f"{V3}/rooms/{q(room)}/invite", {"user_id": users[2].user_id})
    refused(r, "invite_room")


def test_room_creation(start):
    srv = start(room_create=2)
    alice = make_user(srv)
    create_room(alice)
    create_room(alice)
    refused(alice.request("POST", f"{V3}/createRoom", {}), "room_create")
    create_room(make_user(srv))  # another user's own bucket


def test_media_upload_and_create(start):
    srv = start(media_upload=2, media_create=1)
    alice = make_user(srv)
    for _ in range(2):
        r = alice.request("POST", "/_matrix/media/v3/upload", raw=b"data",
                          headers={"Content-Type": "text/plain"})  # fmt: skip
        assert r.status == 200, r.body
    refused(alice.request("POST", "/_matrix/media/v3/upload", raw=b"data",
                          headers={"Content-Type": "text/plain"}), "media_upload")  # fmt: skip
    r = alice.request("POST", "/_matrix/media/v1/create")
    assert r.status == 200
    refused(alice.request("POST", "/_matrix/media/v1/create"), "media_create")
    # Uploading to a created ID is an upload (and the upload bucket is empty).
    server_name, media_id = r.body["content_uri"][len("mxc://") :].split("/")
    refused(alice.request("PUT", f"/_matrix/media/v3/upload/{server_name}/{media_id}",
                          raw=b"x", headers={"Content-Type": "text/plain"}), "media_upload")  # fmt: skip


def test_to_device_typing_receipts_and_reports(start):
    srv = start(to_device=2, typing=2, receipt=3, report=1)
    alice, bob = make_user(srv), make_user(srv)
    room = create_room(alice)
    join(bob, room)
    eid = send(bob, room, "hello")

    def to_device():
        return alice.request("PUT", f"{V3}/sendToDevice/m.test/{uuid.uuid4().hex}",
                             {"messages": {bob.user_id: {"*": {"n": 1}}}})  # fmt: skip

    assert [to_device().status for _ in range(2)] == [200, 200]
    refused(to_device(), "to_device")

    def typing(on: bool):
        return alice.request("PUT", f"{V3}/rooms/{q(room)}/typing/{q(alice.user_id)}",
                             {"typing": on, "timeout": 10_000})  # fmt: skip

    assert typing(True).status == 200 and typing(False).status == 200
    refused(typing(True), "typing")

    receipt = alice.request("POST", f"{V3}/rooms/{q(room)}/receipt/m.read/{q(eid)}", {})
    assert receipt.status == 200
    markers = {"m.fully_read": eid, "m.read": eid}
    assert alice.request("POST", f"{V3}/rooms/{q(room)}/read_markers", markers).status == 200
    assert alice.request("POST", f"{V3}/rooms/{q(room)}/read_markers", markers).status == 200
    refused(alice.request("POST", f"{V3}/rooms/{q(room)}/receipt/m.read/{q(eid)}", {}), "receipt")
    refused(alice.request("POST", f"{V3}/rooms/{q(room)}/read_markers", markers), "receipt")

    assert alice.request("POST", f"{V3}/rooms/{q(room)}/report/{q(eid)}",
                         {"reason": "spam"}).status == 200  # fmt: skip
    refused(alice.request("POST", f"{V3}/rooms/{q(room)}/report", {"reason": "x"}), "report")
    refused(alice.request("POST", f"{V3}/users/{q(bob.user_id)}/report", {"reason": "x"}),
            "report")  # fmt: skip
    # bob's buckets are his own.
    assert bob.request("POST", f"{V3}/rooms/{q(room)}/report/{q(eid)}",
                       {"reason": "spam"}).status == 200  # fmt: skip


def test_requests_refused_for_their_input_spend_no_token(start):
    srv = start(report=1, to_device=1, receipt=1, typing=1, media_upload=1)
    alice = make_user(srv)
    room = create_room(alice)
    eid = send(alice, room, "hello")
    for _ in range(3):  # 400s: the error that explains them, not 429
        r = alice.request("POST", f"{V3}/rooms/{q(room)}/report", {"reason": 5})
        assert_error(r, 400, "M_BAD_JSON")
        r = alice.request("PUT", f"{V3}/sendToDevice/m.test/{uuid.uuid4().hex}", {"messages": 1})
        assert r.status == 400
        r = alice.request("POST", f"{V3}/rooms/{q(room)}/read_markers", {"m.read": 5})
        assert_error(r, 400, "M_BAD_JSON")
        r = alice.request("PUT", f"{V3}/rooms/{q(room)}/typing/{q(alice.user_id)}", {})
        assert_error(r, 400, "M_BAD_JSON")
    assert alice.request("POST", f"{V3}/rooms/{q(room)}/report", {"reason": "x"}).status == 200
    refused(alice.request("POST", f"{V3}/rooms/{q(room)}/report", {"reason": 5}), "report")
    r = alice.request("PUT", f"{V3}/sendToDevice/m.test/{uuid.uuid4().hex}", {"messages": {}})
    assert r.status == 200
    markers = {"m.read": eid}
    assert alice.request("POST", f"{V3}/rooms/{q(room)}/read_markers", markers).status == 200
    typing = f"{V3}/rooms/{q(room)}/typing/{q(alice.user_id)}"
    assert alice.request("PUT", typing, {"typing": False}).status == 200
    # Refused for what it asks (not joined, 403): counted.
    other = create_room(make_user(srv))
    srv2_typing = f"{V3}/rooms/{q(other)}/typing/{q(alice.user_id)}"
    refused(alice.request("PUT", srv2_typing, {"typing": False}), "typing")


def test_admins_are_limited_like_everyone_else(start):
    srv = start(message=1)
    admin = make_user(srv, admin=True)
    room = create_room(admin)
    assert put_text(admin, room, "one").status == 200
    refused(put_text(admin, room, "two"), "message")


def test_limits_lifted_when_disabled(tmp_path):
    table = {"enabled": False, "message": {"per_second": SLOW, "burst": 1},
             "room_create": {"per_second": SLOW, "burst": 1}}  # fmt: skip
    srv = ServerThread(tmp_path / "data", guard={"rate_limits": table}).start()
    try:
        alice = make_user(srv)
        room = create_room(alice)
        create_room(alice)
        for i in range(5):
            assert put_text(alice, room, f"m{i}").status == 200
    finally:
        srv.stop()


def test_overrides_lift_change_and_go(start):
    srv = start(message=1, typing=1)
    admin, bot = make_user(srv, admin=True), make_user(srv)
    path = f"{ADMIN}/{q(bot.user_id)}/rate_limits"
    room = create_room(bot)
    assert put_text(bot, room, "1").status == 200
    refused(put_text(bot, room, "2"))

    r = admin.request("GET", path)
    assert r.status == 200 and r.body["overrides"] == {}
    assert r.body["limits"]["message"] == {"per_second": SLOW, "burst": 1}
    assert r.body["limits"]["room_create"] == {"per_second": 0.016, "burst": 10}
    assert "join_room" not in r.body["limits"]  # keyed by the room, not the user

    # No limit on messages for the bot; other limits stay.
    r = admin.request("PUT", path, {"overrides": {"message": None}, "reason": "the bridge"})
    assert r.status == 200, r.body
    assert r.body["overrides"] == {"message": None} and r.body["limits"]["message"] is None
    again = admin.request("PUT", path, {"overrides": {"message": None}})  # no change: no record
    assert again.status == 200 and again.body == r.body
    for i in range(5):
        assert put_text(bot, room, f"bridged {i}").status == 200
    typing = f"{V3}/rooms/{q(room)}/typing/{q(bot.user_id)}"
    assert bot.request("PUT", typing, {"typing": False}).status == 200
    refused(bot.request("PUT", typing, {"typing": False}), "typing")
    assert srv.hs.guard.limits.is_exempt(bot.user_id) is False

    # Its own bucket: three at once, one an hour (JSON bodies have no fractions: per_hour).
    r = admin.request("PUT", path, {"overrides": {"message": {"per_hour": 1, "burst": 3}}})
    assert r.body["limits"]["message"] == {"per_hour": 1, "burst": 3}  # as given
    assert [put_text(bot, room, "x").status for _ in range(4)] == [200, 200, 200, 429]

    # Every limit lifted, and not counted in per-room limits either.
    r = admin.request("PUT", path, {"overrides": {"*": None}})
    assert r.body["limits"]["typing"] is None and r.body["limits"]["message"] is None
    assert srv.hs.guard.limits.is_exempt(bot.user_id) is True
    assert all(put_text(bot, room, "x").status == 200 for _ in range(5))
    assert bot.request("PUT", typing, {"typing": False}).status == 200

    # Gone: the defaults again (the bucket spent before the overrides is still empty).
    r = admin.request("DELETE", path, {"reason": "bridge retired"})
    assert r.status == 200 and r.body["overrides"] == {}
    refused(put_text(bot, room, "after"), "message")
    assert srv.hs.guard.limits.is_exempt(bot.user_id) is False

    # Each change recorded (the admin request, and the override with its reason).
    rows = db_rows(srv, "SELECT * FROM admin_audit WHERE action = 'guard.rate_override'"
                        " ORDER BY id")  # fmt: skip
    assert [json.loads(r["details"])["overrides"] for r in rows] == [
        {"message": None},
        {"message": {"per_hour": 1, "burst": 3}},
        {"*": None},
        None,
    ]
    assert {r["actor"] for r in rows} == {admin.user_id}
    assert {r["target"] for r in rows} == {bot.user_id}
    requests = db_rows(srv, "SELECT * FROM admin_audit WHERE action = 'admin.request'")
    assert len(requests) == 6  # GET, four PUTs, DELETE


def test_overrides_survive_a_restart(tmp_path):
    data = tmp_path / "data"
    guard = {"rate_limits": {"message": {"per_second": SLOW, "burst": 1}}}
    srv = ServerThread(data, guard=guard).start()
    try:
        admin, bot = make_user(srv, admin=True), make_user(srv)
        r = admin.request("PUT", f"{ADMIN}/{q(bot.user_id)}/rate_limits",
                          {"overrides": {"*": None}})  # fmt: skip
        assert r.status == 200
    finally:
        srv.stop()
    srv = ServerThread(data, guard=guard).start()
    try:
        bot.base_url = srv.base_url
        assert srv.hs.guard.limits.is_exempt(bot.user_id)
        room = create_room(bot)
        assert all(put_text(bot, room, "x").status == 200 for _ in range(3))
    finally:
        srv.stop()


def test_admin_api_refuses_junk(start):
    srv = start()
    admin, alice = make_user(srv, admin=True), make_user(srv)
    path = f"{ADMIN}/{q(alice.user_id)}/rate_limits"
    # Admins only.
    for method, body in (("GET", None), ("PUT", {"overrides": {}}), ("DELETE", None)):
        assert_error(alice.request(method, path, body), 403, "M_FORBIDDEN")
    assert_error(Client(srv.base_url).request("GET", path), 401, "M_MISSING_TOKEN")
    # Local, existing users only.
    assert_error(admin.request("GET", f"{ADMIN}/{q('@x:remote.example')}/rate_limits"), 400,
                 "M_INVALID_PARAM")  # fmt: skip
    assert_error(admin.request("GET", f"{ADMIN}/nonsense/rate_limits"), 400, "M_INVALID_PARAM")
    assert_error(admin.request("GET", f"{ADMIN}/{q('@ghost:localhost')}/rate_limits"), 404,
                 "M_NOT_FOUND")  # fmt: skip
    # Bodies.
    assert_error(admin.request("PUT", path, {}), 400, "M_MISSING_PARAM")
    assert_error(admin.request("PUT", path, raw=b"not json"), 400, "M_NOT_JSON")
    assert_error(admin.request("PUT", path, raw=b"[1]"), 400, "M_BAD_JSON")
    for junk in (None, [], "*", 5):
        assert_error(admin.request("PUT", path, {"overrides": junk}), 400, "M_BAD_JSON")
    for junk in ({"*": {"per_second": 1, "burst": 1}}, {"nope": None}, {"join_room": None},
                 {"federation_send": None}, {"message": {"per_second": 1}},
                 {"message": {"per_second": -1, "burst": 2}},
                 {"message": {"per_second": 1, "burst": 0}},
                 {"message": {"per_second": 1, "per_minute": 1, "burst": 1}},
                 {"message": {"per_hour": 0, "burst": 1}},
                 {"message": {"per_second": "1", "burst": 1}},
                 {"message": {"per_second": 10**7, "burst": 1}},
                 {"message": {"per_second": 1, "burst": 1, "extra": 1}},
                 {"message": 7}):  # fmt: skip
        r = admin.request("PUT", path, {"overrides": junk})
        assert_error(r, 400, "M_INVALID_PARAM")
    assert_error(admin.request("PUT", path, {"overrides": {}, "reason": 5}), 400, "M_BAD_JSON")
    assert_error(admin.request("PUT", path, {"overrides": {}, "reason": "x" * 1001}), 400,
                 "M_INVALID_PARAM")  # fmt: skip
    # Nothing was stored by any of it.
    assert admin.request("GET", path).body["overrides"] == {}
    assert db_rows(srv, "SELECT * FROM guard_rate_overrides") == []


def test_a_flood_of_keys_stays_bounded(start):
    """50,000 origins each over their limit: the buckets kept, the refusals remembered and the
    throttle records written stay bounded (least recently used forgotten; records at most
    RECORDS_BURST at once, then RECORDS_PER_SECOND)."""
    from bastion.guard import rate_limiter
    from bastion.guard.signals import EventContext

    srv = start(federation_event_room={"per_second": SLOW, "burst": 1}, max_keys=1000)
    limits = srv.hs.guard.limits
    counted: list = []
    srv.hs.guard.alerts.count = lambda metric, labels=None, n=1: counted.append(labels)

    def flood() -> list[bool]:
        out = []
        for i in range(50_000):
            ctx = EventContext(f"@u:o{i}.example", "!r:localhost", "m.room.message", {}, None,
                               0, False, f"o{i}.example")  # fmt: skip
            out.append(limits.remote_event_allowed(ctx))
            out.append(limits.remote_event_allowed(ctx))
        return out

    t0 = time.monotonic()
    allowed = call_on_server(srv, flood)
    elapsed = time.monotonic() - t0
    assert allowed[0::2] == [True] * 50_000 and allowed[1::2] == [False] * 50_000
    assert len(counted) == 50_000
    buckets = limits._buckets  # noqa: SLF001
    assert all(len(b) <= 1000 for b in buckets.values())
    assert len(limits._noted) <= rate_limiter.MAX_NOTED  # noqa: SLF001
    run_on_server(srv, limits.drain())
    rows = db_rows(
        srv, "SELECT id FROM guard_decisions WHERE source = 'rate.federation_event_room'"
    )
    assert (
        0 < len(rows) <= rate_limiter.RECORDS_BURST + rate_limiter.RECORDS_PER_SECOND * elapsed + 1
    )


def test_federation_send_defaults_come_from_the_older_config_keys(tmp_path):
    from bastion.guard.limits import LimitSpec

    srv = ServerThread(tmp_path / "a", federation_send_per_second=3, federation_send_burst=7)
    assert srv.start().hs.guard.limits.specs["federation_send"] == LimitSpec(3.0, 7)
    srv.stop()
    srv = ServerThread(tmp_path / "b", federation_send_per_second=3, federation_send_burst=7,
                       guard={"rate_limits": {"federation_send": {"burst": 2}}})  # fmt: skip
    assert srv.start().hs.guard.limits.specs["federation_send"] == LimitSpec(10.0, 2)
    srv.stop()


def test_invites_from_another_server_count_for_the_invitee(tmp_path, test_ca):
    """A remote invite (S-S API "Inviting to a room", PUT /v2/invite) counts against the local
    invitee's invite_target bucket, as Synapse's rc_invites.per_user: the inviting server is
    answered 429 and cannot deliver it."""
    from tests.support.federation import start_fed_server

    a = start_fed_server(tmp_path, test_ca, "a")
    b = start_fed_server(tmp_path, test_ca, "b", guard={"rate_limits": {
        "invite_target": {"per_second": SLOW, "burst": 1}}})  # fmt: skip
    try:
        alice, bob = make_user(a), make_user(b)
        rooms = [create_room(alice, preset="private_chat") for _ in range(2)]

        def invite(room_id: str):
            return alice.request("POST", f"{V3}/rooms/{q(room_id)}/invite",
                                 {"user_id": bob.user_id})  # fmt: skip

        assert invite(rooms[0]).status == 200
        r = invite(rooms[1])
        assert r.status != 200, r.body
        wait_for(lambda: len(decisions(b, "rate.invite_target")) == 1)
        assert decisions(b, "rate.invite_target")[0]["subject"] == bob.user_id
        assert a.hs.rooms.membership_of(rooms[1], bob.user_id) != "invite"
    finally:
        a.stop()
        b.stop()
