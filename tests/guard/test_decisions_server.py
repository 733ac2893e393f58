"""The guard's decisions on a real server (issue 9, "Policy lists and actions"): a held event
waits for a moderator and, approved, is sent as its sender; a block refuses with a readable
reason and carries out its actions (suspend, ban, quarantine), which a reversal undoes; shadow
mode records without refusing; reports join the queue; every decision and review is in the
ledger. The signals come from a scripted source standing in for a detector (tests/guard/
core_support.py); everything after them is the server's own path."""

from __future__ import annotations

import uuid

import pytest

from bastion.guard.signals import Signal
from tests.guard.core_support import (
    GUARD,
    V3,
    Scripted,
    admin_client,
    block,
    bodies,
    count_rows,
    create_room,
    decisions,
    hold,
    ledger_actions,
    q,
    script_detectors,
    send,
    warn,
)
from tests.support.harness import Client, ServerThread


@pytest.fixture
def scripted(server):
    return script_detectors(server, Scripted({
        "HOLD": hold(), "BLOCK": block(), "WARN": warn(),
        "SUSPEND": block("scam links", "suspend"), "BAN": block("flooding", "ban"),
        "QUARANTINE": block("malware", "quarantine_media"),
    }))  # fmt: skip


@pytest.fixture
def room(client, scripted):
    alice, bob = client.register(), client.register()
    room_id = create_room(alice, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{q(room_id)}", {}).status == 200
    return alice, bob, room_id


def test_held_event_is_approved_and_then_visible(server, room):
    alice, bob, room_id = room
    admin = admin_client(server)
    r = send(alice, room_id, "HOLD", txn="t-held")
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    assert (
        "held for review by a moderator" in r.body["error"] and "looks like spam" in r.body["error"]
    )
    assert "HOLD" not in bodies(bob, room_id)

    listed = admin.request("GET", GUARD + "/decisions", query={"status": "held"}).body["decisions"]
    assert len(listed) == 1
    d = listed[0]
    assert (d["subject"], d["room_id"], d["outcome"], d["source"]) == (
        alice.user_id, room_id, "hold", "detector.test")  # fmt: skip
    assert d["held"]["content"] == {"msgtype": "m.text", "body": "HOLD"}

    r = admin.request("POST", f"{GUARD}/decisions/{d['id']}/approve", {"reason": "fine"})
    assert r.status == 200, r.body
    assert r.body["status"] == "approved" and r.body["event_id"].startswith("$")
    msgs = bob.request("GET", f"{V3}/rooms/{q(room_id)}/messages",
                       query={"dir": "b", "limit": "5"}).body["chunk"]  # fmt: skip
    sent = [e for e in msgs if e["event_id"] == r.body["event_id"]]
    assert sent and sent[0]["sender"] == alice.user_id and sent[0]["content"]["body"] == "HOLD"
    # The client's retry of its transaction gets the approved event (idempotent).
    retry = send(alice, room_id, "HOLD", txn="t-held")
    assert retry.status == 200 and retry.body["event_id"] == r.body["event_id"]
    # Approving twice is refused; the ledger has the decision and the review.
    again = admin.request("POST", f"{GUARD}/decisions/{d['id']}/approve", {})
    assert again.status == 400 and again.body["errcode"] == "M_INVALID_PARAM"
    rec = [x for x in ledger_actions(server, "guard.decision")
           if x["details"]["decision_id"] == d["id"]]  # fmt: skip
    assert rec and rec[0]["subject"] == alice.user_id and rec[0]["details"]["status"] == "held"
    reviews = ledger_actions(server, "guard.review")
    assert [(x["actor"], x["details"]["review"], x["reason"]) for x in reviews] == [
        (admin.user_id, "approve", "fine")]  # fmt: skip
    routes = [x["details"]["route"] for x in ledger_actions(server, "admin.request")]
    assert f"POST {GUARD}/decisions/{{id}}/approve" in routes


def test_rejected_held_event_is_never_sent(server, room):
    alice, bob, room_id = room
    admin = admin_client(server)
    assert send(alice, room_id, "HOLD").status == 403
    (d,) = decisions(server, status="held")
    r = admin.request("POST", f"{GUARD}/decisions/{d['id']}/reject", {"reason": "spam indeed"})
    assert r.status == 200 and r.body["status"] == "rejected"
    assert "HOLD" not in bodies(bob, room_id)
    assert admin.request("POST", f"{GUARD}/decisions/{d['id']}/approve").status == 400


def test_block_refuses_with_a_readable_reason_and_warn_lets_through(server, room):
    alice, bob, room_id = room
    r = send(alice, room_id, "BLOCK")
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    assert r.body["error"] == "refused by the server's guard: spam"
    assert send(alice, room_id, "WARN").status == 200
    assert send(alice, room_id, "fine").status == 200
    assert bodies(bob, room_id)[:2] == ["fine", "WARN"]
    outcomes = [(d["outcome"], d["status"]) for d in decisions(server)]
    assert outcomes == [("warn", "done"), ("block", "done")]  # the plain message: no decision


def test_suspension_is_carried_out_and_reversed(server, room):
    alice, bob, room_id = room
    admin = admin_client(server)
    r = send(alice, room_id, "SUSPEND")
    assert r.status == 403
    r = send(alice, room_id, "anything")
    assert r.status == 403 and r.body["errcode"] == "M_USER_SUSPENDED"
    (d,) = decisions(server)
    assert d["details"]["carried_out"]["suspend"] == {"done": True, "user_id": alice.user_id}
    suspends = ledger_actions(server, "account.suspend")
    assert [(x["actor"], x["subject"]) for x in suspends] == [("server", alice.user_id)]

    r = admin.request("POST", f"{GUARD}/decisions/{d['id']}/reverse", {"reason": "false alarm"})
    assert r.status == 200, r.body
    assert r.body["status"] == "reversed"
    assert r.body["details"]["reversed"]["suspend"]["done"] is True
    assert send(alice, room_id, "back again").status == 200
    unsuspends = ledger_actions(server, "account.unsuspend")
    assert [(x["actor"], x["subject"]) for x in unsuspends] == [(admin.user_id, alice.user_id)]
    assert admin.request("POST", f"{GUARD}/decisions/{d['id']}/reverse").status == 400


def test_ban_by_the_server_side_moderator_and_its_reversal(server, room):
    alice, bob, room_id = room  # alice created the room: she is its moderator
    admin = admin_client(server)
    assert send(bob, room_id, "BAN").status == 403
    members = alice.request("GET", f"{V3}/rooms/{q(room_id)}/members").body["chunk"]
    bans = [m for m in members if m["state_key"] == bob.user_id]
    assert bans[0]["content"]["membership"] == "ban" and bans[0]["sender"] == alice.user_id
    (d,) = decisions(server)
    r = admin.request("POST", f"{GUARD}/decisions/{d['id']}/reverse", {})
    assert r.status == 200 and r.body["details"]["reversed"]["ban"]["done"] is True
    assert bob.request("POST", f"{V3}/join/{q(room_id)}", {}).status == 200


def test_ban_without_a_local_moderator_says_so(server, client, scripted):
    alice = client.register()
    room_id = create_room(alice, preset="public_chat")
    assert send(alice, room_id, "BAN").status == 403  # alice is the only (and top) member
    (d,) = decisions(server)
    assert d["details"]["carried_out"]["ban"]["done"] is False


def test_quarantined_media_is_not_served_until_reversed(server, room):
    alice, bob, room_id = room
    admin = admin_client(server)
    up = alice.request("POST", "/_matrix/media/v3/upload", raw=b"not really malware",
                       headers={"Content-Type": "text/plain"})  # fmt: skip
    assert up.status == 200, up.body
    mxc = up.body["content_uri"]
    path = "/_matrix/client/v1/media/download/" + mxc[len("mxc://") :]
    assert bob.request("GET", path).status == 200
    r = send(alice, room_id, "QUARANTINE", url=mxc)
    assert r.status == 403
    got = bob.request("GET", path)
    assert got.status == 404 and got.body["errcode"] == "M_NOT_FOUND"
    (d,) = decisions(server)
    assert d["details"]["carried_out"]["quarantine_media"]["media_ids"] == [mxc.rsplit("/", 1)[1]]
    assert admin.request("POST", f"{GUARD}/decisions/{d['id']}/reverse", {}).status == 200
    assert bob.request("GET", path).status == 200


def test_reports_join_the_review_queue(server, room):
    alice, bob, room_id = room
    admin = admin_client(server)
    eid = send(alice, room_id, "buy my stuff").body["event_id"]
    r = bob.request("POST", f"{V3}/rooms/{q(room_id)}/report/{q(eid)}", {"reason": "spam"})
    assert r.status == 200
    r = bob.request("POST", f"{V3}/users/{q(alice.user_id)}/report", {"reason": "spammer"})
    assert r.status == 200
    queue = admin.request("GET", GUARD + "/decisions", query={"status": "open"}).body
    got = [(d["source"], d["subject"], d["event_id"], d["details"]["reporter"],
            d["details"]["report_reason"]) for d in queue["decisions"]]  # fmt: skip
    assert got == [("report", alice.user_id, None, bob.user_id, "spammer"),
                   ("report", alice.user_id, eid, bob.user_id, "spam")]  # fmt: skip
    # The ledger record names the reported user, never the reporter.
    recs = [
        x for x in ledger_actions(server, "guard.decision") if x["details"]["source"] == "report"
    ]
    assert len(recs) == 2 and all(bob.user_id not in str(x) for x in recs)
    r = admin.request("POST", f"{GUARD}/decisions/{queue['decisions'][0]['id']}/reject",
                      {"reason": "not spam"})  # fmt: skip
    assert r.status == 200 and r.body["status"] == "rejected"


def test_cooling_room_refuses_joins(server, client):
    alice, bob = client.register(), client.register()
    room_id = create_room(alice, preset="public_chat")
    cooling = server.hs.guard.cooling
    cooling.refuses_join = lambda rid, uid, now: (  # type: ignore[method-assign]
        "this room is cooling after a wave of joins" if rid == room_id else None)  # fmt: skip
    r = bob.request("POST", f"{V3}/join/{q(room_id)}", {})
    assert r.status == 403 and "cooling after a wave of joins" in r.body["error"]
    (d,) = decisions(server)
    assert (d["source"], d["outcome"], d["subject"]) == ("detector.join_wave", "block", bob.user_id)


def test_create_room_invites_are_guarded(server, client):
    alice, bob = client.register(), client.register()
    src = script_detectors(server, Scripted(when=lambda ctx: block("invite spam")
                                            if ctx.membership == "invite" else None))  # fmt: skip
    r = alice.request("POST", V3 + "/createRoom", {"invite": [bob.user_id]})
    assert r.status == 403 and "invite spam" in r.body["error"]
    assert [c.state_key for c in src.seen if c.membership == "invite"] == [bob.user_id]
    assert alice.request("POST", V3 + "/createRoom", {}).status == 200


def test_allow_path_writes_nothing(server, room):
    alice, bob, room_id = room
    before = (count_rows(server, "guard_decisions"), count_rows(server, "ledger_entries"))
    assert send(alice, room_id, "hello").status == 200
    after = (count_rows(server, "guard_decisions"), count_rows(server, "ledger_entries"))
    assert after == (before[0], before[1] + 1)  # the event's own leaf only


@pytest.mark.parametrize("mode", ["shadow"])
def test_shadow_mode_records_but_does_not_refuse(tmp_path, mode):
    srv = ServerThread(tmp_path / "data", guard={"mode": mode}).start()
    try:
        script_detectors(srv, Scripted({"SUSPEND": block("scam", "suspend"), "HOLD": hold()}))
        alice = Client(srv.base_url).register()
        room_id = create_room(alice)
        assert send(alice, room_id, "SUSPEND").status == 200
        assert send(alice, room_id, "HOLD").status == 200
        assert send(alice, room_id, "still here").status == 200
        got = [(d["outcome"], d["status"], d["actions"]) for d in decisions(srv)]
        assert got == [("hold", "shadow", []), ("block", "shadow", ["suspend"])]
        assert [x["details"]["status"] for x in ledger_actions(srv, "guard.decision")] == [
            "shadow", "shadow"]  # fmt: skip
        assert ledger_actions(srv, "account.suspend") == []
    finally:
        srv.stop()


def test_guard_disabled_asks_no_part(tmp_path):
    srv = ServerThread(tmp_path / "data", guard={"enabled": False}).start()
    try:
        src = script_detectors(srv, Scripted({"BLOCK": block()}))
        alice = Client(srv.base_url).register()
        room_id = create_room(alice, invite=[])
        assert send(alice, room_id, "BLOCK").status == 200
        assert src.seen == [] and decisions(srv) == []
    finally:
        srv.stop()


def test_a_failing_part_does_not_stop_messages(server, client):
    def broken(ctx):
        raise RuntimeError("detector bug")

    server.hs.guard.detectors.signals = broken  # type: ignore[method-assign]
    alice = client.register()
    room_id = create_room(alice)
    assert send(alice, room_id, "hello").status == 200


def test_membership_signals_see_joins_invites_and_knocks(server, client):
    alice, bob, carol = client.register(), client.register(), client.register()
    src = script_detectors(server, Scripted({"member:invite": warn("many invites")}))
    room_id = create_room(alice, preset="public_chat")
    r = alice.request("POST", f"{V3}/rooms/{q(room_id)}/invite", {"user_id": carol.user_id})
    assert r.status == 200
    assert bob.request("POST", f"{V3}/join/{q(room_id)}", {}).status == 200
    seen = [(c.membership, c.sender, c.state_key) for c in src.seen if c.membership]
    assert ("invite", alice.user_id, carol.user_id) in seen
    assert ("join", bob.user_id, bob.user_id) in seen
    (d,) = decisions(server)
    assert d["outcome"] == "warn" and d["reason"] == "many invites"


def test_state_events_and_context(server, client):
    """What a check sees: the sender's account age, when they joined, and that an encrypted
    room's content is not readable."""
    alice = client.register()
    src = script_detectors(server, Scripted())
    room_id = create_room(alice, preset="public_chat")
    r = alice.request("PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.topic/", {"topic": "t"})
    assert r.status == 200
    ctx = src.seen[-1]
    assert (ctx.etype, ctx.state_key) == ("m.room.topic", "")
    assert ctx.sender_created_ms is not None and ctx.sender_joined_ms is not None
    assert ctx.readable and ctx.local and ctx.ip == "127.0.0.1"
    r = alice.request("PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.encryption/",
                      {"algorithm": "m.megolm.v1.aes-sha2"})  # fmt: skip
    assert r.status == 200
    assert send(alice, room_id, "secret?").status == 200
    assert not src.seen[-1].readable


def test_signal_severity_info_is_not_recorded(server, client):
    script_detectors(server, Scripted(when=lambda ctx: Signal("detector.x", "info", 0.1, "meh")))
    alice = client.register()
    room_id = create_room(alice)
    assert send(alice, room_id, uuid.uuid4().hex).status == 200
    assert decisions(server) == []


def test_held_invite_is_sent_on_approval(server, client):
    alice, carol = client.register(), client.register()
    admin = admin_client(server)
    script_detectors(server, Scripted({"member:invite": hold("too many invites today")}))
    room_id = create_room(alice)
    r = alice.request("POST", f"{V3}/rooms/{q(room_id)}/invite",
                      {"user_id": carol.user_id, "reason": "come along"})  # fmt: skip
    assert r.status == 403 and "held for review" in r.body["error"]
    (d,) = decisions(server, status="held")
    assert (d["held"]["type"], d["held"]["state_key"]) == ("m.room.member", carol.user_id)
    r = admin.request("POST", f"{GUARD}/decisions/{d['id']}/approve", {})
    assert r.status == 200, r.body
    state = alice.request("GET", f"{V3}/rooms/{q(room_id)}/state/m.room.member/{q(carol.user_id)}")
    assert state.body == {"membership": "invite", "reason": "come along"}


def test_approval_that_the_room_now_refuses_stays_held(server, room):
    alice, bob, room_id = room
    admin = admin_client(server)
    assert send(bob, room_id, "HOLD").status == 403
    (d,) = decisions(server, status="held")
    assert bob.request("POST", f"{V3}/rooms/{q(room_id)}/leave", {}).status == 200
    r = admin.request("POST", f"{GUARD}/decisions/{d['id']}/approve", {})
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    assert decisions(server, status="held")[0]["details"]["approve_failed"]


def test_no_approval_for_a_suspended_sender(server, room):
    alice, bob, room_id = room
    admin = admin_client(server)
    assert send(alice, room_id, "HOLD").status == 403
    (d,) = decisions(server, status="held")
    r = admin.request("PUT", f"/_matrix/client/v1/admin/suspend/{q(alice.user_id)}",
                      {"suspended": True})  # fmt: skip
    assert r.status == 200
    r = admin.request("POST", f"{GUARD}/decisions/{d['id']}/approve", {})
    assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM")
    assert "suspended" in r.body["error"] and "HOLD" not in bodies(bob, room_id)
    assert decisions(server, status="held")[0]["id"] == d["id"]


def test_reversing_a_cooling_reopens_the_room_now(server, client):
    """Reverse of a ``cool_room`` decision: the cooling is lifted at once (RoomCooling.lift),
    the previous join rule restored and the lift recorded (``guard.throttle_lift``)."""
    alice, bob, carol = client.register(), client.register(), client.register()
    room_id = create_room(alice, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{q(room_id)}", {}).status == 200
    until = server.hs.now_ms() + 3_600_000
    script_detectors(server, Scripted({"WAVE": block("join wave", "cool_room", until_ms=until)}))
    assert send(bob, room_id, "WAVE").status == 403
    (d,) = decisions(server)
    assert d["details"]["carried_out"]["cool_room"]["done"] is True

    def rule() -> str:
        r = alice.request("GET", f"{V3}/rooms/{q(room_id)}/state/m.room.join_rules/")
        return r.body["join_rule"]

    assert rule() == "knock"
    assert carol.request("POST", f"{V3}/join/{q(room_id)}", {}).status == 403
    admin = admin_client(server)
    r = admin.request("POST", f"{GUARD}/decisions/{d['id']}/reverse", {"reason": "a meetup"})
    assert r.status == 200, r.body
    assert r.body["details"]["reversed"]["cool_room"] == {"done": True, "join_rule_restored": True}
    assert "cool_room" not in r.body["details"]["not_reversible"]
    assert rule() == "public"
    assert carol.request("POST", f"{V3}/join/{q(room_id)}", {}).status == 200
    lifts = ledger_actions(server, "guard.throttle_lift")
    assert [(x["actor"], x["target"]) for x in lifts] == [(admin.user_id, room_id)]
    assert "reversal of guard decision" in lifts[0]["reason"]


def test_retries_racing_the_first_hold_wait_for_its_decision(server, room):
    """Retries of a held event that arrive while its decision is still being written get the
    same 403 as the first attempt, and no second decision is made."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    alice, _bob, room_id = room
    guard = server.hs.guard
    record = guard.record

    async def slow_record(decision):
        await asyncio.sleep(0.3)  # the retries arrive while this one is written
        return await record(decision)

    guard.record = slow_record
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: send(alice, room_id, "HOLD", txn="t-race"), range(4)))
    finally:
        guard.record = record
    assert {(a.status, a.body["errcode"], a.body["error"]) for a in answers} == {
        (answers[0].status, "M_FORBIDDEN", answers[0].body["error"])
    }
    assert answers[0].status == 403
    assert len(decisions(server, status="held")) == 1


def test_a_retried_held_event_finds_its_decision(server, room):
    """A client retrying a held event with the same transaction ID gets the same 403 (the
    same decision), and no second held decision is made; after a rejection it stays refused."""
    alice, bob, room_id = room
    admin = admin_client(server)
    first = send(alice, room_id, "HOLD", txn="t-retry")
    assert first.status == 403
    (d,) = decisions(server, status="held")
    records_before = len(ledger_actions(server, "guard.decision"))
    for _ in range(3):
        retry = send(alice, room_id, "HOLD", txn="t-retry")
        assert (retry.status, retry.body) == (first.status, first.body)
    assert [x["id"] for x in decisions(server)] == [d["id"]]
    assert len(ledger_actions(server, "guard.decision")) == records_before
    # Another transaction is another event: a decision of its own.
    assert send(alice, room_id, "HOLD", txn="t-other").status == 403
    assert len(decisions(server, status="held")) == 2
    # Rejected: the retry is still refused, still without a new decision.
    assert admin.request("POST", f"{GUARD}/decisions/{d['id']}/reject", {}).status == 200
    retry = send(alice, room_id, "HOLD", txn="t-retry")
    assert retry.status == 403 and f"decision {d['id']}" in retry.body["error"]
    assert len(decisions(server)) == 2
    assert "HOLD" not in bodies(bob, room_id)
