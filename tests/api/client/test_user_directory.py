"""The user directory (C-S API "User directory": ``POST /user_directory/search``)."""

from __future__ import annotations

import pytest

from tests.support.accounts import assert_error, make_user, run_on_server
from tests.support.harness import ServerThread
from tests.support.rooms import V3, create_room, join

SEARCH = V3 + "/user_directory/search"


def search(c, term, **extra) -> dict:
    r = c.request("POST", SEARCH, {"search_term": term, **extra})
    assert r.status == 200, r.body
    return r.body


def found(c, term, **extra) -> list[str]:
    return [x["user_id"] for x in search(c, term, **extra)["results"]]


def set_name(c, name: str) -> None:
    r = c.request("PUT", f"{V3}/profile/{c.user_id}/displayname", {"displayname": name})
    assert r.status == 200, r.body


def private_room(c) -> str:
    return create_room(c, preset="private_chat")


def invite_and_join(owner, other, room_id: str) -> None:
    r = owner.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": other.user_id})
    assert r.status == 200, r.body
    join(other, room_id)


def test_finds_a_user_sharing_a_private_room(server):
    alice, bob, carol = make_user(server), make_user(server), make_user(server)
    set_name(bob, "Bobby Tables")
    room = private_room(alice)
    invite_and_join(alice, bob, room)
    body = search(alice, "bobby")
    assert body == {"limited": False, "results": [{"user_id": bob.user_id,
                                                   "display_name": "Bobby Tables"}]}  # fmt: skip
    # carol shares no room with bob, and bob's room is not public
    assert found(carol, "bobby") == []
    # leaving the room ends it
    assert bob.request("POST", f"{V3}/rooms/{room}/leave", {}).status == 200
    assert found(alice, "bobby") == []


def test_finds_a_user_in_a_public_room_but_not_in_a_private_one(server):
    alice, bob, carol, dave = (make_user(server) for _ in range(4))
    set_name(bob, "Public Bob")
    set_name(dave, "Private Dave")
    create_room(bob)  # public_chat: join rule public
    room = private_room(carol)
    invite_and_join(carol, dave, room)
    assert found(alice, "public") == [bob.user_id]
    assert found(alice, "private") == []  # dave is only in a room alice is not in
    assert found(alice, "dave") == []
    assert found(carol, "private") == [dave.user_id]
    # a room whose join rule is no longer public hides its members from strangers
    rooms = bob.request("GET", f"{V3}/joined_rooms").body["joined_rooms"]
    r = bob.request(
        "PUT", f"{V3}/rooms/{rooms[0]}/state/m.room.join_rules/", {"join_rule": "invite"}
    )
    assert r.status == 200, r.body
    assert found(alice, "public") == []


def test_display_name_and_localpart_matching(server):
    alice = make_user(server)
    smith = make_user(server, "alice.smith")
    jones = make_user(server, "jjones")
    set_name(smith, "Ally Smith")
    set_name(jones, "Mary-Jane Jones")
    room = create_room(alice)
    join(smith, room)
    join(jones, room)
    # the beginning of a word of the display name, case-insensitively
    assert found(alice, "SMI") == [smith.user_id]
    assert found(alice, "jane") == [jones.user_id]
    assert found(alice, "mary jon") == [jones.user_id]
    # every word must match
    assert found(alice, "mary smith") == []
    # not the middle of a word
    assert found(alice, "mith") == []
    assert found(alice, "ones") == []
    # the beginning of a word of the localpart, and the full user ID
    assert found(alice, "jjon") == [jones.user_id]
    assert found(alice, "smith") == [smith.user_id]
    assert found(alice, "@alice.smith:local") == [smith.user_id]
    assert found(alice, smith.user_id) == [smith.user_id]
    # the requester may find themselves
    assert alice.user_id in found(alice, alice.user_id)
    # a blank term finds nobody
    assert search(alice, "   ") == {"limited": False, "results": []}


def test_ranking_exact_and_prefix_first(server):
    alice = make_user(server)
    names = {"ann": "Ann", "annabel": "Annabel", "joanne": "Jo Ann Ward", "zed": "Anna"}
    users = {}
    room = create_room(alice)
    for local, name in names.items():
        u = users[local] = make_user(server, local)
        set_name(u, name)
        join(u, room)
    got = found(alice, "ann")
    # exact (display name or localpart "ann"), then prefixes by display name, then the rest
    assert got == [users["ann"].user_id, users["zed"].user_id, users["annabel"].user_id,
                   users["joanne"].user_id]  # fmt: skip


def test_limit_and_limited(server):
    alice = make_user(server)
    room = create_room(alice)
    members = []
    for i in range(5):
        u = make_user(server, f"member{i}")
        join(u, room)
        members.append(u.user_id)
    body = search(alice, "member", limit=3)
    assert body["limited"] is True and len(body["results"]) == 3
    body = search(alice, "member", limit=5)
    assert body["limited"] is False and len(body["results"]) == 5
    body = search(alice, "member")  # default limit 10
    assert body["limited"] is False and sorted(x["user_id"] for x in body["results"]) == members
    body = search(alice, "member", limit=0)
    assert body == {"limited": True, "results": []}
    # a huge or negative limit is clamped, not an error
    assert len(search(alice, "member", limit=2**53 - 1)["results"]) == 5
    assert search(alice, "member", limit=-5) == {"limited": True, "results": []}


