"""Policy lists on a real server: an admin makes a policy room, subscribes to it through the
admin API, and its rules are enforced at once on joins, invites and federation origins; a
rule removed (empty content) is lifted; every subscription change and decision is recorded."""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid

import pytest

from bastion.guard.signals import EventContext
from tests.support.accounts import assert_error, call_on_server, db_rows, make_user
from tests.support.forge import push
from tests.support.harness import ServerThread
from tests.support.rooms import V3, create_room, join
from tests.support.server_pair import fed

API = "/_bastion/admin/v1/guard/policy_lists"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


@pytest.fixture
def server(tmp_path):
    srv = ServerThread(tmp_path / "hs").start()
    yield srv
    srv.stop()


def put_rule(client, room_id: str, kind: str, key: str, content: dict) -> None:
    r = client.request(
        "PUT", f"{V3}/rooms/{q(room_id)}/state/m.policy.rule.{kind}/{q(key)}", content
    )
    assert r.status == 200, r.body


def ban(entity: str, reason: str) -> dict:
    return {"entity": entity, "recommendation": "m.ban", "reason": reason}


def policy_room(admin) -> str:
    room_id = create_room(admin, preset="private_chat", name="ban list")
    put_rule(admin, room_id, "user", "spam", ban("@spam*:localhost", "spam bots"))
    put_rule(admin, room_id, "server", "evil", ban("evil.example", "abuse"))
    return room_id


def action_records(server, action: str) -> list[dict]:
    def read() -> list[dict]:
        out = []
        for row in server.hs.store.ledger_iter_entries():
            if row.kind == "action":
                entry = json.loads(row.entry)
                if entry.get("action") == action:
                    out.append(entry)
        return out

    return call_on_server(server, read)


def ctx(sender: str, room_id: str, membership: str, state_key: str | None = None, **kw):
    return EventContext(
        sender=sender, room_id=room_id, etype="m.room.member",
        content={"membership": membership}, state_key=state_key or sender, now_ms=0,
        local=kw.pop("local", True), origin=kw.pop("origin", "localhost"), **kw,
    )  # fmt: skip


def signals(server, context):
    return call_on_server(server, server.hs.guard.policy.signals, context)


