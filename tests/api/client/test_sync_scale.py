"""/sync at scale keeps its answers (C-S API "Syncing", "Lazy-loading room members"): the work
it skips or keeps (services/sync.py: only the rooms that changed since the token; member lists,
memberships and parsed state events kept in memory) never changes what a client gets."""

from __future__ import annotations

import json

import pytest

from tests.api.client.test_rooms import V3, create, send
from tests.api.client.test_sync import sync
from tests.support.accounts import call_on_server

LAZY = json.dumps({"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 3}}})


@pytest.fixture
def alice(client):
    return client.register()


@pytest.fixture
def bob(client):
    return client.register()


def _without_age(obj):
    """The response without ``unsigned.age`` (it depends on the clock)."""
    if isinstance(obj, dict):
        return {k: _without_age(v) for k, v in obj.items() if k != "age"}
    if isinstance(obj, list):
        return [_without_age(v) for v in obj]
    return obj


def _visit_every_room(server, monkeypatch) -> None:
    """Make /sync compute every joined room, as it did before it skipped the unchanged ones."""
    hs = server.hs
    monkeypatch.setattr(hs.store, "rooms_with_events_between", lambda ids, a, b: set(ids))
    for c in hs.sync_contributors:
        monkeypatch.setattr(c, "rooms_changed", lambda ctx: None)


@pytest.mark.parametrize(
    "query",
    [{}, {"filter": LAZY}, {"use_state_after": "true"}],
    ids=["default", "lazy", "state_after"],
)
def test_incremental_sync_skipping_quiet_rooms_answers_as_visiting_all(
    server, alice, bob, monkeypatch, query
):
    rooms = [create(alice, preset="public_chat", name=f"r{i}") for i in range(8)]
    for r in rooms[:4]:
        assert bob.request("POST", f"{V3}/join/{r}", {}).status == 200
    targets = {r: send(alice, r).body["event_id"] for r in rooms}
    since = sync(alice, **query)["next_batch"]
    # One kind of change in each of six rooms; two rooms stay quiet.
    send(bob, rooms[0])  # a message
    assert (
        alice.request(  # room account data
            "PUT",
            f"{V3}/user/{alice.user_id}/rooms/{rooms[1]}/account_data/org.example.x",
            {"a": 1},
        ).status
        == 200
    )
    assert (
        bob.request(  # a receipt
            "POST", f"{V3}/rooms/{rooms[2]}/receipt/m.read/{targets[rooms[2]]}", {}
        ).status
        == 200
    )
    assert (
        bob.request(  # typing
            "PUT", f"{V3}/rooms/{rooms[3]}/typing/{bob.user_id}", {"typing": True, "timeout": 30000}
        ).status
        == 200
    )
    assert (
        alice.request(  # a state change
            "PUT", f"{V3}/rooms/{rooms[4]}/state/m.room.topic/", {"topic": "new"}
        ).status
        == 200
    )
    assert bob.request("POST", f"{V3}/join/{rooms[5]}", {}).status == 200  # a member joins
    fast = sync(alice, since, **query)
    assert set(fast["rooms"]["join"]) == set(rooms[:6])
    _visit_every_room(server, monkeypatch)
    reference = sync(alice, since, **query)
    assert _without_age(fast) == _without_age(reference)


def test_summary_follows_joins_leaves_and_invites(alice, bob, client):
    room_id = create(alice, preset="public_chat")
    first = sync(alice)
    assert first["rooms"]["join"][room_id]["summary"]["m.joined_member_count"] == 1
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    after_join = sync(alice, first["next_batch"])
    summary = after_join["rooms"]["join"][room_id]["summary"]
    assert summary["m.joined_member_count"] == 2
    assert summary["m.heroes"] == [bob.user_id]
    carol = client.register()
    invite = {"user_id": carol.user_id}
    assert alice.request("POST", f"{V3}/rooms/{room_id}/invite", invite).status == 200
    after_invite = sync(alice, after_join["next_batch"])
    assert after_invite["rooms"]["join"][room_id]["summary"]["m.invited_member_count"] == 1
    assert bob.request("POST", f"{V3}/rooms/{room_id}/leave", {}).status == 200
    after_leave = sync(alice, after_invite["next_batch"])
    summary = after_leave["rooms"]["join"][room_id]["summary"]
    assert summary["m.joined_member_count"] == 1
    assert summary["m.heroes"] == [carol.user_id]


def test_a_redacted_state_event_is_served_redacted_after_it_was_read(server, alice):
    room_id = create(alice, preset="private_chat", topic="secret topic")
    for _ in range(5):
        send(alice, room_id)
    flt = json.dumps({"room": {"timeline": {"limit": 1}}})

    def topic(body: dict) -> dict:
        state = body["rooms"]["join"][room_id]["state"]["events"]
        return next(e for e in state if e["type"] == "m.room.topic")

    before = topic(sync(alice, filter=flt))  # the state event is read (and kept)
    assert before["content"]["topic"] == "secret topic"
    r = alice.request("PUT", f"{V3}/rooms/{room_id}/redact/{before['event_id']}/t1", {})
    assert r.status == 200
    for _ in range(2):  # the redaction out of the timeline window
        send(alice, room_id)
    after = topic(sync(alice, filter=flt))
    assert after["event_id"] == before["event_id"]
    assert "topic" not in after["content"]
    assert after["unsigned"]["redacted_because"]["event_id"] == r.body["event_id"]


def test_the_membership_caches_follow_a_leave_and_a_rejoin(server, alice, bob):
    room_id = create(alice, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    token = sync(bob)["next_batch"]
    assert bob.request("POST", f"{V3}/rooms/{room_id}/leave", {}).status == 200
    left = sync(bob, token)
    assert room_id in left["rooms"]["leave"] and room_id not in left["rooms"]["join"]
    sharing = call_on_server(server, server.hs.store.get_users_sharing_room_with, alice.user_id)
    assert bob.user_id not in sharing
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    back = sync(bob, left["next_batch"])
    assert room_id in back["rooms"]["join"]
    sharing = call_on_server(server, server.hs.store.get_users_sharing_room_with, alice.user_id)
    assert bob.user_id in sharing


def test_a_kept_timeline_slice_shows_a_later_redaction(alice, bob):
    """A left room's section ends at the leave: the same slice is asked again by a sync from the
    same token, after a redaction of one of its events."""
    room_id = create(alice, preset="public_chat")
    assert bob.request("POST", f"{V3}/join/{room_id}", {}).status == 200
    token = sync(bob)["next_batch"]
    eid = send(alice, room_id, {"msgtype": "m.text", "body": "to be redacted"}).body["event_id"]
    assert bob.request("POST", f"{V3}/rooms/{room_id}/leave", {}).status == 200

    def message(body: dict) -> dict:
        events = body["rooms"]["leave"][room_id]["timeline"]["events"]
        return next(e for e in events if e["event_id"] == eid)

    assert message(sync(bob, token))["content"]["body"] == "to be redacted"
    assert alice.request("PUT", f"{V3}/rooms/{room_id}/redact/{eid}/r1", {}).status == 200
    assert message(sync(bob, token))["content"] == {}
