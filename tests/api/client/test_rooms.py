"""Rooms: createRoom, membership, sending, state, history, redaction, aliases, directory."""

from __future__ import annotations

import pytest

from tests.support.guard import exempt

V3 = "/_matrix/client/v3"


def create(c, **body):
    r = c.request("POST", V3 + "/createRoom", body)
    assert r.status == 200, r.body
    return r.body["room_id"]


def send(c, room_id, body=None, txn=None, etype="m.room.message"):
    import uuid

    txn = txn or uuid.uuid4().hex
    return c.request(
        "PUT",
        f"{V3}/rooms/{room_id}/send/{etype}/{txn}",
        body or {"msgtype": "m.text", "body": "x"},
    )


def state(c, room_id):
    r = c.request("GET", f"{V3}/rooms/{room_id}/state")
    assert r.status == 200, r.body
    return {(e["type"], e["state_key"]): e for e in r.body}


@pytest.fixture
def alice(client):
    return client.register()


@pytest.fixture
def bob(client):
    return client.register()


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_create_room_versions_and_event_order(alice, bob, version):
    room_id = create(
        alice, room_version=version, name="Room", topic="About", invite=[bob.user_id],
        preset="private_chat", room_alias_name=f"r{version}",
        initial_state=[{"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
    )  # fmt: skip
    if version == "12":
        assert ":" not in room_id and len(room_id) == 44
    else:
        assert room_id.endswith(":localhost")
    r = alice.request("GET", f"{V3}/rooms/{room_id}/messages", query={"dir": "f", "limit": "50"})
    assert r.status == 200
    types = [e["type"] for e in r.body["chunk"]]
    assert types == [
        "m.room.create", "m.room.member", "m.room.power_levels", "m.room.canonical_alias",
        "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
        "m.room.encryption", "m.room.name", "m.room.topic", "m.room.member",
    ]  # fmt: skip
    create_ev = r.body["chunk"][0]
    assert create_ev["room_id"] == room_id
    assert create_ev["content"]["room_version"] == version
    st = state(alice, room_id)
    pl = st[("m.room.power_levels", "")]["content"]
    if version == "12":
        assert alice.user_id not in pl["users"]
        assert pl["events"]["m.room.tombstone"] == 150
        assert "creator" not in create_ev["content"]
    else:
        assert pl["users"][alice.user_id] == 100
    assert st[("m.room.member", bob.user_id)]["content"]["membership"] == "invite"
    assert st[("m.room.join_rules", "")]["content"]["join_rule"] == "invite"


def test_create_room_v12_trusted_private_chat_additional_creators(alice, bob):
    room_id = create(alice, room_version="12", preset="trusted_private_chat", invite=[bob.user_id],
                     is_direct=True)  # fmt: skip
    st = state(alice, room_id)
    assert st[("m.room.create", "")]["content"]["additional_creators"] == [bob.user_id]
    assert st[("m.room.member", bob.user_id)]["content"]["is_direct"] is True


def test_create_room_bad_input(alice):
    for body, code in [
        ({"room_version": "99"}, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"room_version": 11}, "M_BAD_JSON"),
        ({"name": 5}, "M_BAD_JSON"),
        ({"preset": "nope"}, "M_INVALID_PARAM"),
        ({"visibility": "secret"}, "M_INVALID_PARAM"),
        ({"invite": ["not-a-user"]}, "M_INVALID_PARAM"),
        ({"invite": "x"}, "M_BAD_JSON"),
        ({"initial_state": [{"type": "m.room.name"}]}, "M_BAD_JSON"),
        ({"initial_state": [5]}, "M_BAD_JSON"),
        ({"power_level_content_override": []}, "M_BAD_JSON"),
        ({"creation_content": "x"}, "M_BAD_JSON"),
    ]:
        r = alice.request("POST", V3 + "/createRoom", body)
        assert r.status == 400 and r.body["errcode"] == code, (body, r.body)
    r = alice.request("POST", V3 + "/createRoom", {"invite": ["@nobody:localhost"]})
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = alice.request("POST", V3 + "/createRoom", raw=b"[1]")
    assert r.status == 400
    create(alice, room_alias_name="taken")
    r = alice.request("POST", V3 + "/createRoom", {"room_alias_name": "taken"})
    assert r.status == 400 and r.body["errcode"] == "M_ROOM_IN_USE"
    r = alice.request("POST", V3 + "/createRoom", {}, token=None)
    assert r.status == 401


def test_power_level_override_and_v12_creator_in_users_refused(alice):
    room_id = create(alice, room_version="11", power_level_content_override={"events_default": 20})
    assert state(alice, room_id)[("m.room.power_levels", "")]["content"]["events_default"] == 20
    r = alice.request("POST", V3 + "/createRoom", {
        "room_version": "12", "power_level_content_override": {"users": {alice.user_id: 100}},
    })  # fmt: skip
    assert r.status == 400


def test_send_idempotent_and_transaction_id(alice):
    room_id = create(alice)
    r1 = send(alice, room_id, txn="abc")
    r2 = send(alice, room_id, {"msgtype": "m.text", "body": "different"}, txn="abc")
    assert r1.status == 200 and r2.body["event_id"] == r1.body["event_id"]
    r = alice.request("GET", f"{V3}/rooms/{room_id}/event/{r1.body['event_id']}")
    assert r.status == 200
    assert r.body["unsigned"]["transaction_id"] == "abc"
    assert r.body["content"]["body"] == "x"
    # The same txn ID in another room is another request.
    other = create(alice)
    assert send(alice, other, txn="abc").body["event_id"] != r1.body["event_id"]


def test_send_bad_input_and_access(alice, bob):
    room_id = create(alice)
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/t1", raw=b"not json")
    assert r.status == 400 and r.body["errcode"] == "M_NOT_JSON"
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/t2", [1, 2])
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    big = {"msgtype": "m.text", "body": "x" * 70000}
    r = send(alice, room_id, big)
    assert r.status == 413 and r.body["errcode"] == "M_TOO_LARGE"
    # Not a member: cannot send or read.
    r = send(bob, room_id)
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    r = bob.request("GET", f"{V3}/rooms/{room_id}/messages", query={"dir": "b"})
    assert r.status == 403
    r = bob.request("GET", f"{V3}/rooms/{room_id}/state")
    assert r.status == 403
    # Unknown room.
    r = send(alice, "!nope:localhost")
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = send(alice, "not-a-room")
    assert r.status == 400


def test_state_put_get_and_nio_forms(alice, bob):
    room_id = create(alice, preset="public_chat")
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.name/", {"name": "One"})
    assert r.status == 200
    eid = r.body["event_id"]
    # Re-sending the same content returns the same event.
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.name", {"name": "One"})
    assert r.body["event_id"] == eid
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.name", {"name": "Two"})
    assert r.status == 200 and r.body["event_id"] != eid
    r = alice.request("GET", f"{V3}/rooms/{room_id}/state/m.room.name/")
    assert r.status == 200 and r.body == {"name": "Two"}
    r = alice.request("GET", f"{V3}/rooms/{room_id}/state/m.room.name", query={"format": "event"})
    assert r.body["content"] == {"name": "Two"}
    assert r.body["unsigned"]["prev_content"] == {"name": "One"}
    assert r.body["unsigned"]["replaces_state"] == eid
    r = alice.request("GET", f"{V3}/rooms/{room_id}/state/m.room.topic/")
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = alice.request("GET", f"{V3}/rooms/{room_id}/state/m.room.name/", query={"format": "x"})
    assert r.status == 400
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.name/", raw=b"{")
    assert r.status == 400
    # A low-power user cannot change state.
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    r = bob.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.name/", {"name": "Bob's"})
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    r = bob.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.power_levels/",
                    {"users": {bob.user_id: 100}})  # fmt: skip
    assert r.status == 403
    # Canonical alias must point to the room.
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.canonical_alias/",
                      {"alias": "#nowhere:localhost"})  # fmt: skip
    assert r.status == 400 and r.body["errcode"] == "M_BAD_ALIAS"


