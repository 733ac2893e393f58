"""POST /_matrix/client/v3/rooms/{roomId}/upgrade (C-S API "Room Upgrades"): who may upgrade,
which versions, the tombstone and predecessor links, the state copied, the old room restricted,
aliases and the directory listing moved, bans copied, members able to follow."""

from __future__ import annotations

import time
import urllib.parse
import uuid

import pytest

from tests.support.harness import Client

V3 = "/_matrix/client/v3"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def create(c: Client, **body) -> str:
    r = c.request("POST", f"{V3}/createRoom", body)
    assert r.status == 200, r.body
    return r.body["room_id"]


def state(c: Client, room: str, etype: str, key: str = ""):
    return c.request("GET", f"{V3}/rooms/{q(room)}/state/{etype}/{q(key)}")


def put_state(c: Client, room: str, etype: str, content: dict, key: str = "") -> None:
    r = c.request("PUT", f"{V3}/rooms/{q(room)}/state/{etype}/{q(key)}", content)
    assert r.status == 200, r.body


def join(c: Client, room: str):
    return c.request("POST", f"{V3}/join/{q(room)}", {})


def send(c: Client, room: str, text: str = "hi"):
    txn = uuid.uuid4().hex
    return c.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/{txn}",
                     {"msgtype": "m.text", "body": text})  # fmt: skip


def upgrade(c: Client, room: str, **body):
    return c.request("POST", f"{V3}/rooms/{q(room)}/upgrade", body)


def full_state(c: Client, room: str) -> dict:
    r = c.request("GET", f"{V3}/rooms/{q(room)}/state")
    assert r.status == 200, r.body
    return {(e["type"], e["state_key"]): e for e in r.body}


