"""The guard on federated traffic between two Bastions over TLS: an event the receiving
server's guard blocks is soft-failed there (stored, not served to its users, recorded with the
origin), while the sending server's users see it; a join from a server whose user is on a
policy list is refused at make_join (S-S API "Joining Rooms", "Soft failure")."""

from __future__ import annotations

from bastion.guard.signals import Signal
from tests.guard.core_support import (
    GUARD,
    Scripted,
    admin_client,
    block,
    bodies,
    decisions,
    script_detectors,
    send,
)
from tests.support import server_pair
from tests.support.harness import Client
from tests.support.peer import on_server
from tests.support.server_pair import V3, q, shared_room, wait_for

pair = server_pair.pair  # the fixture


def test_blocked_federated_event_is_soft_failed_and_recorded(pair):
    a, b = pair
    alice, bob = Client(a.base_url).register(), Client(b.base_url).register()
    room_id = shared_room(alice, bob, preset="public_chat")
    src = script_detectors(b, Scripted({"BLOCK": block("spam from afar")}))
    bad = send(alice, room_id, "BLOCK")
    assert bad.status == 200  # A's guard has no objection
    good = send(alice, room_id, "after")
    assert good.status == 200
    wait_for(lambda: "after" in bodies(bob, room_id))
    assert "BLOCK" not in bodies(bob, room_id)
    assert "BLOCK" in bodies(alice, room_id)
    meta = on_server(b, lambda: b.hs.store.get_event_meta([bad.body["event_id"]]))
    assert meta[bad.body["event_id"]].soft_failed
    (d,) = decisions(b)
    assert (d["event_id"], d["origin"], d["subject"], d["status"], d["outcome"]) == (
        bad.body["event_id"], a.hs.server_name, alice.user_id, "done", "block")  # fmt: skip
    remote = [c for c in src.seen if not c.local]
    assert remote and all(c.origin == a.hs.server_name for c in remote)
    # A reversal says the soft failure stays.
    admin = admin_client(b)
    r = admin.request("POST", f"{GUARD}/decisions/{d['id']}/reverse", {})
    assert r.status == 200 and "soft_fail" in r.body["details"]["not_reversible"]


def test_policy_listed_user_cannot_join_over_federation(pair):
    a, b = pair
    alice, bob = Client(a.base_url).register(), Client(b.base_url).register()
    room_id = alice.request("POST", f"{V3}/createRoom", {"preset": "public_chat"}).body["room_id"]

    def policy(ctx):
        if ctx.sender == bob.user_id:
            return [Signal("policy.user", "block", 1.0, "listed on a ban list")]
        return []

    a.hs.guard.policy.signals = policy  # type: ignore[method-assign]
    r = bob.request("POST", f"{V3}/join/{q(room_id)}", {}, query={"via": a.hs.server_name})
    assert r.status == 403, r.body
    (d,) = decisions(a)
    assert (d["source"], d["subject"], d["origin"]) == ("policy.user", bob.user_id,
                                                       b.hs.server_name)  # fmt: skip