def test_membership_flow_invite_join_leave_forget(alice, bob, client):
    carol = client.register()
    room_id = create(alice)
    # Invite-only: bob cannot join without an invite.
    r = bob.request("POST", f"{V3}/rooms/{room_id}/join", {})
    assert r.status == 403
    r = alice.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": bob.user_id})
    assert r.status == 200, r.body
    r = alice.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": "@ghost:localhost"})
    assert r.status == 404
    r = alice.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": 5})
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    r = alice.request("POST", f"{V3}/rooms/{room_id}/invite", {})
    assert r.status == 400
    r = bob.request("POST", f"{V3}/rooms/{room_id}/join", {})
    assert r.status == 200 and r.body == {"room_id": room_id}
    # Bob (PL 0) cannot invite? invite level is 0 in private_chat: he can.
    r = bob.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": carol.user_id})
    assert r.status == 200
    r = carol.request("POST", f"{V3}/rooms/{room_id}/leave", {})  # reject the invite
    assert r.status == 200
    r = alice.request("GET", f"{V3}/joined_rooms")
    assert room_id in r.body["joined_rooms"]
    r = alice.request("GET", f"{V3}/rooms/{room_id}/joined_members")
    assert set(r.body["joined"]) == {alice.user_id, bob.user_id}
    assert "display_name" in r.body["joined"][alice.user_id]
    r = carol.request("GET", f"{V3}/rooms/{room_id}/joined_members")
    assert r.status == 403
    r = bob.request("POST", f"{V3}/rooms/{room_id}/forget", {})
    assert r.status == 400 and r.body["errcode"] == "M_UNKNOWN"
    assert bob.request("POST", f"{V3}/rooms/{room_id}/leave", {}).status == 200
    assert bob.request("POST", f"{V3}/rooms/{room_id}/forget", {}).status == 200
    r = bob.request("GET", f"{V3}/joined_rooms")
    assert room_id not in r.body["joined_rooms"]
    r = alice.request("GET", f"{V3}/rooms/{room_id}/members", query={"membership": "leave"})
    assert {e["state_key"] for e in r.body["chunk"]} == {bob.user_id, carol.user_id}
    r = alice.request("GET", f"{V3}/rooms/{room_id}/members", query={"not_membership": "leave"})
    assert {e["state_key"] for e in r.body["chunk"]} == {alice.user_id}
    r = alice.request("GET", f"{V3}/rooms/{room_id}/members", query={"membership": "x"})
    assert r.status == 400
    r = alice.request("POST", f"{V3}/rooms/!unknown:localhost/join", {})
    assert r.status == 404


