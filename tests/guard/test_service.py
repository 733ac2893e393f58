"""GuardService (bastion.guard.service) on a running server, called directly: recording (one
transaction, alerts after the commit), the order of the checks, per-room settings, federated
events and memberships from other servers."""

from __future__ import annotations

import pytest

from bastion.errors import MatrixError, limit_exceeded
from bastion.guard.signals import Decision, Signal
from tests.guard.core_support import (
    Scripted,
    block,
    create_room,
    decisions,
    hold,
    ledger_actions,
    script_detectors,
    send,
    warn,
)
from tests.support.accounts import call_on_server, on_server


class Recorder:
    """Stands in for the alerts part: what it was asked to alert and count."""

    def __init__(self) -> None:
        self.alerts: list[tuple[str, str, dict]] = []
        self.counts: list[tuple[str, dict | None]] = []

    async def alert(self, kind, summary, details) -> None:
        self.alerts.append((kind, summary, dict(details)))

    def count(self, metric, labels=None, n=1) -> None:
        self.counts.append((metric, dict(labels or {})))


@pytest.fixture
def alerts(server):
    rec = Recorder()
    server.hs.guard.alerts.alert = rec.alert  # type: ignore[method-assign]
    server.hs.guard.alerts.count = rec.count  # type: ignore[method-assign]
    return rec


def decision(outcome: str = "block", **kw) -> Decision:
    severity = "info" if outcome == "allow" else outcome
    base = dict(source="detector.test", outcome=outcome, reason="why", ts=1,
                subject="@a:localhost", room_id="!r:localhost",
                signals=(Signal("detector.test", severity, 0.5, "why"),))  # fmt: skip
    base.update(kw)
    return Decision(**base)


def test_record_writes_the_row_and_its_ledger_record_and_alerts_after(server, alerts):
    hs = server.hs
    did = on_server(server, hs.guard.record(decision("hold", status="held")))
    row = hs.store.get_guard_decision(did)
    assert row is not None and row["status"] == "held"
    (rec,) = ledger_actions(server, "guard.decision")
    assert rec["actor"] == "server" and rec["subject"] == "@a:localhost"
    assert rec["details"]["decision_id"] == did and rec["details"]["outcome"] == "hold"
    assert hs.store.ledger_entry(row["ledger_idx"]) is not None
    on_server(server, _settle())
    assert [(k, d["decision_id"]) for k, _, d in alerts.alerts] == [("guard.hold", did)]
    assert alerts.counts == [("bastion_guard_decisions_total",
                              {"source": "detector.test", "outcome": "hold", "status": "held"})]  # fmt: skip


async def _settle() -> None:
    import asyncio

    for _ in range(5):
        await asyncio.sleep(0.01)


def test_record_in_is_part_of_the_callers_transaction(server, alerts):
    """A write that fails after record_in leaves no decision, no ledger record, no alert."""
    hs = server.hs

    def fn(conn):
        hs.guard.record_in(conn, decision("block"))
        raise MatrixError("M_UNKNOWN", "the rest of the change failed", 500)

    with pytest.raises(MatrixError):
        on_server(server, hs.store.transaction(fn))
    on_server(server, _settle())
    assert decisions(server) == [] and ledger_actions(server, "guard.decision") == []
    assert alerts.alerts == []


def test_info_decisions_are_recorded_without_alert(server, alerts):
    hs = server.hs
    on_server(server, hs.guard.record(decision("allow", status="done")))
    on_server(server, _settle())
    assert len(decisions(server)) == 1 and alerts.alerts == []


def test_rate_limits_come_first(server, client):
    src = script_detectors(server, Scripted({"x": block()}))

    def refuse(ctx):
        raise limit_exceeded(1500)

    server.hs.guard.limits.require_local_event = refuse  # type: ignore[method-assign]
    alice = client.register()
    room_id = create_room(alice)  # createRoom's own events are not asked about
    r = send(alice, room_id, "x")
    assert r.status == 429 and r.body["retry_after_ms"] == 1500
    assert src.seen == [] and decisions(server) == []


def test_rate_limits_apply_with_the_guard_disabled(tmp_path):
    from tests.support.harness import Client, ServerThread

    srv = ServerThread(tmp_path / "data", guard={"enabled": False}).start()
    try:
        seen = []
        srv.hs.guard.limits.require_local_event = seen.append  # type: ignore[method-assign]
        alice = Client(srv.base_url).register()
        room_id = create_room(alice)
        assert send(alice, room_id, "hi").status == 200
        assert [(c.etype, c.room_id) for c in seen] == [("m.room.message", room_id)]
    finally:
        srv.stop()


