"""Membership with a real Synapse (started by the fixture of test_synapse_peer.py): a Bastion
user invites a Synapse user (PUT /v2/invite to Synapse), the Synapse user joins over
federation (Synapse's make_join/send_join against us), messages flow both ways through the
transaction queues, and a Synapse room is joined from Bastion (our make_join/send_join).
Skipped when Synapse is not installed."""

from __future__ import annotations

import time
import urllib.parse

import pytest

from tests.acceptance.test_synapse_peer import _client, synapse  # noqa: F401 - the fixture
from tests.support.federation import start_fed_server
from tests.support.harness import Client

pytest.importorskip("synapse")


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def syn_register(syn: dict, name: str) -> tuple[str, str]:
    status, reg = _client("POST", syn["client"] + "/_matrix/client/v3/register",
                          {"username": name, "password": "pw-123456789",
                           "auth": {"type": "m.login.dummy"}})  # fmt: skip
    assert status == 200, reg
    return reg["user_id"], reg["access_token"]


def wait(cond, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out: {what}")


def syn_messages(syn, token, room_id) -> list[str]:
    status, body = _client("GET", syn["client"] + f"/_matrix/client/v3/rooms/{q(room_id)}/messages"
                           "?dir=b&limit=50", token=token)  # fmt: skip
    if status != 200:
        return []
    return [e["content"].get("body") for e in body["chunk"] if e["type"] == "m.room.message"]


def our_messages(c: Client, room_id: str) -> list[str]:
    r = c.request("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages",
                  query={"dir": "b", "limit": "50"})  # fmt: skip
    if r.status != 200:
        return []
    return [e["content"].get("body") for e in r.body["chunk"] if e["type"] == "m.room.message"]


def test_invite_join_messages_with_synapse(tmp_path, test_ca, synapse):  # noqa: F811
    ours = start_fed_server(tmp_path, test_ca, "bastion",
                            federation_retry_min_ms=200, federation_retry_max_ms=2000)  # fmt: skip
    try:
        alice = Client(ours.base_url).register()
        bob_id, bob_token = syn_register(synapse, "bob")
        # 1. Bastion room, Synapse invitee.
        r = alice.request("POST", "/_matrix/client/v3/createRoom", {"invite": [bob_id]})
        assert r.status == 200, r.body
        room_id = r.body["room_id"]

        def bob_invited():
            status, body = _client("GET", synapse["client"] + "/_matrix/client/v3/sync",
                                   token=bob_token)  # fmt: skip
            return status == 200 and room_id in body["rooms"].get("invite", {})

        wait(bob_invited, "Synapse sees the invite")
        status, body = _client("POST", synapse["client"] + f"/_matrix/client/v3/join/{q(room_id)}",
                               {}, token=bob_token)  # fmt: skip
        assert status == 200, body
        wait(lambda: ours.hs.rooms.membership_of(room_id, bob_id) == "join", "bob joined on ours")
        # 2. Messages both ways.
        r = alice.request("PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t1",
                          {"msgtype": "m.text", "body": "from bastion"})  # fmt: skip
        assert r.status == 200, r.body
        wait(lambda: "from bastion" in syn_messages(synapse, bob_token, room_id),
             "Synapse receives our message")  # fmt: skip
        status, body = _client("PUT", synapse["client"] + f"/_matrix/client/v3/rooms/{q(room_id)}"
                               "/send/m.room.message/s1", {"msgtype": "m.text", "body": "from synapse"},
                               token=bob_token)  # fmt: skip
        assert status == 200, body
        wait(lambda: "from synapse" in our_messages(alice, room_id), "we receive Synapse's message")

        # 3. A Synapse room joined from Bastion (our make_join/send_join against Synapse).
        status, body = _client("POST", synapse["client"] + "/_matrix/client/v3/createRoom",
                               {"preset": "public_chat", "name": "syn room"}, token=bob_token)  # fmt: skip
        assert status == 200, body
        syn_room = body["room_id"]
        r = alice.request("POST", f"/_matrix/client/v3/join/{q(syn_room)}", {},
                          query={"via": synapse["name"]})  # fmt: skip
        assert r.status == 200, r.body
        r = alice.request("PUT", f"/_matrix/client/v3/rooms/{q(syn_room)}/send/m.room.message/t2",
                          {"msgtype": "m.text", "body": "joined from bastion"})  # fmt: skip
        assert r.status == 200, r.body
        wait(lambda: "joined from bastion" in syn_messages(synapse, bob_token, syn_room),
             "Synapse receives our message in its room")  # fmt: skip
    finally:
        ours.stop()