def test_kick_ban_unban(alice, bob, client):
    room_id = create(alice, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    # Bob cannot kick alice (PL).
    r = bob.request("POST", f"{V3}/rooms/{room_id}/kick", {"user_id": alice.user_id})
    assert r.status == 403
    r = alice.request("POST", f"{V3}/rooms/{room_id}/kick",
                      {"user_id": bob.user_id, "reason": "bye"})  # fmt: skip
    assert r.status == 200
    st = state(alice, room_id)
    assert st[("m.room.member", bob.user_id)]["content"] == {"membership": "leave", "reason": "bye"}
    r = alice.request("POST", f"{V3}/rooms/{room_id}/kick", {"user_id": bob.user_id})
    assert r.status == 403  # no longer in the room
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    r = alice.request("POST", f"{V3}/rooms/{room_id}/ban", {"user_id": bob.user_id})
    assert r.status == 200
    r = bob.request("POST", f"{V3}/join/{room_id}", {})
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    r = alice.request("POST", f"{V3}/rooms/{room_id}/unban", {"user_id": alice.user_id})
    assert r.status == 403
    r = alice.request("POST", f"{V3}/rooms/{room_id}/unban", {"user_id": bob.user_id})
    assert r.status == 200
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    r = alice.request("POST", f"{V3}/rooms/{room_id}/ban", {"user_id": bob.user_id, "reason": 1})
    assert r.status == 400


def test_knock(alice, bob):
    room_id = create(alice, room_version="11", initial_state=[
        {"type": "m.room.join_rules", "content": {"join_rule": "knock"}}])  # fmt: skip
    r = bob.request("POST", f"{V3}/knock/{room_id}", {"reason": "let me in"})
    assert r.status == 200 and r.body == {"room_id": room_id}
    s = bob.request("GET", V3 + "/sync")
    knock_state = s.body["rooms"]["knock"][room_id]["knock_state"]["events"]
    assert {e["type"] for e in knock_state} >= {"m.room.create", "m.room.join_rules",
                                                 "m.room.member"}  # fmt: skip
    r = alice.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": bob.user_id})
    assert r.status == 200
    assert bob.request("POST", f"{V3}/rooms/{room_id}/join", {}).status == 200
    room2 = create(alice)  # invite-only
    r = bob.request("POST", f"{V3}/knock/{room2}", {})
    assert r.status == 403


def test_join_by_alias_and_alias_api(alice, bob, client):
    room_id = create(alice, preset="public_chat", room_alias_name="lobby")
    r = bob.request("POST", f"{V3}/join/%23lobby:localhost", {})
    assert r.status == 200 and r.body["room_id"] == room_id
    r = bob.request("POST", f"{V3}/join/%23missing:localhost", {})
    assert r.status == 404
    r = client.request("GET", f"{V3}/directory/room/%23lobby:localhost")
    assert r.status == 200 and r.body == {"room_id": room_id, "servers": ["localhost"]}
    r = alice.request("PUT", f"{V3}/directory/room/%23second:localhost", {"room_id": room_id})
    assert r.status == 200
    r = alice.request("PUT", f"{V3}/directory/room/%23second:localhost", {"room_id": room_id})
    assert r.status == 409
    r = alice.request("PUT", f"{V3}/directory/room/%23x:elsewhere", {"room_id": room_id})
    assert r.status == 400
    r = alice.request("PUT", f"{V3}/directory/room/%23y:localhost", {"room_id": 3})
    assert r.status == 400
    r = alice.request("PUT", f"{V3}/directory/room/%23y:localhost", {"room_id": "!no:localhost"})
    assert r.status == 404
    r = alice.request("GET", f"{V3}/rooms/{room_id}/aliases")
    assert r.body["aliases"] == ["#lobby:localhost", "#second:localhost"]
    # Bob (PL 0, not the creator of the alias) cannot delete it.
    r = bob.request("DELETE", f"{V3}/directory/room/%23second:localhost")
    assert r.status == 403
    r = alice.request("DELETE", f"{V3}/directory/room/%23second:localhost")
    assert r.status == 200
    r = client.request("GET", f"{V3}/directory/room/%23second:localhost")
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.canonical_alias/",
                      {"alias": "#lobby:localhost"})  # fmt: skip
    assert r.status == 200


