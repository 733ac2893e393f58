"""A room upgrade with a member on another Bastion (C-S API "Room Upgrades"): the remote
member of an invite-only room is invited to the replacement room (countersigned by its
server), sees the tombstone and joins the new room over federation."""

from __future__ import annotations

from tests.support import server_pair
from tests.support.harness import Client
from tests.support.server_pair import q, sync_until

pair = server_pair.pair  # the fixture

V3 = "/_matrix/client/v3"


def _invited(room_id):
    return lambda seen: any(room_id in s.get("rooms", {}).get("invite", {}) for s in seen)


def test_remote_member_follows_an_invite_only_upgrade(pair):
    a, b = pair
    alice = Client(a.base_url).register()
    bob = Client(b.base_url).register()
    r = alice.request(
        "POST",
        f"{V3}/createRoom",
        {"preset": "private_chat", "room_version": "11", "invite": [bob.user_id], "name": "Far"},
    )
    assert r.status == 200, r.body
    old = r.body["room_id"]
    sync_until(bob, _invited(old))
    r = bob.request("POST", f"{V3}/join/{q(old)}", {}, query={"via": a.hs.server_name})
    assert r.status == 200, r.body

    r = alice.request("POST", f"{V3}/rooms/{q(old)}/upgrade", {"new_version": "12"})
    assert r.status == 200, r.body
    new = r.body["replacement_room"]

    def tombstoned(seen):
        return any(
            e["type"] == "m.room.tombstone" and e["content"].get("replacement_room") == new
            for s in seen
            for e in s.get("rooms", {}).get("join", {}).get(old, {}).get("timeline", {})
            .get("events", [])
        )  # fmt: skip

    sync_until(bob, tombstoned)
    sync_until(bob, _invited(new))
    r = bob.request("POST", f"{V3}/join/{q(new)}", {}, query={"via": a.hs.server_name})
    assert r.status == 200, r.body
    r = alice.request("GET", f"{V3}/rooms/{q(new)}/joined_members")
    assert r.status == 200 and bob.user_id in r.body["joined"]
