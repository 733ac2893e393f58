"""Two Bastion servers over TLS: a remote invite (S-S API "Inviting to a room"), a join over
federation (make_join/send_join v2), messages both ways through the transaction queue, a
leave, rejecting a remote invite (make_leave/send_leave v2), knocking (make_knock/send_knock),
restricted joins, server ACLs on every membership entry point, and backfill for /messages."""

from __future__ import annotations

import time

import pytest

from tests.support import server_pair
from tests.support.federation import https
from tests.support.guard import exempt
from tests.support.harness import Client
from tests.support.server_pair import fed, q

pair = server_pair.pair  # the fixture


def user(srv) -> Client:
    return Client(srv.base_url).register()


def sync_until(c: Client, cond, timeout: float = 20.0, since: str | None = None):
    """Sync (incrementally) until ``cond(response)`` is truthy over the responses seen."""
    deadline = time.monotonic() + timeout
    seen: list[dict] = []
    while time.monotonic() < deadline:
        query = {"timeout": "1000"}
        if since:
            query["since"] = since
        r = c.request("GET", "/_matrix/client/v3/sync", query=query)
        assert r.status == 200, r.body
        seen.append(r.body)
        since = r.body["next_batch"]
        if cond(seen):
            return seen, since
    pytest.fail(f"sync condition not met for {c.user_id}")


def timeline(seen: list[dict], room_id: str, section: str = "join") -> list[dict]:
    return [
        e
        for s in seen
        for e in s.get("rooms", {})
        .get(section, {})
        .get(room_id, {})
        .get("timeline", {})
        .get("events", [])
    ]


def bodies(seen, room_id):
    return [
        e["content"].get("body") for e in timeline(seen, room_id) if e["type"] == "m.room.message"
    ]


def create_room(c: Client, **body) -> str:
    r = c.request("POST", "/_matrix/client/v3/createRoom", body)
    assert r.status == 200, r.body
    return r.body["room_id"]


def send(c: Client, room_id: str, text: str) -> str:
    r = c.request(
        "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{time.monotonic_ns()}",
        {"msgtype": "m.text", "body": text},
    )  # fmt: skip
    assert r.status == 200, r.body
    return r.body["event_id"]


def members(c: Client, room_id: str) -> dict:
    r = c.request("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/joined_members")
    assert r.status == 200, r.body
    return r.body["joined"]