def test_clamped_to_fifty(tmp_path):
    # every local user searchable: 55 users without 55 joins (which the join rate limit slows)
    srv = ServerThread(tmp_path / "data", user_directory_search_all_users=True).start()
    try:
        alice = make_user(srv)
        for i in range(55):
            make_user(srv, f"many{i:02d}")
        body = search(alice, "many", limit=1000)
        assert body["limited"] is True and len(body["results"]) == 50
        # ordered by localpart when nobody has a display name
        assert found(alice, "many", limit=3) == [f"@many{i:02d}:localhost" for i in range(3)]
    finally:
        srv.stop()


def test_wildcards_are_literal(server):
    alice = make_user(server)
    bob = make_user(server, "bob_x")
    carol = make_user(server, "carolx")
    set_name(carol, "50% Carol")
    room = create_room(alice)
    join(bob, room)
    join(carol, room)
    for term in ("%", "_", "\\", "%%", "*", ".*", "b%", "c_rol"):
        assert found(alice, term) == [], term
    assert found(alice, "bob_") == [bob.user_id]
    assert found(alice, "50%") == [carol.user_id]


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({}, "M_BAD_JSON"),
        ({"search_term": None}, "M_BAD_JSON"),
        ({"search_term": 5}, "M_BAD_JSON"),
        ({"search_term": ["a"]}, "M_BAD_JSON"),
        ({"search_term": "a", "limit": "10"}, "M_BAD_JSON"),
        ({"search_term": "a", "limit": 1.5}, "M_BAD_JSON"),
        ({"search_term": "a", "limit": True}, "M_BAD_JSON"),
        ({"search_term": "a", "limit": None}, "M_BAD_JSON"),
        ({"search_term": "x" * 257}, "M_INVALID_PARAM"),
        ({"search_term": "a " * 17}, "M_INVALID_PARAM"),
    ],
)
def test_bad_bodies(server, body, errcode):
    alice = make_user(server)
    assert_error(alice.request("POST", SEARCH, body), 400, errcode)


def test_not_json_and_no_token(server):
    alice = make_user(server)
    assert_error(alice.request("POST", SEARCH, raw=b"[1]"), 400, "M_BAD_JSON")
    assert_error(alice.request("POST", SEARCH, raw=b"{"), 400, "M_NOT_JSON")
    r = alice.request("POST", SEARCH, {"search_term": "a"}, token=None)
    assert_error(r, 401, "M_MISSING_TOKEN")


def test_deactivated_users_are_never_found(server):
    alice, bob = make_user(server), make_user(server)
    set_name(bob, "Gone Soon")
    room = create_room(alice)
    join(bob, room)
    assert found(alice, "gone") == [bob.user_id]
    hs = server.hs
    assert hs is not None
    run_on_server(
        server, hs.store.transaction(lambda conn: hs.store.deactivate_user_in(conn, bob.user_id))
    )
    assert found(alice, "gone") == []
    assert found(alice, bob.user_id) == []


def test_search_all_users_switch(tmp_path):
    for search_all in (False, True):
        srv = ServerThread(
            tmp_path / f"data{search_all}", user_directory_search_all_users=search_all
        ).start()
        try:
            alice, loner = make_user(srv), make_user(srv, "lonely.one")
            set_name(loner, "Lonely One")
            expected = [loner.user_id] if search_all else []
            assert found(alice, "lonely") == expected
            assert found(alice, loner.user_id) == expected
        finally:
            srv.stop()


def test_non_ascii_names_and_words(server):
    alice, flower, zoe = make_user(server), make_user(server), make_user(server)
    set_name(flower, "🌸Anna–Lena")  # an emoji and an en dash between words
    set_name(zoe, "ZOË Ärger")
    room = create_room(alice)
    join(flower, room)
    join(zoe, room)
    assert found(alice, "anna") == [flower.user_id]
    assert found(alice, "lena") == [flower.user_id]
    assert found(alice, "zoë") == [zoe.user_id]
    assert found(alice, "är") == [zoe.user_id]
    assert found(alice, "zo ärg") == [zoe.user_id]
    assert found(alice, "rger") == []


def test_name_changes_are_seen_by_the_next_search(server):
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    set_name(bob, "Old Name")
    assert found(alice, "old") == [bob.user_id]
    set_name(bob, "New Name")
    assert found(alice, "old") == []
    assert search(alice, "new")["results"] == [{"user_id": bob.user_id, "display_name": "New Name"}]
    carol = make_user(server, "carol.late")  # created after the index was built
    join(carol, room)
    assert found(alice, "carol") == [carol.user_id]
    r = bob.request(
        "PUT", f"{V3}/profile/{bob.user_id}/avatar_url", {"avatar_url": "mxc://localhost/a"}
    )
    assert r.status == 200, r.body
    assert search(alice, "new")["results"][0]["avatar_url"] == "mxc://localhost/a"