def test_subscribe_list_and_rules_take_effect_at_once(server):
    admin = make_user(server, "admin", admin=True)
    room_id = policy_room(admin)
    public = create_room(admin)

    # Before subscribing, nothing is banned.
    assert signals(server, ctx("@spam1:localhost", public, "join")) == []

    r = admin.request("PUT", f"{API}/{q(room_id)}", {"shortcode": "spamlist", "reason": "trust"})
    assert r.status == 200, r.body
    assert r.body["held"] is True and r.body["shortcode"] == "spamlist"
    assert r.body["rule_counts"] == {"user": 1, "room": 0, "server": 1}
    assert {b.get("entity") for b in r.body["bans"]} == {"@spam*:localhost", "evil.example"}
    records = action_records(server, "guard.policy_list")
    assert len(records) == 1
    assert records[0]["target"] == room_id and records[0]["actor"] == admin.user_id
    assert records[0]["reason"] == "trust"

    r = admin.request("GET", API)
    assert r.status == 200, r.body
    (entry,) = r.body["lists"]
    assert entry["room_id"] == room_id and entry["source"] == "admin"
    assert entry["rule_counts"]["user"] == 1

    # A join by a banned user: blocked with a reason the user can read.
    (sig,) = signals(server, ctx("@spam1:localhost", public, "join"))
    assert (sig.source, sig.severity) == ("policy.user", "block")
    assert "spamlist" in sig.reason and "spam bots" in sig.reason
    assert sig.evidence["rule"]["entity"] == "@spam*:localhost"
    assert signals(server, ctx("@alice:localhost", public, "join")) == []
    # An invite to a banned user, and one from a banned server.
    (sig,) = signals(server, ctx(admin.user_id, public, "invite", "@spammer:localhost"))
    assert sig.source == "policy.user" and "an invite to @spammer:localhost" in sig.reason
    sigs = signals(server, ctx("@x:evil.example", public, "invite", "@bob:localhost",
                               local=False, origin="evil.example"))  # fmt: skip
    assert [s.source for s in sigs] == ["policy.server"]
    # A federated message from a banned server: soft-failed by the guard; a local one passes.
    msg = EventContext("@x:evil.example:8448", public, "m.room.message", {"body": "hi"}, None,
                       0, False, "evil.example:8448")  # fmt: skip
    assert [s.source for s in signals(server, msg)] == ["policy.server"]
    assert call_on_server(server, server.hs.guard.policy.origin_banned, "evil.example:8448")
    assert call_on_server(server, server.hs.guard.policy.origin_banned, "good.example") is None
    # Leaving is never refused.
    assert signals(server, ctx("@spam1:localhost", public, "leave")) == []

    # A new rule takes effect at once; a rule replaced by empty content is lifted.
    assert signals(server, ctx("@flood:localhost", public, "join")) == []
    put_rule(admin, room_id, "user", "flood", ban("@flood:localhost", "flooding"))
    assert [s.source for s in signals(server, ctx("@flood:localhost", public, "join"))] == [
        "policy.user"
    ]
    put_rule(admin, room_id, "user", "spam", {})
    assert signals(server, ctx("@spam1:localhost", public, "join")) == []
    # A banned room, by ID and by a local alias.
    put_rule(admin, room_id, "room", "bad", ban(public, "bad room"))
    sigs = signals(server, ctx("@alice:localhost", public, "join"))
    assert [s.source for s in sigs] == ["policy.room"]
    aliased = create_room(admin, room_alias_name="warez")
    assert signals(server, ctx("@alice:localhost", aliased, "join")) == []
    put_rule(admin, room_id, "room", "warez", ban("#warez:localhost", "piracy"))
    (sig,) = signals(server, ctx("@alice:localhost", aliased, "join"))
    assert sig.source == "policy.room" and sig.evidence["rule"]["alias"] == "#warez:localhost"

    # Unsubscribing lifts every rule of the list.
    r = admin.request("DELETE", f"{API}/{q(room_id)}")
    assert r.status == 200, r.body
    assert signals(server, ctx("@flood:localhost", public, "join")) == []
    assert len(action_records(server, "guard.policy_list")) == 2
    assert admin.request("GET", API).body == {"lists": []}
    assert_error(admin.request("DELETE", f"{API}/{q(room_id)}"), 404, "M_NOT_FOUND")


def test_admin_api_refuses_junk_and_non_admins(server):
    admin = make_user(server, "admin", admin=True)
    user = make_user(server, "user")
    room_id = policy_room(admin)
    assert_error(user.request("GET", API), 403, "M_FORBIDDEN")
    assert_error(user.request("PUT", f"{API}/{q(room_id)}", {}), 403, "M_FORBIDDEN")
    assert_error(user.request("DELETE", f"{API}/{q(room_id)}"), 403, "M_FORBIDDEN")
    assert_error(admin.request("PUT", f"{API}/{q('#alias:localhost')}", {}), 400, "M_INVALID_PARAM")
    assert_error(admin.request("PUT", f"{API}/{q('!x')}", {}), 400, "M_INVALID_PARAM")
    r = admin.request("PUT", f"{API}/{q(room_id)}", {"shortcode": 5})
    assert_error(r, 400, "M_BAD_JSON")
    r = admin.request("PUT", f"{API}/{q(room_id)}", {"shortcode": "x" * 65})
    assert_error(r, 400, "M_INVALID_PARAM")
    r = admin.request("PUT", f"{API}/{q(room_id)}", raw=b"[1]")
    assert_error(r, 400, "M_BAD_JSON")
    # A room the server does not hold: refused, saying what to do.
    r = admin.request("PUT", f"{API}/{q('!nowhere:elsewhere.example')}", {})
    assert_error(r, 403, "M_FORBIDDEN")
    assert "join it with a local account" in r.body["error"]
    assert admin.request("GET", API).body == {"lists": []}
    assert action_records(server, "guard.policy_list") == []
    # Every admin call is recorded, the refused ones too.
    routes = [r["details"]["route"] for r in action_records(server, "admin.request")]
    assert f"GET {API}" in routes


