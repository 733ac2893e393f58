"""GET /_matrix/client/v1/rooms/{roomId}/hierarchy (C-S API "Spaces"): the depth-first walk of
a space's children with their summaries, suggested_only, max_depth, limit and from (bound to
the parameters), rooms the user may not see left out, loops, and hostile parameters."""

from __future__ import annotations

import urllib.parse

from tests.support.guard import exempt
from tests.support.harness import Client

V3 = "/_matrix/client/v3"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def hierarchy(c: Client, room: str, **query):
    return c.request("GET", f"/_matrix/client/v1/rooms/{q(room)}/hierarchy", query=query or None)


def create(c: Client, *, space: bool = False, **body) -> str:
    if space:
        body["creation_content"] = {"type": "m.space"}
    r = c.request("POST", f"{V3}/createRoom", body)
    assert r.status == 200, r.body
    return r.body["room_id"]


def add_child(c: Client, space: str, child: str, **content) -> None:
    content.setdefault("via", ["localhost"])
    r = c.request("PUT", f"{V3}/rooms/{q(space)}/state/m.space.child/{q(child)}", content)
    assert r.status == 200, r.body


def ids(r) -> list[str]:
    assert r.status == 200, r.body
    return [room["room_id"] for room in r.body["rooms"]]


def _tree(alice: Client) -> dict[str, str]:
    """space ─┬─ a (order "b")
    ├─ b (order "a", suggested)
    └─ sub (a space, no order) ── g (suggested)"""
    rooms = {
        "space": create(alice, space=True, preset="public_chat", name="The space", topic="t"),
        "a": create(alice, preset="public_chat", name="A"),
        "b": create(alice, preset="public_chat", name="B"),
        "sub": create(alice, space=True, preset="public_chat", name="Sub"),
        "g": create(alice, preset="public_chat", name="G"),
    }
    add_child(alice, rooms["space"], rooms["a"], order="b")
    add_child(alice, rooms["space"], rooms["b"], order="a", suggested=True)
    add_child(alice, rooms["space"], rooms["sub"])
    add_child(alice, rooms["sub"], rooms["g"], suggested=True)
    return rooms


