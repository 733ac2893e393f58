"""Erasure with ``redact_federated`` against a real Synapse (issue 10; setup per SYNAPSE-PEER.md,
the fixtures of test_synapse_federation.py): a Bastion user who wrote in a room with a Synapse
member is erased through Synapse's own admin API shape (``POST /_synapse/admin/v1/deactivate``
with ``erase`` and ``redact_federated``); Synapse then serves each of the user's events
redacted, the room goes on working between the remaining Bastion and Synapse members, and our
copy holds none of what the user wrote."""

from __future__ import annotations

import json

import pytest

from bastion.core.signing import encode_verify_key
from tests.acceptance.test_synapse_federation import (
    V3,
    SynUser,
    membership_on_ours,
    our_messages,
    our_send,
    q,
    wait,
)
from tests.acceptance.test_synapse_peer import synapse_process
from tests.support.accounts import db_rows, make_admin
from tests.support.federation import start_fed_server
from tests.support.harness import Client
from tests.support.synapse_config import SYNAPSE_RATE_LIMITS

pytest.importorskip("synapse")

SECRET = "zqxERASEME-federated"


@pytest.fixture(scope="module")
def env(tmp_path_factory, test_ca):
    tmp = tmp_path_factory.mktemp("synapse-erasure")
    ours = start_fed_server(tmp, test_ca, "bastion-erase",
                            federation_retry_min_ms=200, federation_retry_max_ms=2000)  # fmt: skip
    try:
        sk = ours.hs.signing_key
        trusted = [{"server_name": ours.hs.server_name,
                    "verify_keys": {sk.key_id: encode_verify_key(sk.key)}}]  # fmt: skip
        with synapse_process(tmp / "synapse", test_ca, {**SYNAPSE_RATE_LIMITS,
                             "trusted_key_servers": trusted}, label="synapse-erase") as syn:  # fmt: skip
            yield {"ours": ours, "syn": syn}
    finally:
        ours.stop()


def test_redact_federated_reaches_synapse(env):
    ours, syn = env["ours"], env["syn"]
    alice = Client(ours.base_url).register("alice")
    carol = Client(ours.base_url).register("carol")
    admin = Client(ours.base_url).register("admin")
    make_admin(ours, admin.user_id)
    bob = SynUser(syn, "bob")
    r = alice.request("POST", f"{V3}/createRoom", {
        "preset": "public_chat", "invite": [bob.user_id], "topic": f"{SECRET} topic"})  # fmt: skip
    assert r.status == 200, r.body
    room = r.body["room_id"]
    assert carol.request("POST", f"{V3}/join/{q(room)}", {}).status == 200

    def invited():
        status, body = bob.request("GET", f"{V3}/sync?timeout=0")
        return status == 200 and room in body["rooms"].get("invite", {})

    wait(invited, "bob sees the invite")
    status, body = bob.request("POST", f"{V3}/join/{q(room)}", {})
    assert status == 200, body
    wait(lambda: membership_on_ours(ours, room, bob.user_id) == "join", "bob joined on ours")
    sent = []
    for i in range(3):
        r = our_send(alice, room, f"{SECRET} message {i}")
        assert r.status == 200, r.body
        sent.append(r.body["event_id"])
    wait(lambda: f"{SECRET} message 2" in bob.messages(room), "Synapse has alice's messages")
    status, body = bob.send(room, "bob keeps this")
    assert status == 200, body
    wait(lambda: "bob keeps this" in our_messages(carol, room), "we have bob's message")

    r = admin.request("POST", f"/_synapse/admin/v1/deactivate/{q(alice.user_id)}",
                      {"erase": True, "redact_federated": True})  # fmt: skip
    assert (r.status, r.body) == (200, {"id_server_unbind_result": "success"})

    def redacted_on_synapse():
        for eid in sent:
            status, ev = bob.event(room, eid)
            if status != 200 or ev.get("content") != {}:
                return False
            if "redacted_because" not in ev.get("unsigned", {}):
                return False
        return True

    wait(redacted_on_synapse, "Synapse serves alice's events redacted", timeout=60)
    assert all(SECRET not in (m or "") for m in bob.messages(room))
    status, topic = bob.request("GET", f"{V3}/rooms/{q(room)}/state/m.room.topic/")
    assert SECRET not in json.dumps(topic)
    wait(lambda: bob.request("GET", f"{V3}/rooms/{q(room)}/state/m.room.member/"
                             f"{q(alice.user_id)}")[1].get("membership") == "leave",
         "Synapse has alice's leave")  # fmt: skip
    # The room goes on between carol (ours) and bob (Synapse), both ways.
    assert our_send(carol, room, "carol after").status == 200
    wait(lambda: "carol after" in bob.messages(room), "Synapse receives carol's message")
    status, body = bob.send(room, "bob after")
    assert status == 200, body
    wait(lambda: "bob after" in our_messages(carol, room), "we receive bob's message")
    assert "bob keeps this" in our_messages(carol, room)
    # Our copy holds nothing alice wrote; the redactions came from her, as the ledger says.
    rows = db_rows(ours, "SELECT json FROM events WHERE room_id = ?", (room,))
    assert all(SECRET.encode() not in bytes(r[0]) for r in rows)
    rows = db_rows(ours, "SELECT entry FROM ledger_entries WHERE action = 'compliance.erasure'")
    (summary,) = [json.loads(r[0]) for r in rows]
    assert summary["details"]["redact_federated"] is True
    assert summary["details"]["counts"]["redactions_sent"] >= len(sent)
    assert summary["details"]["counts"]["redactions_failed"] == 0