def test_room_settings_are_cached_and_follow_a_change(server):
    hs = server.hs
    calls = []
    real = hs.store.get_guard_room_settings

    def counting(room_id):
        calls.append(room_id)
        return real(room_id)

    hs.store.get_guard_room_settings = counting  # type: ignore[method-assign]
    assert call_on_server(server, hs.guard.room_settings, "!r:localhost") == {}
    assert call_on_server(server, hs.guard.room_settings, "!r:localhost") == {}
    assert calls == ["!r:localhost"]
    settings = {"classifier": {"block_per_mille": 990}}
    on_server(server, hs.store.transaction(
        lambda conn: hs.guard.set_room_settings_in(conn, "!r:localhost", settings, 1)))  # fmt: skip
    on_server(server, _settle())
    assert call_on_server(server, hs.guard.room_settings, "!r:localhost") == {
        "classifier": {"block_per_mille": 990, "block": 0.99}}  # fmt: skip
    with pytest.raises(ValueError, match="settings.colour|colour"):
        on_server(server, hs.store.transaction(
            lambda conn: hs.guard.set_room_settings_in(conn, "!r:localhost", {"colour": 1}, 1)))  # fmt: skip


# -- federated events --------------------------------------------------------------------------
def remote_pdu(body: str, room_id: str = "!r:localhost") -> dict:
    return {"type": "m.room.message", "room_id": room_id, "sender": "@eve:evil.example",
            "content": {"msgtype": "m.text", "body": body}, "origin_server_ts": 1}  # fmt: skip


def test_remote_event_check_soft_fails_blocked_and_held(server, alerts):
    hs = server.hs
    script_detectors(server, Scripted({"BLOCK": block(action="server_acl"), "HOLD": hold(),
                                       "WARN": warn()}))  # fmt: skip
    for body, reason, status in (("BLOCK", "spam", "done"), ("HOLD", "looks like spam", "open"),
                                 ("WARN", None, "done"), ("fine", None, None)):  # fmt: skip
        check = hs.guard.remote_event_check("evil.example", remote_pdu(body), "$" + body)
        assert check is not None
        assert call_on_server(server, check, {}) == reason
        ctx = check.ctx
        assert ctx is not None and not ctx.local and ctx.origin == "evil.example"
        assert ctx.event_id == "$" + body and ctx.sender == "@eve:evil.example"
        on_server(server, check.finish())
        if status is None:
            assert all(d["event_id"] != "$" + body for d in decisions(server))
            continue
        (d,) = [d for d in decisions(server) if d["event_id"] == "$" + body]
        assert (d["status"], d["origin"]) == (status, "evil.example")
    # The ACL action found no local moderator (the room is unknown): said so.
    (blocked,) = [d for d in decisions(server) if d["event_id"] == "$BLOCK"]
    assert blocked["details"]["carried_out"]["server_acl"]["done"] is False
    assert len(decisions(server)) == 3


def test_remote_event_check_rate_limited_is_soft_failed_not_recorded(server):
    hs = server.hs
    hs.guard.limits.remote_event_allowed = lambda ctx: False  # type: ignore[method-assign]
    check = hs.guard.remote_event_check("evil.example", remote_pdu("hi"), "$1")
    assert check is not None
    assert call_on_server(server, check, {}) == "evil.example is sending too many events"
    on_server(server, check.finish())
    assert decisions(server) == []


def test_remote_event_check_in_shadow_mode_accepts_and_records(tmp_path):
    from tests.support.harness import ServerThread

    srv = ServerThread(tmp_path / "data", guard={"mode": "shadow"}).start()
    try:
        script_detectors(srv, Scripted({"BLOCK": block()}))
        check = srv.hs.guard.remote_event_check("evil.example", remote_pdu("BLOCK"), "$b")
        assert check is not None and call_on_server(srv, check, {}) is None
        on_server(srv, check.finish())
        assert [d["status"] for d in decisions(srv)] == ["shadow"]
    finally:
        srv.stop()