def test_lists_from_the_config_file(tmp_path):
    admin_srv = ServerThread(tmp_path / "a").start()
    try:
        admin = make_user(admin_srv, "admin", admin=True)
        room_id = policy_room(admin)
    finally:
        admin_srv.stop()
    srv = ServerThread(tmp_path / "a", guard={"policy": {"lists": [room_id]}}).start()
    try:
        admin = make_user(srv, "admin2", admin=True)
        (entry,) = admin.request("GET", API).body["lists"]
        assert entry["source"] == "config" and entry["held"] is True
        (sig,) = signals(srv, ctx("@spambot:localhost", "!r:localhost", "join"))
        assert sig.source == "policy.user"
        # A list from the config file cannot be removed through the API.
        assert_error(admin.request("DELETE", f"{API}/{q(room_id)}"), 403, "M_FORBIDDEN")
    finally:
        srv.stop()


def test_banned_users_join_and_invite_are_refused_and_recorded(server):
    admin = make_user(server, "admin", admin=True)
    room_id = policy_room(admin)
    assert admin.request("PUT", f"{API}/{q(room_id)}", {"shortcode": "spamlist"}).status == 200
    public = create_room(admin)
    spammer = make_user(server, "spam" + uuid.uuid4().hex[:6])
    friend = make_user(server, "friend")

    r = spammer.request("POST", f"{V3}/join/{q(public)}", {})
    assert_error(r, 403, "M_FORBIDDEN")
    assert "banned by the policy list spamlist" in r.body["error"]
    assert "spam bots" in r.body["error"]
    r = admin.request("POST", f"{V3}/rooms/{q(public)}/invite", {"user_id": spammer.user_id})
    assert_error(r, 403, "M_FORBIDDEN")
    assert "banned by the policy list spamlist" in r.body["error"]
    join(friend, public)  # others are not affected

    rows = db_rows(server, "SELECT source, outcome, subject, room_id FROM guard_decisions")
    sources = [(r["source"], r["outcome"], r["room_id"]) for r in rows]
    assert ("policy.user", "block", public) in sources
    assert any(r["subject"] in (spammer.user_id, admin.user_id) for r in rows)
    assert action_records(server, "guard.decision")

    # Lifting the rule lets the user in.
    put_rule(admin, room_id, "user", "spam", {})
    join(spammer, public)


def test_banned_origin_transaction_is_refused(tmp_path, test_ca):
    from tests.support.federation import start_fed_server

    a = start_fed_server(tmp_path, test_ca, "a")
    b = start_fed_server(tmp_path, test_ca, "b")
    try:
        admin = make_user(a, "admin", admin=True)
        room_id = create_room(admin, preset="private_chat")
        b_host = b.hs.server_name.rsplit(":", 1)[0]
        put_rule(admin, room_id, "server", "b", ban(b.hs.server_name, "hostile server"))
        assert b_host == "127.0.0.1"
        # Before subscribing: b's transactions are accepted.
        status, body = push(b, a.hs.server_name, [])
        assert status == 200, body
        assert admin.request("PUT", f"{API}/{q(room_id)}", {"shortcode": "servers"}).status == 200
        status, body = push(b, a.hs.server_name, [])
        assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
        assert "banned by the policy list servers" in body["error"]
        path = f"/_matrix/federation/v1/query/profile?user_id={q(admin.user_id)}"
        status, body = fed(test_ca, b, a, "GET", path)
        assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
        # The rule names the host: the server itself (same host, another port) is never banned,
        # and a's own requests to b are not affected by a's lists.
        bob = make_user(b, "bob")
        status, body = fed(test_ca, a, b, "GET", f"/_matrix/federation/v1/query/profile"
                           f"?user_id={q(bob.user_id)}")  # fmt: skip
        assert status == 200, body
        # Lifted at once when the rule is removed.
        put_rule(admin, room_id, "server", "b", {})
        status, body = push(b, a.hs.server_name, [])
        assert status == 200, body
    finally:
        a.stop()
        b.stop()