def test_admin_upgrades_a_public_room_and_a_member_follows(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    old = create(alice, room_version="10", preset="public_chat", visibility="public",
                 name="Lounge", topic="chat", room_alias_name="lounge",
                 initial_state=[
                     {"type": "m.room.encryption", "state_key": "",
                      "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
                     {"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://a/b"}},
                     {"type": "m.room.server_acl", "state_key": "",
                      "content": {"allow": ["*"], "deny": ["evil.example"]}},
                 ])  # fmt: skip
    assert join(bob, old).status == 200
    r = upgrade(alice, old, new_version="11")
    assert r.status == 200, r.body
    new = r.body["replacement_room"]
    assert new != old and new.startswith("!")

    # The links: the tombstone in the old room, the predecessor in the new one.
    tomb = state(bob, old, "m.room.tombstone")
    assert tomb.status == 200 and tomb.body["replacement_room"] == new and tomb.body["body"]
    create_ev = full_state(alice, new)[("m.room.create", "")]
    assert create_ev["content"]["room_version"] == "11"
    pred = create_ev["content"]["predecessor"]
    assert pred["room_id"] == old and pred["event_id"].startswith("$")
    ev = alice.request("GET", f"{V3}/rooms/{q(old)}/event/{q(pred['event_id'])}")
    assert ev.status == 200  # the last known event of the old room

    # State copied.
    new_state = full_state(alice, new)
    old_state = full_state(alice, old)
    for key in (("m.room.name", ""), ("m.room.topic", ""), ("m.room.avatar", ""),
                ("m.room.encryption", ""), ("m.room.server_acl", ""),
                ("m.room.join_rules", ""), ("m.room.history_visibility", ""),
                ("m.room.guest_access", "")):  # fmt: skip
        assert new_state[key]["content"] == old_state[key]["content"], key
    assert new_state[("m.room.power_levels", "")]["content"]["users"] == {alice.user_id: 100}

    # Aliases, the canonical alias and the directory listing moved.
    alias = "#lounge:localhost"
    r = alice.request("GET", f"{V3}/directory/room/{q(alias)}")
    assert (r.status, r.body["room_id"]) == (200, new)
    assert new_state[("m.room.canonical_alias", "")]["content"] == {"alias": alias}
    assert state(alice, old, "m.room.canonical_alias").body.get("alias") is None
    vis = alice.request("GET", f"{V3}/directory/list/room/{q(new)}")
    assert vis.body["visibility"] == "public"
    vis = alice.request("GET", f"{V3}/directory/list/room/{q(old)}")
    assert vis.body["visibility"] == "private"

    # The old room restricted: ordinary members may no longer send or invite.
    pl = state(alice, old, "m.room.power_levels").body
    assert pl["events_default"] == 50 and pl["invite"] == 50
    r = send(bob, old)
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")

    # Bob follows the tombstone's replacement_room (public: no invite needed) and talks.
    assert join(bob, new).status == 200
    assert send(bob, new, "hello again").status == 200
    assert send(alice, new, "welcome").status == 200


def test_member_without_power_is_refused_and_bad_versions(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    carol = Client(server.base_url).register()
    room = create(alice, preset="public_chat")
    assert join(bob, room).status == 200
    r = upgrade(bob, room, new_version="12")
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")
    r = upgrade(carol, room, new_version="12")  # not in the room
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")
    for version in ("999", "1", "", "x" * 5000):
        r = upgrade(alice, room, new_version=version)
        assert (r.status, r.body["errcode"]) == (400, "M_UNSUPPORTED_ROOM_VERSION"), version
    for body in ({}, {"new_version": 12}, {"new_version": None}):
        r = alice.request("POST", f"{V3}/rooms/{q(room)}/upgrade", body)
        assert (r.status, r.body["errcode"]) == (400, "M_BAD_JSON"), body
    r = upgrade(alice, room, new_version="12", additional_creators="@x:y")
    assert (r.status, r.body["errcode"]) == (400, "M_BAD_JSON")
    r = upgrade(alice, room, new_version="12", additional_creators=["not a user"])
    assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM")
    r = alice.request("POST", f"{V3}/rooms/{q('!nope:localhost')}/upgrade", {"new_version": "12"})
    assert r.status == 403
    r = alice.request("POST", f"{V3}/rooms/{q('not-a-room')}/upgrade", {"new_version": "12"})
    assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM")
    # Nothing happened to the room.
    assert state(alice, room, "m.room.tombstone").status == 404
    assert send(bob, room).status == 200


def test_private_room_to_v12_members_invited_bans_copied(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    mallory = Client(server.base_url).register()
    old = create(
        alice, room_version="11", preset="private_chat", invite=[bob.user_id, mallory.user_id]
    )
    assert join(bob, old).status == 200
    assert join(mallory, old).status == 200
    r = alice.request("POST", f"{V3}/rooms/{q(old)}/ban", {"user_id": mallory.user_id})
    assert r.status == 200, r.body
    r = upgrade(alice, old, new_version="12", additional_creators=[bob.user_id])
    assert r.status == 200, r.body
    new = r.body["replacement_room"]
    st = full_state(alice, new)
    create_ev = st[("m.room.create", "")]
    assert create_ev["content"]["room_version"] == "12"
    assert create_ev["content"]["additional_creators"] == [bob.user_id]
    assert create_ev["content"]["predecessor"] == {"room_id": old}  # v12: event_id omitted
    # v12 creators have unlimited power: they are not listed in the power levels.
    users = st[("m.room.power_levels", "")]["content"].get("users", {})
    assert alice.user_id not in users and bob.user_id not in users
    assert st[("m.room.join_rules", "")]["content"]["join_rule"] == "invite"
    # The ban is copied; bob (joined in the old room) is invited and can follow.
    assert st[("m.room.member", mallory.user_id)]["content"]["membership"] == "ban"
    assert st[("m.room.member", bob.user_id)]["content"]["membership"] == "invite"
    assert join(bob, new).status == 200
    assert join(mallory, new).status == 403
    assert send(bob, new).status == 200


def test_upgrader_power_raised_while_copying_then_restored(server):
    alice = Client(server.base_url).register()
    carol = Client(server.base_url).register()
    old = create(alice, room_version="10", preset="public_chat", name="Ops")
    assert join(carol, old).status == 200
    pl = state(alice, old, "m.room.power_levels").body
    pl["users"][carol.user_id] = 60
    pl["events"]["m.room.tombstone"] = 60
    pl["events"]["m.room.name"] = 100
    put_state(alice, old, "m.room.power_levels", pl)
    r = upgrade(carol, old, new_version="11")
    assert r.status == 200, r.body
    new = r.body["replacement_room"]
    st = full_state(carol, new)
    assert st[("m.room.name", "")]["content"] == {"name": "Ops"}
    assert st[("m.room.name", "")]["sender"] == carol.user_id
    final = st[("m.room.power_levels", "")]["content"]
    assert final["users"] == {alice.user_id: 100, carol.user_id: 60}
    assert final["events"]["m.room.name"] == 100
    # Carol cannot change the power levels of the old room (100 needed): it stays as it was,
    # with the tombstone sent.
    assert state(alice, old, "m.room.tombstone").body["replacement_room"] == new
    assert state(alice, old, "m.room.power_levels").body["events_default"] == 0


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_every_creatable_target_from_each_version(server, version):
    alice = Client(server.base_url).register()
    old = create(alice, room_version=version, preset="private_chat", name="n")
    r = upgrade(alice, old, new_version=version)
    assert r.status == 200, r.body
    new = r.body["replacement_room"]
    assert full_state(alice, new)[("m.room.name", "")]["content"] == {"name": "n"}
    # A tombstoned room may be upgraded again; the replacement is the newest room.
    r = upgrade(alice, old, new_version="12")
    assert r.status == 200, r.body
    assert (
        state(alice, old, "m.room.tombstone").body["replacement_room"]
        == (r.body["replacement_room"])
    )


def test_tags_and_direct_chats_follow_the_user_into_the_new_room(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    old = create(alice, room_version="11", preset="trusted_private_chat", is_direct=True,
                 invite=[bob.user_id])  # fmt: skip
    assert join(bob, old).status == 200
    base = f"{V3}/user/{q(bob.user_id)}"
    r = bob.request("PUT", f"{base}/rooms/{q(old)}/tags/m.favourite", {"order": 0.5})
    assert r.status == 200, r.body
    direct = {alice.user_id: [old, "!other:localhost"]}
    r = bob.request("PUT", f"{base}/account_data/m.direct", direct)
    assert r.status == 200, r.body
    r = upgrade(alice, old, new_version="12")
    assert r.status == 200, r.body
    new = r.body["replacement_room"]
    # Not joined yet: nothing carried over.
    assert bob.request("GET", f"{base}/rooms/{q(new)}/tags").body == {"tags": {}}
    assert join(bob, new).status == 200
    tags = bob.request("GET", f"{base}/rooms/{q(new)}/tags")
    assert tags.body == {"tags": {"m.favourite": {"order": 0.5}}}
    r = bob.request("GET", f"{base}/account_data/m.direct")
    assert r.body == {alice.user_id: [old, "!other:localhost", new]}
    # The old room keeps its tag; a second join changes nothing.
    assert bob.request("GET", f"{base}/rooms/{q(old)}/tags").body["tags"] == {
        "m.favourite": {"order": 0.5}
    }
    # Alice never had tags: none appear for her.
    assert alice.request("GET", f"{V3}/user/{q(alice.user_id)}/rooms/{q(new)}/tags").body == {
        "tags": {}
    }


def test_room_push_rules_follow_the_user_into_the_new_room(server):
    """The user's rules for the old room (its ``room`` rule, and override and underride rules
    naming it) are copied for the new room when they join it; other rules are left alone."""
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    old = create(alice, preset="public_chat")
    assert join(bob, old).status == 200
    base = f"{V3}/pushrules/global"
    mute = {"actions": []}
    assert bob.request("PUT", f"{base}/room/{q(old)}", mute).status == 200
    loud = {"actions": ["notify", {"set_tweak": "sound", "value": "default"}],
            "conditions": [{"kind": "event_match", "key": "room_id", "pattern": old},
                           {"kind": "event_match", "key": "content.body", "pattern": "*storm*"}]}  # fmt: skip
    assert bob.request("PUT", f"{base}/override/storm-{old}", loud).status == 200
    assert (
        bob.request("PUT", f"{base}/override/storm-{old}/enabled", {"enabled": False}).status == 200
    )
    other = {"actions": ["notify"],
             "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "gale"}]}  # fmt: skip
    assert bob.request("PUT", f"{base}/override/gale", other).status == 200
    r = upgrade(alice, old, new_version="12")
    assert r.status == 200, r.body
    new = r.body["replacement_room"]
    assert bob.request("GET", f"{base}/room/{q(new)}").status == 404  # not joined yet
    assert join(bob, new).status == 200

    r = bob.request("GET", f"{base}/room/{q(new)}")
    assert r.status == 200, r.body
    assert r.body["actions"] == [] and r.body["enabled"] is True
    r = bob.request("GET", f"{base}/override/storm-{q(new)}")
    assert r.status == 200, r.body
    assert r.body["enabled"] is False and r.body["actions"] == loud["actions"]
    assert r.body["conditions"][0] == {"kind": "event_match", "key": "room_id", "pattern": new}
    assert r.body["conditions"][1] == loud["conditions"][1]
    # The old room's rules stay; the rule naming no room is not duplicated.
    assert bob.request("GET", f"{base}/room/{q(old)}").status == 200
    rules = bob.request("GET", "/_matrix/client/v3/pushrules/").body["global"]["override"]
    assert [x["rule_id"] for x in rules].count("gale") == 1
    # The copied mute applies: alice's message in the new room does not count for bob, while
    # one sent after it in a room without rules does (evaluation runs in order, after commit).
    control = create(alice, preset="public_chat")
    assert join(bob, control).status == 200
    send(alice, new, "quiet please")
    send(alice, control, "heard")

    def count(body: dict, room: str) -> int:
        joined = body["rooms"]["join"].get(room, {})
        return joined.get("unread_notifications", {}).get("notification_count", 0)

    deadline = time.monotonic() + 10
    while True:
        r = bob.request("GET", f"{V3}/sync", query={"timeout": "0"})
        if count(r.body, control) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert count(r.body, control) == 1
    assert count(r.body, new) == 0
