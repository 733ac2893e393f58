"""Space hierarchies across two Bastions (S-S API "Spaces", ``GET /v1/hierarchy/{roomId}``): a
space on A with children on B, walked by a user of A through B's federation endpoint; what B
reveals to a server (children it may see, inaccessible children, 404, server ACLs); and an
unreachable ``via`` server skipped."""

from __future__ import annotations

import time

from tests.support import server_pair
from tests.support.federation import https
from tests.support.harness import Client
from tests.support.server_pair import fed, q

pair = server_pair.pair  # the fixture

V3 = "/_matrix/client/v3"


def create(c: Client, *, space: bool = False, **body) -> str:
    if space:
        body["creation_content"] = {"type": "m.space"}
    r = c.request("POST", f"{V3}/createRoom", body)
    assert r.status == 200, r.body
    return r.body["room_id"]


def add_child(c: Client, space: str, child: str, via: list[str], **content) -> None:
    r = c.request(
        "PUT", f"{V3}/rooms/{q(space)}/state/m.space.child/{q(child)}", {"via": via, **content}
    )
    assert r.status == 200, r.body


def hierarchy(c: Client, room: str, **query):
    return c.request("GET", f"/_matrix/client/v1/rooms/{q(room)}/hierarchy", query=query or None)


def test_a_space_with_children_on_another_server(pair, test_ca):
    a, b = pair
    alice = Client(a.base_url).register()
    bob = Client(b.base_url).register()
    b_name = b.hs.server_name
    # On B: a public room, a private one, and a public sub-space with a grandchild.
    remote = create(bob, preset="public_chat", name="Remote room", topic="over there")
    private = create(bob, preset="private_chat", name="Remote secret")
    sub = create(bob, space=True, preset="public_chat", name="Remote sub-space")
    grandchild = create(bob, preset="public_chat", name="Remote grandchild")
    add_child(bob, sub, grandchild, [b_name], suggested=True)
    # On A: the space.
    space = create(alice, space=True, preset="public_chat", name="Home space")
    add_child(alice, space, remote, [b_name], order="1", suggested=True)
    add_child(alice, space, private, [b_name], order="2")
    add_child(alice, space, sub, [b_name], order="3", suggested=True)

    r = hierarchy(alice, space)
    assert r.status == 200, r.body
    rooms = {room["room_id"]: room for room in r.body["rooms"]}
    assert [room["room_id"] for room in r.body["rooms"]] == [space, remote, sub, grandchild]
    summary = rooms[remote]
    assert summary["name"] == "Remote room" and summary["topic"] == "over there"
    assert summary["join_rule"] == "public" and summary["num_joined_members"] == 1
    assert summary["world_readable"] is False and summary["guest_can_join"] is False
    assert summary["room_version"] == b.hs.config.default_room_version
    assert summary["children_state"] == []
    assert rooms[sub]["room_type"] == "m.space"
    assert [c["state_key"] for c in rooms[sub]["children_state"]] == [grandchild]
    assert rooms[grandchild]["name"] == "Remote grandchild"
    assert private not in rooms  # B revealed it to no one
    # suggested_only travels to B; max_depth stops before the grandchild.
    assert [room["room_id"] for room in hierarchy(alice, space, suggested_only="true").body[
        "rooms"]] == [space, remote, sub, grandchild]  # fmt: skip
    assert [room["room_id"] for room in hierarchy(alice, space, max_depth="1").body["rooms"]] == [
        space, remote, sub
    ]  # fmt: skip

    # B's federation answer itself, asked as A.
    path = f"/_matrix/federation/v1/hierarchy/{q(sub)}"
    status, body = fed(test_ca, a, b, "GET", path)
    assert status == 200, body
    assert body["room"]["room_id"] == sub and body["room"]["name"] == "Remote sub-space"
    assert [c["room_id"] for c in body["children"]] == [grandchild]
    assert body["inaccessible_children"] == []
    bob_space = create(bob, space=True, preset="public_chat")
    add_child(bob, bob_space, remote, [b_name])
    add_child(bob, bob_space, private, [b_name])
    add_child(bob, bob_space, "!unknown:elsewhere", ["elsewhere"])
    status, body = fed(test_ca, a, b, "GET", f"/_matrix/federation/v1/hierarchy/{q(bob_space)}")
    assert status == 200, body
    assert [c["room_id"] for c in body["children"]] == [remote]
    assert body["inaccessible_children"] == [private]  # the unknown room is left out
    assert len(body["room"]["children_state"]) == 3
    # A private space: 404 for A, as for a room B is not in; a bad flag is 400.
    status, body = fed(test_ca, a, b, "GET", f"/_matrix/federation/v1/hierarchy/{q(private)}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), body
    status, body = fed(test_ca, a, b, "GET", "/_matrix/federation/v1/hierarchy/%21nope%3Ax")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), body
    status, body = fed(test_ca, a, b, "GET", f"{path}?suggested_only=maybe")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), body
    # Unsigned: 401.
    status, body = https(test_ca, b.hs.federation_bound_port, "GET", path)
    assert status == 401, body
    # The room's server ACL denies A: 403.
    r = bob.request(
        "PUT", f"{V3}/rooms/{q(sub)}/state/m.room.server_acl/",
        {"allow": ["*"], "deny": [a.hs.server_name.split(":")[0]], "allow_ip_literals": True},
    )  # fmt: skip
    assert r.status == 200, r.body
    status, body = fed(test_ca, a, b, "GET", path)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body


def test_a_private_remote_room_seen_once_joined_and_unreachable_servers(pair, test_ca):
    a, b = pair
    alice = Client(a.base_url).register()
    bob = Client(b.base_url).register()
    b_name = b.hs.server_name
    private = create(bob, preset="private_chat", name="Invite only", invite=[alice.user_id])
    space = create(alice, space=True, preset="public_chat")
    add_child(alice, space, private, [b_name], order="1")
    # A child whose only via server refuses connections: skipped, quickly.
    add_child(alice, space, "!gone:127.0.0.1:1", ["127.0.0.1:1"], order="2")
    # A child whose via list names this server only (A is not in it): skipped.
    add_child(alice, space, "!gone2:elsewhere", [a.hs.server_name], order="3")
    start = time.monotonic()
    r = hierarchy(alice, space)
    assert r.status == 200, r.body
    assert time.monotonic() - start < 15
    # alice is not in the room and B does not show it to A: left out.
    assert [room["room_id"] for room in r.body["rooms"]] == [space]
    # Once alice joined it, A is in the room: its summary is A's own.
    deadline = time.monotonic() + 20
    while True:
        jr = alice.request("POST", f"{V3}/join/{q(private)}", {})
        if jr.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert jr.status == 200, jr.body
    r = hierarchy(alice, space)
    assert [room["room_id"] for room in r.body["rooms"]] == [space, private]
    assert r.body["rooms"][1]["name"] == "Invite only"
    assert r.body["rooms"][1]["num_joined_members"] == 2