def test_invite_join_messages_leave(pair):
    a, b = pair
    alice, bob = user(a), user(b)
    room_id = create_room(alice, name="Fed room", invite=[bob.user_id])
    # The invite reaches B (PUT /v2/invite) and shows in bob's sync with stripped state.
    seen, bob_since = sync_until(bob, lambda s: any(room_id in x["rooms"]["invite"] for x in s))
    invite = next(x["rooms"]["invite"][room_id] for x in seen if room_id in x["rooms"]["invite"])
    types = {e["type"] for e in invite["invite_state"]["events"]}
    assert {"m.room.create", "m.room.name", "m.room.member"} <= types
    # A holds the invite signed by both servers.
    state = alice.request("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/state").body
    member = next(
        e for e in state if e["type"] == "m.room.member" and e["state_key"] == bob.user_id
    )
    assert member["content"]["membership"] == "invite"
    ev = a.hs.store.get_event(member["event_id"])
    assert {a.hs.server_name, b.hs.server_name} <= set(ev["signatures"])

    # bob joins over federation (through the inviter's server).
    r = bob.request("POST", f"/_matrix/client/v3/join/{q(room_id)}", {})
    assert r.status == 200, r.body
    assert set(members(bob, room_id)) == {alice.user_id, bob.user_id}
    _, alice_since = sync_until(alice, lambda s: bob.user_id in members(alice, room_id))

    # Messages both ways.
    send(alice, room_id, "hello from A")
    seen, bob_since = sync_until(
        bob, lambda s: "hello from A" in bodies(s, room_id), since=bob_since
    )
    send(bob, room_id, "hello from B")
    seen, alice_since = sync_until(
        alice, lambda s: "hello from B" in bodies(s, room_id), since=alice_since
    )
    # bob leaves; A sees it, and nothing more is sent to B.
    r = bob.request("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {})
    assert r.status == 200, r.body
    sync_until(alice, lambda s: bob.user_id not in members(alice, room_id), since=alice_since)
    assert b.hs.server_name not in a.hs.federation.sender.destinations_for_room(room_id)


def test_reject_remote_invite(pair):
    a, b = pair
    alice, bob = user(a), user(b)
    room_id = create_room(alice)
    r = alice.request(
        "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": bob.user_id}
    )
    assert r.status == 200, r.body
    _, since = sync_until(bob, lambda s: any(room_id in x["rooms"]["invite"] for x in s))
    r = bob.request("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {})
    assert r.status == 200, r.body
    sync_until(bob, lambda s: any(room_id in x["rooms"]["leave"] for x in s), since=since)
    deadline = time.monotonic() + 10
    while a.hs.rooms.membership_of(room_id, bob.user_id) != "leave":
        assert time.monotonic() < deadline, "A never saw the rejection"
        time.sleep(0.1)


def test_remote_invite_errors(pair):
    a, b = pair
    alice = user(a)
    room_id = create_room(alice)
    # An unknown user on B: B answers 404, A reports it as a refusal.
    r = alice.request("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite",
                      {"user_id": f"@nobody:{b.hs.server_name}"})  # fmt: skip
    assert r.status in (403, 404), r.body
    assert a.hs.rooms.membership_of(room_id, f"@nobody:{b.hs.server_name}") is None
    # A server that does not answer: 502, nothing stored.
    r = alice.request("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite",
                      {"user_id": "@x:127.0.0.1:1"})  # fmt: skip
    assert r.status == 502 and r.body["errcode"] == "M_UNKNOWN", r.body
    # Joining a room nobody can reach: 404.
    bob = user(b)
    r = bob.request("POST", f"/_matrix/client/v3/join/{q('!nope:127.0.0.1:1')}", {})
    assert r.status in (404, 502), r.body


def test_public_join_via_and_alias(pair):
    a, b = pair
    alice, bob = user(a), user(b)
    r = alice.request("POST", "/_matrix/client/v3/createRoom",
                      {"preset": "public_chat", "room_alias_name": "lobby"})  # fmt: skip
    room_id = r.body["room_id"]
    alias = f"#lobby:{a.hs.server_name}"
    r = bob.request("POST", f"/_matrix/client/v3/join/{q(alias)}", {})
    assert r.status == 200, r.body
    assert r.body["room_id"] == room_id
    assert bob.user_id in members(alice, room_id) or sync_until(
        alice, lambda s: bob.user_id in members(alice, room_id)
    )


def _signed_get(srv_from, srv_to, test_ca, path):
    return fed(test_ca, srv_from, srv_to, "GET", path)


def test_make_join_checks(pair, test_ca):
    a, b = pair
    alice = user(a)
    room_id = create_room(alice, preset="public_chat")
    bob_id = f"@bob:{b.hs.server_name}"
    base = f"/_matrix/federation/v1/make_join/{q(room_id)}/{q(bob_id)}"
    s, body = _signed_get(b, a, test_ca, base + "?ver=12&ver=11")
    assert s == 200, body
    assert body["room_version"] == "12"
    ev = body["event"]
    assert ev["type"] == "m.room.member" and ev["sender"] == bob_id and ev["state_key"] == bob_id
    assert ev["content"]["membership"] == "join" and ev["prev_events"] and ev["auth_events"]
    # Unsupported version: 400 M_INCOMPATIBLE_ROOM_VERSION with the room's version.
    s, body = _signed_get(b, a, test_ca, base + "?ver=10")
    assert (s, body["errcode"], body["room_version"]) == (400, "M_INCOMPATIBLE_ROOM_VERSION", "12")
    s, body = _signed_get(b, a, test_ca, base)  # default ver=[1]
    assert (s, body["errcode"]) == (400, "M_INCOMPATIBLE_ROOM_VERSION")
    # A user of another server: 403.
    other = f"/_matrix/federation/v1/make_join/{q(room_id)}/{q('@x:elsewhere.example')}?ver=12"
    s, body = _signed_get(b, a, test_ca, other)
    assert (s, body["errcode"]) == (403, "M_FORBIDDEN")
    # Unknown room: 404.
    s, body = _signed_get(b, a, test_ca,
                          f"/_matrix/federation/v1/make_join/{q('!x:' + a.hs.server_name)}/{q(bob_id)}?ver=12")  # fmt: skip
    assert (s, body["errcode"]) == (404, "M_NOT_FOUND")
    # Invite-only room: 403 for an uninvited user.
    private = create_room(alice)
    s, body = _signed_get(b, a, test_ca,
                          f"/_matrix/federation/v1/make_join/{q(private)}/{q(bob_id)}?ver=12")  # fmt: skip
    assert (s, body["errcode"]) == (403, "M_FORBIDDEN")
    # make_knock requires ver; make_leave of a non-member is refused by the auth rules.
    s, body = _signed_get(b, a, test_ca,
                          f"/_matrix/federation/v1/make_knock/{q(private)}/{q(bob_id)}")  # fmt: skip
    assert (s, body["errcode"]) == (400, "M_MISSING_PARAM")
    # Unauthenticated: 401.
    s, body = https(test_ca, a.hs.federation_bound_port, "GET", base + "?ver=12")
    assert s == 401


def test_server_acl_denies_membership(pair, test_ca):
    a, b = pair
    alice, bob = user(a), user(b)
    room_id = create_room(alice, preset="public_chat")
    r = alice.request(
        "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.server_acl/",
        {"allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": True},
    )  # fmt: skip
    assert r.status == 200, r.body
    bob_id = bob.user_id
    for path in (
        f"/_matrix/federation/v1/make_join/{q(room_id)}/{q(bob_id)}?ver=12",
        f"/_matrix/federation/v1/make_leave/{q(room_id)}/{q(bob_id)}",
        f"/_matrix/federation/v1/make_knock/{q(room_id)}/{q(bob_id)}?ver=12",
    ):
        s, body = _signed_get(b, a, test_ca, path)
        assert (s, body["errcode"]) == (403, "M_FORBIDDEN"), (path, body)
    r = bob.request("POST", f"/_matrix/client/v3/join/{q(room_id)}",
                    {}, query={"via": a.hs.server_name})  # fmt: skip
    assert r.status == 403, r.body


def test_knock_over_federation(pair):
    a, b = pair
    alice, bob = user(a), user(b)
    room_id = create_room(alice, initial_state=[
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}},
    ], name="Knock here")  # fmt: skip
    r = bob.request("POST", f"/_matrix/client/v3/knock/{q(room_id)}", {"reason": "let me in"},
                    query={"via": a.hs.server_name})  # fmt: skip
    assert r.status == 200, r.body
    seen, _ = sync_until(bob, lambda s: any(room_id in x["rooms"]["knock"] for x in s))
    knock = next(x["rooms"]["knock"][room_id] for x in seen if room_id in x["rooms"]["knock"])
    assert "m.room.create" in {e["type"] for e in knock["knock_state"]["events"]}
    deadline = time.monotonic() + 10
    while a.hs.rooms.membership_of(room_id, bob.user_id) != "knock":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # Alice accepts the knock with an invite; bob joins.
    r = alice.request(
        "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": bob.user_id}
    )
    assert r.status == 200, r.body
    r = bob.request(
        "POST", f"/_matrix/client/v3/join/{q(room_id)}", {}, query={"via": a.hs.server_name}
    )
    assert r.status == 200, r.body
    assert bob.user_id in members(alice, room_id)