def test_directory_visibility_and_public_rooms(alice, bob, client):
    room_id = create(alice, visibility="public", preset="public_chat", name="Town square")
    private = create(alice, name="Secret")
    r = client.request("GET", f"{V3}/directory/list/room/{room_id}")
    assert r.body == {"visibility": "public"}
    r = client.request("GET", f"{V3}/directory/list/room/{private}")
    assert r.body == {"visibility": "private"}
    r = client.request("GET", f"{V3}/directory/list/room/!none:localhost")
    assert r.status == 404
    r = client.request("GET", f"{V3}/publicRooms")
    assert r.status == 200
    ids = [c["room_id"] for c in r.body["chunk"]]
    assert room_id in ids and private not in ids
    entry = next(c for c in r.body["chunk"] if c["room_id"] == room_id)
    assert entry["name"] == "Town square" and entry["num_joined_members"] == 1
    r = bob.request("POST", f"{V3}/publicRooms", {"filter": {"generic_search_term": "town"}})
    assert [c["room_id"] for c in r.body["chunk"]] == [room_id]
    r = bob.request("POST", f"{V3}/publicRooms", {"filter": {"generic_search_term": 3}})
    assert r.status == 400
    r = bob.request("PUT", f"{V3}/directory/list/room/{private}", {"visibility": "public"})
    assert r.status == 403
    r = alice.request("PUT", f"{V3}/directory/list/room/{private}", {"visibility": "public"})
    assert r.status == 200
    r = alice.request("PUT", f"{V3}/directory/list/room/{private}", {"visibility": "hidden"})
    assert r.status == 400
    r = client.request("GET", f"{V3}/publicRooms", query={"limit": "1"})
    assert len(r.body["chunk"]) == 1 and "next_batch" in r.body
    r2 = client.request(
        "GET", f"{V3}/publicRooms", query={"limit": "1", "since": r.body["next_batch"]}
    )
    assert len(r2.body["chunk"]) == 1 and r2.body["chunk"][0] != r.body["chunk"][0]