def test_walk_summaries_and_order(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    t = _tree(alice)
    for c in (alice, bob):  # bob is in none of them: all public
        r = hierarchy(c, t["space"])
        assert ids(r) == [t["space"], t["b"], t["a"], t["sub"], t["g"]]
        assert "next_batch" not in r.body
    root = r.body["rooms"][0]
    assert root["name"] == "The space" and root["topic"] == "t"
    assert root["room_type"] == "m.space" and root["join_rule"] == "public"
    assert root["num_joined_members"] == 1 and root["world_readable"] is False
    assert root["guest_can_join"] is False
    assert root["room_version"] == server.hs.config.default_room_version
    assert [s["state_key"] for s in root["children_state"]] == [t["b"], t["a"], t["sub"]]
    first = root["children_state"][0]
    assert set(first) == {"type", "state_key", "content", "sender", "origin_server_ts"}
    assert first["type"] == "m.space.child" and first["sender"] == alice.user_id
    assert first["content"] == {"via": ["localhost"], "order": "a", "suggested": True}
    leaf = r.body["rooms"][1]
    assert leaf["name"] == "B" and leaf["children_state"] == [] and "room_type" not in leaf


def test_suggested_only_and_max_depth(server):
    alice = Client(server.base_url).register()
    t = _tree(alice)
    r = hierarchy(alice, t["space"], suggested_only="true")
    assert ids(r) == [t["space"], t["b"]]  # sub is not suggested: g is not reached
    assert [s["state_key"] for s in r.body["rooms"][0]["children_state"]] == [t["b"]]
    assert ids(hierarchy(alice, t["space"], suggested_only="false"))[-1] == t["g"]
    assert ids(hierarchy(alice, t["space"], max_depth="0")) == [t["space"]]
    assert ids(hierarchy(alice, t["space"], max_depth="1")) == [
        t["space"], t["b"], t["a"], t["sub"]
    ]  # fmt: skip
    # Starting from the sub-space.
    assert ids(hierarchy(alice, t["sub"])) == [t["sub"], t["g"]]


def test_limit_and_from(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    t = _tree(alice)
    r1 = hierarchy(alice, t["space"], limit="2")
    assert ids(r1) == [t["space"], t["b"]]
    token = r1.body["next_batch"]
    assert isinstance(token, str)
    r2 = hierarchy(alice, t["space"], limit="2", **{"from": token})
    assert ids(r2) == [t["a"], t["sub"]]
    # The same token again gives the same page (a retried request).
    assert ids(hierarchy(alice, t["space"], limit="2", **{"from": token})) == ids(r2)
    r3 = hierarchy(alice, t["space"], limit="5", **{"from": r2.body["next_batch"]})
    assert ids(r3) == [t["g"]] and "next_batch" not in r3.body
    # The token is bound to the parameters, the room and the user.
    for other in ({"max_depth": "1"}, {"suggested_only": "true"}):
        r = hierarchy(alice, t["space"], **{"from": token, **other})
        assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM"), r.body
    r = hierarchy(alice, t["sub"], **{"from": token})
    assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM")
    r = hierarchy(bob, t["space"], **{"from": token})
    assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM")
    for bad in ("nonsense", "x" * 5000):
        r = hierarchy(alice, t["space"], **{"from": bad})
        assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM")
    # An explicit max_depth equal to the default is the same request.
    r = hierarchy(alice, t["space"], max_depth="10", **{"from": token})
    assert ids(r) == [t["a"], t["sub"], t["g"]]


def test_rooms_the_user_may_not_see_are_left_out(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    space = create(alice, space=True, preset="public_chat")
    private = create(alice, preset="private_chat", name="Private")
    readable = create(alice, preset="private_chat", name="Readable")
    r = alice.request(
        "PUT", f"{V3}/rooms/{q(readable)}/state/m.room.history_visibility/",
        {"history_visibility": "world_readable"},
    )  # fmt: skip
    assert r.status == 200, r.body
    restricted = create(
        alice, preset="private_chat", name="Members of the space", room_version="10"
    )
    r = alice.request(
        "PUT", f"{V3}/rooms/{q(restricted)}/state/m.room.join_rules/",
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]},
    )  # fmt: skip
    assert r.status == 200, r.body
    private_space = create(alice, space=True, preset="private_chat")
    under_private = create(alice, preset="public_chat", name="Under the private space")
    for child in (private, readable, restricted, private_space):
        add_child(alice, space, child)
    add_child(alice, private_space, under_private)
    assert set(ids(hierarchy(alice, space))) == {
        space, private, readable, restricted, private_space, under_private
    }  # fmt: skip
    # bob, in none of them: neither the private rooms, nor what is only below a private space.
    assert set(ids(hierarchy(bob, space))) == {space, readable}
    restricted_summary = [
        room for room in hierarchy(alice, space).body["rooms"] if room["room_id"] == restricted
    ][0]
    assert restricted_summary["allowed_room_ids"] == [space]
    assert restricted_summary["join_rule"] == "restricted"
    # Once in the space, bob may join the restricted room: he sees it.
    assert bob.request("POST", f"{V3}/join/{q(space)}", {}).status == 200
    assert set(ids(hierarchy(bob, space))) == {space, readable, restricted}
    # Invited to the private room: he sees it too.
    r = alice.request("POST", f"{V3}/rooms/{q(private)}/invite", {"user_id": bob.user_id})
    assert r.status == 200, r.body
    assert set(ids(hierarchy(bob, space))) == {space, readable, restricted, private}
    # A space he may not see at all: 403, as for one that does not exist.
    for room in (private_space, "!nothere:localhost", "not-a-room-id"):
        r = hierarchy(bob, room)
        assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN"), r.body


def test_loops_end(server):
    alice = Client(server.base_url).register()
    s1 = create(alice, space=True, preset="public_chat")
    s2 = create(alice, space=True, preset="public_chat")
    room = create(alice, preset="public_chat")
    add_child(alice, s1, s2)
    add_child(alice, s2, s1)  # a loop
    add_child(alice, s2, s2)  # and a room its own child
    add_child(alice, s2, room)
    add_child(alice, s1, room)  # reached twice
    assert ids(hierarchy(alice, s1, max_depth="50")) == [s1, s2, room]
    assert ids(hierarchy(alice, s2)) == [s2, s1, room]
    # Page by page, still each room once.
    seen, token = [], None
    while True:
        query = {"limit": "1", **({"from": token} if token else {})}
        r = hierarchy(alice, s1, **query)
        seen += ids(r)
        token = r.body.get("next_batch")
        if not token:
            break
    assert seen == [s1, s2, room]


def test_children_without_via_and_unknown_children(server):
    alice = Client(server.base_url).register()
    space = create(alice, space=True, preset="public_chat")
    removed = create(alice, preset="public_chat")
    add_child(alice, space, removed)
    r = alice.request("PUT", f"{V3}/rooms/{q(space)}/state/m.space.child/{q(removed)}", {})
    assert r.status == 200, r.body  # removed from the space
    add_child(alice, space, create(alice, preset="public_chat"), via=[])
    # Not a room of this server: left out (and no federation to ask).
    add_child(alice, space, "!unknown:localhost", order="1")
    add_child(alice, space, "!elsewhere:remote.example", via=["remote.example"], order="2")
    r = hierarchy(alice, space)
    assert ids(r) == [space]
    children = [s["state_key"] for s in r.body["rooms"][0]["children_state"]]
    assert children == ["!unknown:localhost", "!elsewhere:remote.example"]


def test_parameters(server):
    alice = Client(server.base_url).register()
    space = create(alice, space=True, preset="public_chat")
    for query in ({"limit": "0"}, {"limit": "-3"}, {"limit": "x"}, {"max_depth": "-1"},
                  {"max_depth": "1e3"}, {"suggested_only": "yes"}, {"limit": "9" * 5000}):  # fmt: skip
        r = hierarchy(alice, space, **query)
        assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM"), (query, r.body)
    # Huge values are clamped, not refused.
    assert ids(hierarchy(alice, space, limit=str(10**18), max_depth=str(10**18))) == [space]
    r = alice.request("GET", f"/_matrix/client/v1/rooms/{q(space)}/hierarchy", token=None)
    assert r.status == 401


class FakeRemote:
    """Stands for the federation (services.remote.RemoteHierarchy): canned answers by room."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, bool]] = []

    async def room_hierarchy(self, server, room_id, suggested_only, timeout):
        assert 0 < timeout <= 10
        self.calls.append((server, room_id, suggested_only))
        return self.answers.get(room_id)


def remote_summary(room_id: str, **fields) -> dict:
    return {"room_id": room_id, "num_joined_members": 3, "world_readable": False,
            "guest_can_join": False, "join_rule": "public", **fields}  # fmt: skip


def remote_child(room_id: str, order: str = "") -> dict:
    content = {"via": ["remote.example"], **({"order": order} if order else {})}
    return {"type": "m.space.child", "state_key": room_id, "content": content,
            "sender": "@x:remote.example", "origin_server_ts": 1}  # fmt: skip


def test_remote_rooms_checked_filtered_and_cached(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    space = create(alice, space=True, preset="public_chat")
    club = create(alice, preset="public_chat")
    rspace, pub, restricted, hidden = (
        "!rspace:remote.example", "!pub:remote.example", "!restr:remote.example",
        "!hidden:remote.example",
    )  # fmt: skip
    fake = FakeRemote({
        rspace: {
            "room": remote_summary(rspace, room_type="m.space", name="Remote space",
                                   children_state=[remote_child(pub, "1"),
                                                   remote_child(restricted, "2"),
                                                   remote_child(hidden, "3")]),
            "children": [remote_summary(pub, name="Pub", secret="dropped"),
                         remote_summary(restricted, join_rule="restricted",
                                        allowed_room_ids=[club]),
                         remote_summary("!unlisted:remote.example")],
            "inaccessible_children": [hidden],
        },
        # A hostile answer: another room's summary.
        "!liar:remote.example": {"room": remote_summary("!other:remote.example"),
                                 "children": [], "inaccessible_children": []},
        # Not JSON objects where they should be.
        "!junk:remote.example": {"room": [1, 2], "children": "x"},
    })  # fmt: skip
    server.hs.space_hierarchy.remote = fake
    add_child(alice, space, rspace, via=["remote.example", "localhost"], order="1")
    add_child(alice, space, "!liar:remote.example", via=["remote.example"], order="2")
    add_child(alice, space, "!junk:remote.example", via=["remote.example"], order="3")
    r = hierarchy(bob, space)
    assert ids(r) == [space, rspace, pub]  # bob is not in the room the restricted one allows
    rooms = r.body["rooms"]
    assert rooms[1]["name"] == "Remote space" and rooms[1]["num_joined_members"] == 3
    assert [c["state_key"] for c in rooms[1]["children_state"]] == [pub, restricted, hidden]
    assert rooms[2] == {**remote_summary(pub, name="Pub"), "children_state": []}
    # The children came with the space's answer: one request per room asked, never this server.
    assert sorted(room for _, room, _ in fake.calls) == sorted(
        [rspace, "!liar:remote.example", "!junk:remote.example"]
    )
    assert {server_name for server_name, _, _ in fake.calls} == {"remote.example"}
    # Cached: asking again makes no request; suggested_only is another question.
    fake.calls.clear()
    assert ids(hierarchy(bob, space)) == [space, rspace, pub]
    assert fake.calls == []
    # A user joined to the room the restricted one allows sees it.
    assert ids(hierarchy(alice, space)) == [space, rspace, pub, restricted]
    assert bob.request("POST", f"{V3}/join/{q(club)}", {}).status == 200
    assert ids(hierarchy(bob, space)) == [space, rspace, pub, restricted]
    assert fake.calls == []
    assert ids(hierarchy(bob, space, suggested_only="true")) == [space]


def test_remote_requests_per_page_are_bounded(server):
    alice = Client(server.base_url).register()
    space = create(alice, space=True, preset="public_chat")
    exempt(server, alice)
    remote_ids = [f"!r{i:02d}:remote.example" for i in range(25)]
    fake = FakeRemote({rid: {"room": remote_summary(rid), "children": [],
                             "inaccessible_children": []} for rid in remote_ids})  # fmt: skip
    server.hs.space_hierarchy.remote = fake
    for i, rid in enumerate(remote_ids):
        add_child(alice, space, rid, via=["remote.example"], order=f"{i:02d}")
    r = hierarchy(alice, space)
    assert ids(r) == [space] + remote_ids[:10] and len(fake.calls) == 10
    token = r.body["next_batch"]
    r = hierarchy(alice, space, **{"from": token})
    assert ids(r) == remote_ids[10:20] and len(fake.calls) == 20
    r = hierarchy(alice, space, **{"from": r.body["next_batch"]})
    assert ids(r) == remote_ids[20:] and "next_batch" not in r.body
    assert len(fake.calls) == 25


def test_remote_requests_per_user_are_bounded(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    exempt(server, alice)
    exempt(server, bob)

    def remote_space(owner: Client, prefix: str, n: int) -> tuple[str, list[str]]:
        space = create(owner, space=True, preset="public_chat")
        children = [f"!{prefix}{i:02d}:remote.example" for i in range(n)]
        for i, rid in enumerate(children):
            add_child(owner, space, rid, via=["remote.example"], order=f"{i:02d}")
        return space, children

    space_a, children_a = remote_space(alice, "a", 40)
    space_b, children_b = remote_space(bob, "b", 10)
    fake = FakeRemote({rid: {"room": remote_summary(rid), "children": [],
                             "inaccessible_children": []} for rid in children_a + children_b})  # fmt: skip
    server.hs.space_hierarchy.remote = fake
    seen, token = [], None
    for _ in range(3):  # 30 requests: alice's allowance at once
        r = hierarchy(alice, space_a, **({"from": token} if token else {}))
        seen += ids(r)
        token = r.body["next_batch"]
    assert seen == [space_a] + children_a[:30] and len(fake.calls) == 30
    r = hierarchy(alice, space_a, **{"from": token})
    assert len(ids(r)) < 10 and "next_batch" in r.body  # the rest waits for later pages
    # Another user's allowance is their own.
    assert ids(hierarchy(bob, space_b)) == [space_b] + children_b
