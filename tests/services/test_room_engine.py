"""The room engine (bastion.services.room_engine): the depth of new events, createRoom under
concurrency, and who chooses the authoriser of a restricted join."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from bastion.services.room_engine import MAX_DEPTH, MAX_PREV_EVENTS, RoomHead, next_depth
from tests.support.guard import exempt

V3 = "/_matrix/client/v3"


def create(c, **body):
    r = c.request("POST", V3 + "/createRoom", body)
    assert r.status == 200, r.body
    return r.body["room_id"]


# -- depth (S-S API PDUs "depth"; Synapse MAX_DEPTH = 2**53 - 1) --------------------------------
def test_max_depth_is_canonical_json_largest_integer():
    assert MAX_DEPTH == 2**53 - 1


@pytest.mark.parametrize(
    ("prevs", "depth"),
    [([], 1), ([0], 1), ([5], 6), ([3, 9, 4], 10), ([2**53 - 2], 2**53 - 1),
     ([2**53 - 1], 2**53 - 1), ([1, 2**53 - 1], 2**53 - 1)],
)  # fmt: skip
def test_next_depth_is_deepest_prev_plus_one_capped(prevs, depth):
    assert next_depth(prevs) == depth


def test_head_depth_comes_from_the_prev_events_it_names():
    # 25 extremities: only the newest 20 are prev events; an older, deeper one does not count.
    ext = [f"$e{i}" for i in range(25)]
    depths = {e: 10 for e in ext}
    depths["$e0"] = 2**53 - 1
    head = RoomHead("!r:x", "10", extremities=ext, ext_depths=depths)
    assert head.prev_events() == ext[-MAX_PREV_EVENTS:]
    assert head.next_depth() == 11
    depths["$e24"] = 2**53 - 1
    assert head.next_depth() == 2**53 - 1


# -- defect 7: concurrent createRoom by one user ------------------------------------------------
@pytest.mark.parametrize("version", ["12", "10"])
def test_concurrent_create_room_by_one_user(server, client, version):
    alice = client.register()
    exempt(server, alice)  # 30 rooms at once from one user: a concurrency test, bulk by design

    def one(_):
        return alice.request("POST", V3 + "/createRoom", {"room_version": version})

    with ThreadPoolExecutor(30) as pool:
        results = list(pool.map(one, range(30)))
    assert [r.status for r in results] == [200] * 30, [r.body for r in results if r.status != 200]
    ids = [r.body["room_id"] for r in results]
    assert len(set(ids)) == 30
    joined = alice.request("GET", V3 + "/joined_rooms").body["joined_rooms"]
    assert set(ids) <= set(joined)
    for room_id in ids[:5]:
        r = alice.request("GET", f"{V3}/rooms/{room_id}/state/m.room.create")
        assert r.status == 200, r.body


# -- defect 6: only the server chooses the authoriser of a restricted join ----------------------
def restricted_room(alice, space: str, version: str) -> str:
    room_id = create(alice, room_version=version, preset="private_chat", initial_state=[{
        "type": "m.room.join_rules",
        "content": {"join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}]},
    }])  # fmt: skip
    r = alice.request(
        "PUT", f"{V3}/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}",
        {"msgtype": "m.text", "body": "the secret plans"},
    )  # fmt: skip
    assert r.status == 200, r.body
    return room_id


@pytest.mark.parametrize("version", ["10", "12"])
def test_forged_authoriser_in_member_state_is_refused(client, version):
    alice, mallory = client.register(), client.register()
    space = create(alice, preset="private_chat")  # mallory is not in it
    room_id = restricted_room(alice, space, version)
    me = mallory.user_id
    r = mallory.request(
        "PUT", f"{V3}/rooms/{room_id}/state/m.room.member/{me}",
        {"membership": "join", "join_authorised_via_users_server": alice.user_id},
    )  # fmt: skip
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN", r.body
    r = mallory.request("GET", f"{V3}/rooms/{room_id}/messages", query={"dir": "b"})
    assert r.status == 403, r.body
    r = mallory.request("GET", f"{V3}/rooms/{room_id}/state")
    assert r.status == 403, r.body
    r = alice.request("GET", f"{V3}/rooms/{room_id}/joined_members")
    assert me not in r.body["joined"]
    # POST /join refuses too.
    assert mallory.request("POST", f"{V3}/join/{room_id}", {}).status == 403


def test_member_state_join_gets_the_servers_authoriser(client):
    alice, bob, carol = client.register(), client.register(), client.register()
    space = create(alice, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{space}", {}).status == 200
    assert carol.request("POST", f"{V3}/join/{space}", {}).status == 200
    room_id = restricted_room(alice, space, "10")
    # bob meets the rule; the authoriser he names (carol) is replaced by the one the server
    # chooses.
    r = bob.request(
        "PUT", f"{V3}/rooms/{room_id}/state/m.room.member/{bob.user_id}",
        {"membership": "join", "join_authorised_via_users_server": carol.user_id,
         "displayname": "Bob"},
    )  # fmt: skip
    assert r.status == 200, r.body
    r = alice.request("GET", f"{V3}/rooms/{room_id}/state/m.room.member/{bob.user_id}")
    assert r.body["join_authorised_via_users_server"] == alice.user_id
    assert r.body["displayname"] == "Bob"
    # A non-join membership never carries a client-chosen authoriser either.
    r = bob.request(
        "PUT", f"{V3}/rooms/{room_id}/state/m.room.member/{bob.user_id}",
        {"membership": "leave", "join_authorised_via_users_server": carol.user_id},
    )  # fmt: skip
    assert r.status == 200, r.body
    r = alice.request("GET", f"{V3}/rooms/{room_id}/state/m.room.member/{bob.user_id}")
    assert r.body == {"membership": "leave"}
