"""The user directory and users of other servers (C-S API "User directory": the server "MUST at
a minimum consider the users the requesting user shares a room with and those who reside in
public rooms"): a user of another Bastion is found by a local user who shares a room with them,
under the name their membership event gives, and not by one who does not; a per-room name used
only in a room the searcher is not in is never shown; a new name and a leave are seen by the
next search."""

from __future__ import annotations

from tests.support import server_pair
from tests.support.harness import Client
from tests.support.server_pair import V3, q, shared_room, wait_for

pair = server_pair.pair  # the fixture


def _found(c: Client, term: str) -> list[tuple[str, str | None]]:
    r = c.request("POST", f"{V3}/user_directory/search", {"search_term": term})
    assert r.status == 200, r.body
    return [(x["user_id"], x.get("display_name")) for x in r.body["results"]]


def _set_room_name(c: Client, room_id: str, name: str) -> None:
    r = c.request(
        "PUT", f"{V3}/rooms/{q(room_id)}/state/m.room.member/{q(c.user_id)}",
        {"membership": "join", "displayname": name},
    )  # fmt: skip
    assert r.status == 200, r.body


def test_remote_users_in_shared_rooms_are_found_by_their_room_names(pair):
    a, b = pair
    alice = Client(a.base_url).register()
    dave = Client(a.base_url).register()
    carol = Client(a.base_url).register()  # shares no room with bob
    bob = Client(b.base_url).register()
    assert bob.request(
        "PUT", f"{V3}/profile/{q(bob.user_id)}/displayname", {"displayname": "Robert Tern"}
    ).status == 200  # fmt: skip
    with_alice = shared_room(alice, bob, preset="private_chat")
    with_dave = shared_room(dave, bob, preset="private_chat")
    wait_for(lambda: _found(alice, "tern") == [(bob.user_id, "Robert Tern")])
    assert _found(carol, "tern") == []
    assert _found(carol, bob.user_id) == []

    # A name bob uses only in dave's room: dave finds him by it, alice never does.
    _set_room_name(bob, with_dave, "Kittiwake")
    wait_for(lambda: _found(dave, "kittiwake") == [(bob.user_id, "Kittiwake")])
    assert _found(alice, "kittiwake") == []
    assert _found(alice, "tern") == [(bob.user_id, "Robert Tern")]

    # A new name in alice's room is seen by her next search; the old one finds him no more.
    _set_room_name(bob, with_alice, "Bonxie")
    wait_for(lambda: _found(alice, "bonxie") == [(bob.user_id, "Bonxie")])
    assert _found(alice, "tern") == []

    # Once bob has left alice's room she no longer finds him.
    assert bob.request("POST", f"{V3}/rooms/{q(with_alice)}/leave", {}).status == 200
    wait_for(lambda: _found(alice, "bonxie") == [] and _found(alice, bob.user_id) == [])
    assert _found(dave, "kittiwake") == [(bob.user_id, "Kittiwake")]


def test_remote_users_in_public_rooms_are_found_by_everyone(pair):
    a, b = pair
    alice = Client(a.base_url).register()
    carol = Client(a.base_url).register()  # in no room at all
    bob = Client(b.base_url).register()
    room_id = shared_room(alice, bob, preset="public_chat")
    _set_room_name(bob, room_id, "Gannet Shearwater")
    wait_for(lambda: _found(carol, "shearwater") == [(bob.user_id, "Gannet Shearwater")])
    # The whole user ID, and its localpart, find him too.
    assert _found(carol, bob.user_id) == [(bob.user_id, "Gannet Shearwater")]
    assert _found(carol, bob.user_id.split(":")[0]) == [(bob.user_id, "Gannet Shearwater")]