def test_pagination_both_ways(alice, server):
    exempt(server, alice)  # 15 messages within milliseconds: pages to walk, bulk by design
    room_id = create(alice)
    ids = [send(alice, room_id, {"msgtype": "m.text", "body": str(i)}).body["event_id"]
           for i in range(15)]  # fmt: skip
    r = alice.request("GET", f"{V3}/rooms/{room_id}/messages", query={"dir": "b", "limit": "5"})
    assert r.status == 200 and "start" in r.body
    assert [e["event_id"] for e in r.body["chunk"]] == ids[::-1][:5]
    r2 = alice.request("GET", f"{V3}/rooms/{room_id}/messages",
                       query={"dir": "b", "limit": "5", "from": r.body["end"]})  # fmt: skip
    assert [e["event_id"] for e in r2.body["chunk"]] == ids[::-1][5:10]
    # Forward again from there.
    r3 = alice.request("GET", f"{V3}/rooms/{room_id}/messages",
                       query={"dir": "f", "limit": "3", "from": r2.body["end"]})  # fmt: skip
    assert [e["event_id"] for e in r3.body["chunk"]] == ids[5:8]
    # Walking backwards to the start ends without an `end` token.
    tok, seen = r.body["start"], []
    for _ in range(20):
        p = alice.request("GET", f"{V3}/rooms/{room_id}/messages",
                          query={"dir": "b", "limit": "7", "from": tok})  # fmt: skip
        seen += p.body["chunk"]
        if "end" not in p.body:
            break
        tok = p.body["end"]
    assert seen[-1]["type"] == "m.room.create"
    # Filter.
    r = alice.request("GET", f"{V3}/rooms/{room_id}/messages",
                      query={"dir": "b", "limit": "50",
                             "filter": '{"types": ["m.room.member"]}'})  # fmt: skip
    assert [e["type"] for e in r.body["chunk"]] == ["m.room.member"]
    for q in ({"dir": "x"}, {}, {"dir": "b", "from": "garbage"}, {"dir": "b", "limit": "x"},
              {"dir": "b", "filter": "{bad"}):  # fmt: skip
        r = alice.request("GET", f"{V3}/rooms/{room_id}/messages", query=q)
        assert r.status == 400, q


def test_context(alice):
    room_id = create(alice)
    ids = [send(alice, room_id).body["event_id"] for _ in range(6)]
    r = alice.request("GET", f"{V3}/rooms/{room_id}/context/{ids[3]}", query={"limit": "4"})
    assert r.status == 200
    assert r.body["event"]["event_id"] == ids[3]
    assert [e["event_id"] for e in r.body["events_before"]] == [ids[2], ids[1]]
    assert [e["event_id"] for e in r.body["events_after"]] == [ids[4], ids[5]]
    assert any(e["type"] == "m.room.create" for e in r.body["state"])
    r = alice.request("GET", f"{V3}/rooms/{room_id}/context/$unknown")
    assert r.status == 404