def test_server_acl_sweep_denies_banned_servers_but_never_this_one(tmp_path):
    srv = ServerThread(tmp_path / "hs", guard={"policy": {"server_acl": True}}).start()
    try:
        admin = make_user(srv, "admin", admin=True)
        room = create_room(admin)
        # A room where no local user has the power to change the ACL (v10: no creator power).
        theirs = create_room(admin, room_version="10", power_level_content_override={
            "events": {"m.room.server_acl": 101}})  # fmt: skip
        lists = create_room(admin, preset="private_chat")
        put_rule(admin, lists, "server", "evil", ban("evil.example", "abuse"))
        put_rule(admin, lists, "server", "globs", ban("*.spam.example", "spam"))
        put_rule(admin, lists, "server", "all", ban("*", "hostile: would cut us off"))
        put_rule(admin, lists, "server", "us", ban("local?ost", "hostile too"))
        put_rule(admin, lists, "server", "hashed", {
            "hashes": {"sha256": "VPqwbUV7mMMkOVto3kPwsNXXiALMs7VCKWh3OeqqjGs="},
            "recommendation": "m.ban"})  # fmt: skip
        assert admin.request("PUT", f"{API}/{q(lists)}", {}).status == 200

        def deny(room_id: str) -> list:
            r = admin.request("GET", f"{V3}/rooms/{q(room_id)}/state/m.room.server_acl/")
            return r.body.get("deny", []) if r.status == 200 else []

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(deny(room)) < 2:
            time.sleep(0.1)
        assert sorted(deny(room)) == ["*.spam.example", "evil.example"]
        assert sorted(deny(lists)) == ["*.spam.example", "evil.example"]
        assert deny(theirs) == []
        rows = db_rows(srv, "SELECT source, room_id, actions, origin FROM guard_decisions"
                            " WHERE source = 'policy.server'")  # fmt: skip
        assert {(r["room_id"], r["origin"]) for r in rows} >= {(room, "evil.example")}
        assert all(json.loads(r["actions"]) == ["server_acl"] for r in rows)
        # A later rule is swept too.
        put_rule(admin, lists, "server", "late", ban("late.example", "late"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "late.example" not in deny(room):
            time.sleep(0.1)
        assert "late.example" in deny(room)
        r = admin.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/t1",
                          {"msgtype": "m.text", "body": "still here"})  # fmt: skip
        assert r.status == 200, r.body
    finally:
        srv.stop()


def test_a_server_ban_taken_off_every_list_is_taken_out_of_the_acls_the_guard_wrote(tmp_path):
    """Lifting: the guard removes a server from the deny lists it added it to once no rule
    bans it any more; an entry the room's moderators wrote themselves stays."""
    srv = ServerThread(tmp_path / "hs", guard={"policy": {"server_acl": True}}).start()
    try:
        admin = make_user(srv, "admin", admin=True)
        room = create_room(admin)
        acl = f"{V3}/rooms/{q(room)}/state/m.room.server_acl/"
        # The room's own moderators deny kept.example themselves.
        r = admin.request("PUT", acl, {"allow": ["*"], "deny": ["kept.example"]})
        assert r.status == 200, r.body
        lists = create_room(admin, preset="private_chat")
        put_rule(admin, lists, "server", "evil", ban("evil.example", "abuse"))
        put_rule(admin, lists, "server", "evil-again", ban("evil.example", "abuse, again"))
        put_rule(admin, lists, "server", "kept", ban("kept.example", "abuse"))
        assert admin.request("PUT", f"{API}/{q(lists)}", {}).status == 200

        def deny() -> list:
            return admin.request("GET", acl).body.get("deny", [])

        def wait(done) -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not done():
                time.sleep(0.1)

        wait(lambda: "evil.example" in deny())
        assert sorted(deny()) == ["evil.example", "kept.example"]
        # One of two rules banning it is taken off: still banned.
        put_rule(admin, lists, "server", "evil", {})
        put_rule(admin, lists, "server", "kept", {})
        time.sleep(1.0)
        assert sorted(deny()) == ["evil.example", "kept.example"]
        # The last one: lifted where the guard put it; the moderators' own entry stays.
        put_rule(admin, lists, "server", "evil-again", {})
        wait(lambda: "evil.example" not in deny())
        assert deny() == ["kept.example"]

        def lifts() -> list:
            return db_rows(srv, "SELECT outcome, room_id, origin, details FROM guard_decisions"
                                " WHERE source = 'policy.server' AND outcome = 'allow'")  # fmt: skip

        # (the list's own room got both bans from the guard: both are lifted there; the lift
        # runs as a task, room after room)
        wait(lambda: len(lifts()) >= 3)
        rows = lifts()
        assert sorted((r["room_id"], r["origin"]) for r in rows) == sorted(
            [(room, "evil.example"), (lists, "evil.example"), (lists, "kept.example")]
        )
        assert all(json.loads(r["details"])["lifted"] is True for r in rows)
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("guard", "expected"),
    [
        ({"policy": {"invites": False}}, {"invite": [], "join": ["policy.user"]}),
        ({"policy": {"joins": False}}, {"invite": ["policy.user"], "join": []}),
        ({"policy": {"federation_origins": False}}, {"origin": None}),
        ({"policy": {"events": False}}, {"remote": []}),
        ({"enabled": False}, {"invite": [], "join": [], "origin": None, "remote": []}),
        ({}, {"invite": ["policy.user"], "join": ["policy.user"], "remote": ["policy.server"]}),
    ],
)
def test_what_is_enforced_where_follows_the_config(tmp_path, guard, expected):
    srv = ServerThread(tmp_path / "hs", guard=guard).start()
    try:
        admin = make_user(srv, "admin", admin=True)
        room_id = policy_room(admin)
        assert admin.request("PUT", f"{API}/{q(room_id)}", {}).status == 200
        seen = {
            "invite": signals(srv, ctx(admin.user_id, "!r:localhost", "invite", "@spam1:localhost")),
            "join": signals(srv, ctx("@spam1:localhost", "!r:localhost", "join")),
            "remote": signals(srv, EventContext(
                "@x:evil.example", "!r:localhost", "m.room.message", {"body": "hi"}, None, 0,
                False, "evil.example")),
        }  # fmt: skip
        got = {k: [s.source for s in v] for k, v in seen.items()}
        got["origin"] = call_on_server(srv, srv.hs.guard.policy.origin_banned, "evil.example")
        for key, value in expected.items():
            assert got[key] == value, (key, got)
    finally:
        srv.stop()


