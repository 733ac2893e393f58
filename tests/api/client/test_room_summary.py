"""GET /_matrix/client/v1/room_summary/{roomIdOrAlias} (C-S API "Room Summaries", v1.15): the
summary of a room the requester is in or invited to, or may preview or join by themselves;
everything else (including rooms that do not exist) answered 404 alike."""

from __future__ import annotations

import urllib.parse

from tests.support.harness import Client

V3 = "/_matrix/client/v3"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def summary(c: Client, room: str, **query):
    return c.request("GET", f"/_matrix/client/v1/room_summary/{q(room)}", query=query or None)


def create(c: Client, **body) -> str:
    r = c.request("POST", f"{V3}/createRoom", body)
    assert r.status == 200, r.body
    return r.body["room_id"]


def put_state(c: Client, room: str, etype: str, content: dict) -> None:
    r = c.request("PUT", f"{V3}/rooms/{q(room)}/state/{etype}/", content)
    assert r.status == 200, r.body


def _hidden(r) -> None:
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND"), r.body


def test_members_see_it_others_do_not(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    room = create(alice, name="Secret", topic="plans", room_alias_name="secret",
                  initial_state=[{"type": "m.room.encryption", "state_key": "",
                                  "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])  # fmt: skip
    r = summary(alice, room)
    assert r.status == 200, r.body
    body = r.body
    assert body["room_id"] == room and body["name"] == "Secret" and body["topic"] == "plans"
    assert body["canonical_alias"] == "#secret:localhost"
    assert body["num_joined_members"] == 1 and body["membership"] == "join"
    assert body["join_rule"] == "invite" and body["world_readable"] is False
    assert body["guest_can_join"] is True  # the private_chat preset sets guest_access can_join
    assert body["encryption"] == "m.megolm.v1.aes-sha2"
    assert body["room_version"] == server.hs.config.default_room_version
    assert "allowed_room_ids" not in body and "room_type" not in body
    # By alias, with via (accepted, unused).
    r = summary(alice, "#secret:localhost", via="elsewhere.example")
    assert (r.status, r.body["room_id"]) == (200, room)
    # Bob is not in it: the same answer as for a room that does not exist.
    _hidden(summary(bob, room))
    _hidden(summary(bob, "#secret:localhost"))
    _hidden(summary(bob, "!nothere:localhost"))
    _hidden(summary(bob, "#nothere:localhost"))
    _hidden(summary(bob, "!abc:remote.example"))  # local rooms only: no federation request
    # Invited: he sees it, with his membership.
    r = alice.request("POST", f"{V3}/rooms/{q(room)}/invite", {"user_id": bob.user_id})
    assert r.status == 200
    r = summary(bob, room)
    assert (r.status, r.body["membership"], r.body["name"]) == (200, "invite", "Secret")
    # Once he has left, hidden again.
    assert bob.request("POST", f"{V3}/rooms/{q(room)}/leave", {}).status == 200
    _hidden(summary(bob, room))


def test_rooms_anyone_may_preview_or_join(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    public = create(alice, preset="public_chat", name="Lobby")
    r = summary(bob, public)
    assert (r.status, r.body["join_rule"], r.body["membership"]) == (200, "public", "leave")
    knock = create(alice, name="Knock")
    _hidden(summary(bob, knock))
    put_state(alice, knock, "m.room.join_rules", {"join_rule": "knock"})
    assert summary(bob, knock).body["join_rule"] == "knock"
    readable = create(alice)
    _hidden(summary(bob, readable))
    put_state(alice, readable, "m.room.history_visibility",
              {"history_visibility": "world_readable"})  # fmt: skip
    r = summary(bob, readable)
    assert (r.status, r.body["world_readable"]) == (200, True)
    space = create(alice, preset="public_chat", creation_content={"type": "m.space"})
    assert summary(bob, space).body["room_type"] == "m.space"


def test_restricted_rooms_for_members_of_an_allowed_room(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    carol = Client(server.base_url).register()
    space = create(alice, preset="public_chat")
    restricted = create(alice, name="Team")
    put_state(alice, restricted, "m.room.join_rules", {
        "join_rule": "restricted",
        "allow": [{"type": "m.room_membership", "room_id": space}, {"type": "other"}],
    })  # fmt: skip
    assert bob.request("POST", f"{V3}/join/{q(space)}", {}).status == 200
    r = summary(bob, restricted)
    assert r.status == 200, r.body
    assert r.body["allowed_room_ids"] == [space] and r.body["join_rule"] == "restricted"
    _hidden(summary(carol, restricted))


def test_bad_input(server):
    alice = Client(server.base_url).register()
    for bad in ("abc", "@user:localhost", "#", "#no-server", ""):
        r = summary(alice, bad)
        assert r.status in (400, 404), (bad, r.body)
        assert r.body["errcode"] in ("M_INVALID_PARAM", "M_NOT_FOUND", "M_UNRECOGNIZED")
    r = Client(server.base_url).request("GET", "/_matrix/client/v1/room_summary/!a:localhost")
    assert (r.status, r.body["errcode"]) == (401, "M_MISSING_TOKEN")