def test_event_get_errors(alice, bob):
    room_id = create(alice)
    eid = send(alice, room_id).body["event_id"]
    r = bob.request("GET", f"{V3}/rooms/{room_id}/event/{eid}")
    assert r.status == 404
    r = alice.request("GET", f"{V3}/rooms/{room_id}/event/$nope")
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_redaction(alice, bob, version):
    room_id = create(alice, room_version=version, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    eid = send(alice, room_id, {"msgtype": "m.text", "body": "secret"}).body["event_id"]
    # Bob may not redact alice's event.
    r = bob.request("PUT", f"{V3}/rooms/{room_id}/redact/{eid}/t1", {})
    assert r.status == 403
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/redact/{eid}/t1", {"reason": "oops"})
    assert r.status == 200
    red_id = r.body["event_id"]
    again = alice.request("PUT", f"{V3}/rooms/{room_id}/redact/{eid}/t1", {"reason": "oops"})
    assert again.body["event_id"] == red_id
    r = alice.request("GET", f"{V3}/rooms/{room_id}/event/{eid}")
    assert r.body["content"] == {}
    assert r.body["unsigned"]["redacted_because"]["event_id"] == red_id
    r = alice.request("GET", f"{V3}/rooms/{room_id}/event/{red_id}")
    assert r.body["redacts"] == eid
    if version in ("11", "12"):
        assert r.body["content"]["redacts"] == eid
    # Bob redacts his own event through /send (C-S 1.18).
    own = send(bob, room_id).body["event_id"]
    r = send(bob, room_id, {"redacts": own}, etype="m.room.redaction")
    assert r.status == 200, r.body
    r = bob.request("GET", f"{V3}/rooms/{room_id}/event/{own}")
    assert r.body["content"] == {}
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/redact/$nope/t2", {})
    assert r.status == 404
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/redact/{eid}/t3", {"reason": 5})
    assert r.status == 400


def test_history_visibility(alice, bob, client):
    carol = client.register()
    room_id = create(alice, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}])  # fmt: skip
    before = send(alice, room_id, {"msgtype": "m.text", "body": "before"}).body["event_id"]
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    after = send(alice, room_id, {"msgtype": "m.text", "body": "after"}).body["event_id"]
    r = bob.request("GET", f"{V3}/rooms/{room_id}/messages", query={"dir": "b", "limit": "50"})
    ids = [e["event_id"] for e in r.body["chunk"]]
    assert after in ids and before not in ids
    assert bob.request("GET", f"{V3}/rooms/{room_id}/event/{before}").status == 404
    # Shared: history visible to new members.
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.history_visibility/",
                      {"history_visibility": "shared"})  # fmt: skip
    assert r.status == 200
    shared_msg = send(alice, room_id, {"msgtype": "m.text", "body": "shared"}).body["event_id"]
    assert bob.request("POST", f"{V3}/rooms/{room_id}/leave", {}).status == 200
    late = send(alice, room_id, {"msgtype": "m.text", "body": "late"}).body["event_id"]
    # Bob left: sees up to his leave, not after.
    r = bob.request("GET", f"{V3}/rooms/{room_id}/messages", query={"dir": "b", "limit": "50"})
    ids = [e["event_id"] for e in r.body["chunk"]]
    assert shared_msg in ids and late not in ids
    # Carol joins later and sees the shared history (but not the "joined" era).
    assert carol.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    r = carol.request("GET", f"{V3}/rooms/{room_id}/messages", query={"dir": "b", "limit": "50"})
    ids = [e["event_id"] for e in r.body["chunk"]]
    assert shared_msg in ids and late in ids and before not in ids
    # World-readable: a non-member can read.
    dave = client.register()
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.history_visibility/",
                      {"history_visibility": "world_readable"})  # fmt: skip
    wr = send(alice, room_id, {"msgtype": "m.text", "body": "public"}).body["event_id"]
    r = dave.request("GET", f"{V3}/rooms/{room_id}/messages", query={"dir": "b", "limit": "5"})
    assert r.status == 200 and wr in [e["event_id"] for e in r.body["chunk"]]
    assert late not in [e["event_id"] for e in r.body["chunk"]]
    assert send(dave, room_id).status == 403


def test_restart_keeps_rooms(tmp_path):
    from tests.support.harness import Client, ServerThread

    srv = ServerThread(tmp_path / "d").start()
    try:
        a = Client(srv.base_url).register()
        room_id = create(a, room_version="12", name="persist")
        eid = send(a, room_id).body["event_id"]
    finally:
        srv.stop()
    srv = ServerThread(tmp_path / "d").start()
    try:
        a.base_url = srv.base_url
        r = a.request("GET", f"{V3}/rooms/{room_id}/event/{eid}")
        assert r.status == 200
        e2 = send(a, room_id).body["event_id"]
        r = a.request("GET", f"{V3}/rooms/{room_id}/messages", query={"dir": "b", "limit": "2"})
        assert [e["event_id"] for e in r.body["chunk"]] == [e2, eid]
        pdu = srv.hs.store.get_event(e2)
        assert pdu["prev_events"] == [eid]
    finally:
        srv.stop()


def test_restricted_join(alice, bob, client):
    carol = client.register()
    space = create(alice, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{space}", {}).status == 200
    room_id = create(alice, room_version="10", initial_state=[{
        "type": "m.room.join_rules",
        "content": {"join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}]},
    }])  # fmt: skip
    r = bob.request("POST", f"{V3}/join/{room_id}", {})
    assert r.status == 200, r.body
    st = state(alice, room_id)
    member = st[("m.room.member", bob.user_id)]["content"]
    assert member["join_authorised_via_users_server"] == alice.user_id
    r = carol.request("POST", f"{V3}/join/{room_id}", {})
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
