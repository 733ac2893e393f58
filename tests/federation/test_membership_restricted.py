"""Restricted rooms over federation (S-S API "Restricted rooms"; issue 7, defect 6): the
resident server signs a join for one of its users only after checking the room's rule itself,
with the same restricted-join authoriser as local joins."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.support.peer import V1, bastion_and_peer, on_server
from tests.support.rooms import create_room

V2 = "/_matrix/federation/v2"
JAUVS = "join_authorised_via_users_server"


@pytest.fixture(scope="module")
def world(tmp_path_factory, test_ca):
    with bastion_and_peer(tmp_path_factory.mktemp("restricted"), test_ca) as world:
        yield world


def restricted(admin, space: str) -> str:
    return create_room(admin, room_version="10", preset="private_chat", initial_state=[{
        "type": "m.room.join_rules",
        "content": {"join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}]},
    }])  # fmt: skip


def membership(srv, room_id, user):
    return on_server(srv, lambda: srv.hs.rooms.membership_of(room_id, user))


def test_send_join_naming_our_user_is_checked_before_we_sign(world):
    srv, peer, admin = world
    space = create_room(admin, preset="private_chat")  # the peer's users are not in it
    room_id = restricted(admin, space)
    user = peer.user("intruder")
    q = quote(room_id, safe="")
    status, body = peer.request(srv, "GET", f"{V1}/make_join/{q}/{quote(user, safe='')}?ver=10")
    assert status == 403, body
    # The joining server skips make_join and names our user as the authoriser itself.
    eid, ev = peer.build_on(srv, room_id, user, "m.room.member",
                            {"membership": "join", JAUVS: admin.user_id}, user)  # fmt: skip
    status, body = peer.request(srv, "PUT", f"{V2}/send_join/{q}/{quote(eid, safe='')}", ev)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
    assert membership(srv, room_id, user) is None


def test_send_join_of_a_member_of_the_allowed_room_is_authorised(world):
    srv, peer, admin = world
    space = create_room(admin, preset="public_chat")
    room_id = restricted(admin, space)
    user = peer.user("friend")
    peer.join(srv, space, user, "ver=12&ver=10")
    eid = peer.join(srv, room_id, user)
    assert membership(srv, room_id, user) == "join"
    stored = on_server(srv, lambda: srv.hs.store.get_event(eid))
    assert stored["content"][JAUVS] == admin.user_id
    assert srv.hs.server_name in stored["signatures"]
