"""Join-wave cooling on a real server (bastion.guard.room_cooling): the join rule switched to
knock (or invite) as the room's local admin and restored after the period, the admins told, the
records, the refusal at our doors, a room without a local admin, and a restart in between."""

from __future__ import annotations

import time
import uuid

import pytest

from bastion.ledger import records
from tests.guard.core_support import V3, create_room, ledger_actions, q, send
from tests.support.accounts import call_on_server, make_user, on_server
from tests.support.harness import ServerThread


class Told:
    """Captures the notices and alerts (their transport is the notices part's)."""

    def __init__(self, server: ServerThread) -> None:
        self.notices: list[tuple[str, str, str | None]] = []
        self.alerts: list[tuple[str, str]] = []
        hs = server.hs

        async def send_notice(user_id, body, *, notice_type=None, extra=None):
            self.notices.append((user_id, body, notice_type))
            return "$notice"

        async def alert(kind, summary, details):
            self.alerts.append((kind, summary))

        hs.server_notices.send_notice = send_notice  # type: ignore[method-assign]
        hs.guard.alerts.alert = alert  # type: ignore[method-assign]


@pytest.fixture
def srv(tmp_path):
    s = ServerThread(tmp_path / "data").start()
    yield s
    s.stop()


def join_rule(server: ServerThread, room_id: str) -> str:
    ev = call_on_server(server, server.hs.rooms.current_state_event, room_id, "m.room.join_rules")
    return ev["content"]["join_rule"]


def cool(server: ServerThread, room_id: str, seconds: float, reason: str = "test wave") -> None:
    until = server.hs.now_ms() + int(seconds * 1000)
    on_server(server, server.hs.guard.cooling.start(room_id, until, reason))


def wait_for(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def join(c, room_id: str):
    return c.request("POST", f"{V3}/join/{q(room_id)}", {})


def test_cooling_switches_to_knock_tells_admins_and_reopens(srv):
    told = Told(srv)
    owner, member, outsider, guest = (make_user(srv) for _ in range(4))
    room_id = create_room(owner, preset="public_chat")
    assert join(member, room_id).status == 200
    cool(srv, room_id, 1.5)
    assert join_rule(srv, room_id) == "knock"
    refusal = join(outsider, room_id)
    assert refusal.status == 403 and "closed to new joins" in refusal.body["error"]
    # invited users still get in; members still talk
    assert owner.request("POST", f"{V3}/rooms/{q(room_id)}/invite",
                         {"user_id": guest.user_id}).status == 200  # fmt: skip
    assert join(guest, room_id).status == 200
    assert send(member, room_id, "still here").status == 200
    assert [u for u, _, _ in told.notices] == [owner.user_id]
    assert "closed to new joins" in told.notices[0][1] and "'knock'" in told.notices[0][1]
    # the cooling is alerted (and so is the refused join, a recorded block)
    assert [k for k, _ in told.alerts] == ["guard.room_cooling", "guard.block"]
    throttles = ledger_actions(srv, records.ACTION_GUARD_THROTTLE)
    assert throttles and throttles[-1]["target"] == room_id
    # the period ends: public again, recorded, the admins told
    wait_for(lambda: join_rule(srv, room_id) == "public")
    wait_for(lambda: len(told.notices) == 2)
    assert "'public' again" in told.notices[1][1]
    assert join(outsider, room_id).status == 200
    lifts = ledger_actions(srv, records.ACTION_GUARD_THROTTLE_LIFT)
    assert lifts and lifts[-1]["target"] == room_id
    assert call_on_server(srv, srv.hs.store.get_room_cooling, room_id) is None


def test_old_room_versions_cool_to_invite(srv):
    Told(srv)
    owner, outsider = make_user(srv), make_user(srv)
    room_id = create_room(owner, preset="public_chat", room_version="6")
    cool(srv, room_id, 30)
    assert join_rule(srv, room_id) == "invite"
    assert join(outsider, room_id).status == 403


def test_a_room_without_a_local_admin_is_closed_at_our_doors(srv):
    told = Told(srv)
    owner, member, outsider = make_user(srv), make_user(srv), make_user(srv)
    room_id = create_room(owner, preset="public_chat", room_version="10")
    assert join(member, room_id).status == 200
    assert owner.request("POST", f"{V3}/rooms/{q(room_id)}/leave", {}).status == 200
    cool(srv, room_id, 30)
    assert join_rule(srv, room_id) == "public"  # nobody here may change it
    r = join(outsider, room_id)
    assert r.status == 403 and "closed to new joins" in r.body["error"]
    assert told.notices == []  # no local admin to tell
    assert "only joins through this server are refused" in told.alerts[0][1]


def test_an_admin_who_changed_the_rule_meanwhile_is_not_overridden(srv):
    Told(srv)
    owner = make_user(srv)
    room_id = create_room(owner, preset="public_chat")
    cool(srv, room_id, 1.0)
    r = owner.request("PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.join_rules/",
                      {"join_rule": "public"})  # fmt: skip
    assert r.status == 200
    wait_for(lambda: call_on_server(srv, srv.hs.store.get_room_cooling, room_id) is None)
    assert join_rule(srv, room_id) == "public"


def test_cooling_survives_a_restart(tmp_path):
    data = tmp_path / "data"
    first = ServerThread(data).start()
    try:
        Told(first)
        owner = make_user(first, "owner" + uuid.uuid4().hex[:6])
        room_id = create_room(owner, preset="public_chat")
        cool(first, room_id, 3)
        assert join_rule(first, room_id) == "knock"
    finally:
        first.stop()
    second = ServerThread(data).start()
    try:
        Told(second)
        outsider = make_user(second)
        assert join(outsider, room_id).status == 403
        wait_for(lambda: join_rule(second, room_id) == "public", timeout=15)
        assert join(outsider, room_id).status == 200
    finally:
        second.stop()


def test_a_restricted_room_gets_its_allow_list_back(srv):
    Told(srv)
    owner = make_user(srv)
    space = create_room(owner, preset="public_chat", room_version="10")
    rules = {"join_rule": "restricted",
             "allow": [{"type": "m.room_membership", "room_id": space}]}  # fmt: skip
    room_id = create_room(owner, room_version="10", initial_state=[
        {"type": "m.room.join_rules", "state_key": "", "content": rules}])  # fmt: skip
    cool(srv, room_id, 1.0)
    assert join_rule(srv, room_id) == "knock"
    wait_for(lambda: join_rule(srv, room_id) == "restricted")
    ev = call_on_server(srv, srv.hs.rooms.current_state_event, room_id, "m.room.join_rules")
    assert ev["content"] == rules


def test_the_admins_are_the_local_members_who_may_change_the_join_rule(srv):
    owner, mod, member = make_user(srv), make_user(srv), make_user(srv)
    room_id = create_room(owner, preset="public_chat", room_version="10")
    for c in (mod, member):
        assert join(c, room_id).status == 200
    pl = owner.request("GET", f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels/").body
    pl["users"][mod.user_id] = 100
    r = owner.request("PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.power_levels/", pl)
    assert r.status == 200, r.body
    admins = call_on_server(srv, srv.hs.guard.cooling.admins, room_id)
    assert sorted(admins) == sorted([owner.user_id, mod.user_id])
    assert owner.request("POST", f"{V3}/rooms/{q(room_id)}/leave", {}).status == 200
    assert call_on_server(srv, srv.hs.guard.cooling.admins, room_id) == [mod.user_id]