def test_restricted_join_via_authorising_server(pair):
    a, b = pair
    alice, bob = user(a), user(b)
    space = create_room(alice, preset="public_chat")
    room_id = create_room(alice, initial_state=[{
        "type": "m.room.join_rules", "state_key": "",
        "content": {"join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}]},
    }])  # fmt: skip
    # Not in the allowed room yet: refused.
    r = bob.request(
        "POST", f"/_matrix/client/v3/join/{q(room_id)}", {}, query={"via": a.hs.server_name}
    )
    assert r.status == 403, r.body
    r = bob.request(
        "POST", f"/_matrix/client/v3/join/{q(space)}", {}, query={"via": a.hs.server_name}
    )
    assert r.status == 200, r.body
    r = bob.request(
        "POST", f"/_matrix/client/v3/join/{q(room_id)}", {}, query={"via": a.hs.server_name}
    )
    assert r.status == 200, r.body
    state = alice.request("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/state").body
    join = next(e for e in state if e["type"] == "m.room.member" and e["state_key"] == bob.user_id)
    assert join["content"]["join_authorised_via_users_server"] == alice.user_id
    pdu = a.hs.store.get_event(join["event_id"])
    assert {a.hs.server_name, b.hs.server_name} <= set(pdu["signatures"])


def test_backfill_on_messages(pair):
    a, b = pair
    alice, bob = user(a), user(b)
    exempt(a, alice)  # 30 messages at once: history for the backfill, bulk by design
    room_id = create_room(alice, preset="public_chat")
    for i in range(30):
        send(alice, room_id, f"old {i}")
    r = bob.request(
        "POST", f"/_matrix/client/v3/join/{q(room_id)}", {}, query={"via": a.hs.server_name}
    )
    assert r.status == 200, r.body
    r = bob.request("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages",
                    query={"dir": "b", "limit": "20"})  # fmt: skip
    assert r.status == 200, r.body
    got = [e["content"].get("body") for e in r.body["chunk"] if e["type"] == "m.room.message"]
    assert got[:3] == ["old 29", "old 28", "old 27"], got


def _signed_put(srv_from, srv_to, test_ca, path, body):
    return fed(test_ca, srv_from, srv_to, "PUT", path, body)


def test_send_join_and_invite_refuse_bad_events(pair, test_ca):
    from bastion.core.events import compute_event_id, sign_event

    a, b = pair
    alice = user(a)
    room_id = create_room(alice, preset="public_chat")
    bob_id = f"@bob:{b.hs.server_name}"
    s, tpl = _signed_get(b, a, test_ca,
                         f"/_matrix/federation/v1/make_join/{q(room_id)}/{q(bob_id)}?ver=12")  # fmt: skip
    assert s == 200, tpl
    sk = b.hs.signing_key
    ev = sign_event(tpl["event"], "12", b.hs.server_name, sk.key_id, sk.key)
    eid = compute_event_id(ev, "12")
    path = f"/_matrix/federation/v2/send_join/{q(room_id)}/"
    # Wrong event ID in the path; not JSON; a membership other than join; signed by nobody.
    s, body = _signed_put(b, a, test_ca, path + q("$" + "A" * 43), ev)
    assert (s, body["errcode"]) == (400, "M_INVALID_PARAM"), body
    leave = sign_event({**tpl["event"], "content": {"membership": "leave"}}, "12",
                       b.hs.server_name, sk.key_id, sk.key)  # fmt: skip
    s, body = _signed_put(b, a, test_ca, path + q(compute_event_id(leave, "12")), leave)
    assert (s, body["errcode"]) == (400, "M_INVALID_PARAM"), body
    forged = {**ev, "signatures": {b.hs.server_name: {sk.key_id: "A" * 86}}}
    s, body = _signed_put(b, a, test_ca, path + q(eid), forged)
    assert (s, body["errcode"]) == (400, "M_INVALID_PARAM"), body
    s, body = _signed_put(b, a, test_ca, path + q(eid), [1, 2])
    assert s == 400, body
    assert a.hs.rooms.membership_of(room_id, bob_id) is None
    # The real one is accepted and answered with the state and auth chain.
    s, body = _signed_put(b, a, test_ca, path + q(eid), ev)
    assert s == 200, body
    assert body["members_omitted"] is False and body["origin"] == a.hs.server_name
    types = {e["type"] for e in body["state"]}
    assert {"m.room.create", "m.room.power_levels", "m.room.join_rules"} <= types
    assert a.hs.rooms.membership_of(room_id, bob_id) == "join"

    # /v2/invite as the invitee's server (B): version, invitee and invite_room_state checks.
    bob = user(b)
    ipath = f"/_matrix/federation/v2/invite/{q(room_id)}/"
    sk_a = a.hs.signing_key
    inv = sign_event({**tpl["event"], "sender": alice.user_id, "state_key": bob.user_id,
                      "content": {"membership": "invite"}}, "12", a.hs.server_name,
                     sk_a.key_id, sk_a.key)  # fmt: skip
    iid = compute_event_id(inv, "12")
    s, body = _signed_put(a, b, test_ca, ipath + q(iid),
                          {"room_version": "2", "event": inv, "invite_room_state": []})  # fmt: skip
    assert (s, body["errcode"]) == (400, "M_INCOMPATIBLE_ROOM_VERSION"), body
    s, body = _signed_put(a, b, test_ca, ipath + q(iid),
                          {"room_version": "12", "event": inv, "invite_room_state": []})  # fmt: skip
    assert (s, body["errcode"]) == (400, "M_INVALID_PARAM"), body  # no m.room.create
    create = a.hs.store.get_event("$" + room_id[1:])
    s, body = _signed_put(a, b, test_ca, ipath + q(iid),
                          {"room_version": "12", "event": inv, "invite_room_state": [create]})  # fmt: skip
    assert s == 200, body
    assert b.hs.server_name in body["event"]["signatures"]