def test_policy_lists_on_federated_joins_and_events(tmp_path, test_ca):
    """A's list bans a user of B: that user's join over federation is refused at make_join,
    and once a user of B already in the room is banned, their events are soft-failed on A
    (stored, not served to A's users) and recorded; B's other users are not affected."""
    from tests.guard.core_support import bodies, send
    from tests.support.federation import start_fed_server
    from tests.support.harness import Client
    from tests.support.server_pair import FAST, wait_for

    a = start_fed_server(tmp_path, test_ca, "a", **FAST)
    b = start_fed_server(tmp_path, test_ca, "b", **FAST)
    try:
        alice = make_user(a, "alice", admin=True)
        bob = Client(b.base_url).register("bob")
        mallory = Client(b.base_url).register("mallory")
        lists = create_room(alice, preset="private_chat")
        put_rule(alice, lists, "user", "m", ban(f"@mallory:{b.hs.server_name}", "spammer"))
        assert alice.request("PUT", f"{API}/{q(lists)}", {"shortcode": "fedlist"}).status == 200
        room_id = create_room(alice)
        # B is not in the room yet: mallory's join goes through make_join on A, refused.
        r = mallory.request("POST", f"{V3}/join/{q(room_id)}", {},
                            query={"via": a.hs.server_name})  # fmt: skip
        assert r.status == 403, r.body
        assert "fedlist" in r.body.get("error", ""), r.body
        join_via = bob.request("POST", f"{V3}/join/{q(room_id)}", {},
                               query={"via": a.hs.server_name})  # fmt: skip
        assert join_via.status == 200, join_via.body
        wait_for(lambda: bob.user_id in call_on_server(a, a.hs.store.get_joined_users, room_id))

        # bob, already joined, is banned now: his next message is soft-failed on A.
        put_rule(alice, lists, "user", "b", ban("@bob:*", "turned spammer"))
        bad = send(bob, room_id, "buy now")
        assert bad.status == 200  # B's guard has no list
        good = send(alice, room_id, "after")
        assert good.status == 200
        wait_for(lambda: "after" in bodies(bob, room_id))
        time.sleep(0.5)
        assert "buy now" not in bodies(alice, room_id)
        meta = call_on_server(a, a.hs.store.get_event_meta, [bad.body["event_id"]])
        assert meta[bad.body["event_id"]].soft_failed
        rows = db_rows(a, "SELECT source, subject, origin, event_id FROM guard_decisions"
                          " WHERE source = 'policy.user' ORDER BY id")  # fmt: skip
        got = [(r["subject"], r["origin"]) for r in rows]
        assert (mallory.user_id, b.hs.server_name) in got
        assert any(r["event_id"] == bad.body["event_id"] for r in rows)
    finally:
        a.stop()
        b.stop()