def test_remote_membership_refused_by_policy_or_cooling(server, client):
    hs = server.hs
    alice = client.register()
    room_id = create_room(alice, preset="public_chat")

    def policy(ctx):
        if ctx.sender == "@spammer:evil.example":
            return [Signal("policy.user", "block", 1.0, "listed as a spammer")]
        return []

    hs.guard.policy.signals = policy  # type: ignore[method-assign]
    hs.guard.cooling.refuses_join = lambda rid, uid, now: (  # type: ignore[method-assign]
        "cooling" if uid == "@joiner:other.example" else None)  # fmt: skip
    with pytest.raises(MatrixError) as e:
        on_server(server, hs.guard.check_remote_membership(
            "evil.example", room_id, "@spammer:evil.example", "invite",
            state_key=alice.user_id))  # fmt: skip
    assert e.value.errcode == "M_FORBIDDEN" and "listed as a spammer" in e.value.message
    with pytest.raises(MatrixError) as e:
        on_server(server, hs.guard.check_remote_membership(
            "other.example", room_id, "@joiner:other.example", "join"))  # fmt: skip
    assert "cooling" in e.value.message
    # A knock is not refused by cooling; a clean user passes.
    on_server(server, hs.guard.check_remote_membership(
        "other.example", room_id, "@joiner:other.example", "knock"))  # fmt: skip
    on_server(server, hs.guard.check_remote_membership(
        "other.example", room_id, "@fine:other.example", "join"))  # fmt: skip
    got = [(d["source"], d["subject"], d["origin"]) for d in decisions(server)]
    assert got == [("detector.join_wave", "@joiner:other.example", "other.example"),
                   ("policy.user", "@spammer:evil.example", "evil.example")]  # fmt: skip


def test_a_parts_matrix_error_refuses_a_local_event_and_soft_fails_a_remote_one(server, client):
    def throttle(ctx):
        raise limit_exceeded(2000, "you are sending messages too fast")

    server.hs.guard.detectors.signals = throttle  # type: ignore[method-assign]
    alice = client.register()
    room_id = create_room(alice)
    r = send(alice, room_id, "hi")
    assert r.status == 429 and r.body["retry_after_ms"] == 2000
    check = server.hs.guard.remote_event_check("evil.example", remote_pdu("hi"), "$t")
    assert check is not None
    assert call_on_server(server, check, {}) == "you are sending messages too fast"
    on_server(server, check.finish())
    assert decisions(server) == []


# -- actions -----------------------------------------------------------------------------------
def test_redact_action_redacts_the_named_events_as_the_moderator(server, client):
    alice, bob = client.register(), client.register()
    room_id = create_room(alice, preset="public_chat")
    assert bob.request("POST", f"/_matrix/client/v3/join/{room_id}", {}).status == 200
    earlier = [send(bob, room_id, f"spam {i}").body["event_id"] for i in range(3)]
    script_detectors(server, Scripted({"spam 3": Signal(
        "detector.message_flood", "block", 0.9, "flood", {"event_ids": earlier}, "redact")}))  # fmt: skip
    assert send(bob, room_id, "spam 3").status == 403
    (d,) = decisions(server)
    done = d["details"]["carried_out"]["redact"]
    assert done == {"done": True, "moderator": alice.user_id, "event_ids": earlier}
    for eid in earlier:
        ev = alice.request("GET", f"/_matrix/client/v3/rooms/{room_id}/event/{eid}").body
        assert ev["content"] == {} and "redacted_because" in ev["unsigned"]


def test_server_acl_action_and_its_reversal(server, client):
    hs = server.hs
    alice = client.register()
    room_id = create_room(alice)
    acts = hs.guard.actions
    assert on_server(server, acts.server_acl(room_id, "evil.example", deny=True))["done"]
    acl = alice.request("GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.server_acl/")
    assert acl.body["deny"] == ["evil.example"] and acl.body["allow"] == ["*"]
    again = on_server(server, acts.server_acl(room_id, "evil.example", deny=True))
    assert again["done"] is False
    own = on_server(server, acts.server_acl(room_id, hs.server_name, deny=True))
    assert own["done"] is False
    assert on_server(server, acts.server_acl(room_id, "evil.example", deny=False))["done"]
    acl = alice.request("GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.server_acl/")
    assert acl.body["deny"] == []


def test_cool_room_and_lock_actions(server, client):
    hs = server.hs
    alice, bob = client.register(), client.register()
    room_id = create_room(alice, preset="public_chat")
    started = []

    async def start(rid, until, reason):
        started.append((rid, until, reason))

    hs.guard.cooling.start = start  # type: ignore[method-assign]
    script_detectors(server, Scripted(when=lambda ctx: Signal(
        "detector.join_wave", "warn", 0.9, "60 joins in an hour", {"until_ms": 123}, "cool_room")
        if ctx.membership == "join" else None))  # fmt: skip
    assert bob.request("POST", f"/_matrix/client/v3/join/{room_id}", {}).status == 200
    assert started == [(room_id, 123, "60 joins in an hour")]
    res = on_server(server, hs.guard.actions.set_account_flag(bob.user_id, "locked", True, 1,
                                                              "server", "test"))  # fmt: skip
    assert res == {"done": True, "user_id": bob.user_id}
    assert bob.request("GET", "/_matrix/client/v3/account/whoami").body["errcode"] == (
        "M_USER_LOCKED")  # fmt: skip
    assert [x["action"] for x in ledger_actions(server, "account.lock")] == ["account.lock"]
