"""Simplified sliding sync (MSC4186) through matrix-js-sdk's ``SlidingSync``
(tests/js/sliding_sync.mjs): a list window over the rooms by activity and its count, a room
entering the window on a long-polled incremental request, and a room subscription bringing
a room the window never held; and a client whose only sync is sliding sync, with Rust crypto,
joining an encrypted room and decrypting its messages with a room key that came through the
``to_device`` extension."""

from __future__ import annotations

import json
import time

from tests.support.guard import exempt
from tests.support.harness import Client
from tests.support.js_sdk import node, run_script

__all__ = ["node"]  # the fixture, imported for pytest


def test_sliding_sync_list_window_and_subscription(server, node):
    alice = Client(server.base_url).register()
    exempt(server, alice)  # several messages within a second, by design
    assert alice.user_id and alice.access_token and alice.device_id
    result = run_script(
        node, "sliding_sync.mjs", "rooms", server.base_url,
        alice.user_id, alice.access_token, alice.device_id,
    )  # fmt: skip
    first, second, third = result["ids"]
    assert result["firstWindow"] == sorted([second, third])
    assert result["count"] == 4
    assert result["moved"]["name"] == "First"
    assert result["moved"]["bodies"] == ["still here"]
    assert result["hidden"] not in result["firstWindow"]
    assert result["subscribed"]["name"] == "Hidden"
    assert result["subscribed"]["bodies"] == ["over there"]


def test_sliding_sync_e2ee_room_keys_and_decryption(server, node):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    exempt(server, alice)  # two messages within a second, by design
    creds = [
        json.dumps({"user_id": c.user_id, "access_token": c.access_token, "device_id": c.device_id})
        for c in (alice, bob)
    ]
    t0 = time.monotonic()
    result = run_script(
        node, "sliding_sync.mjs", "e2ee", server.base_url, *creds, "first secret", "second secret"
    )
    assert time.monotonic() - t0 < 30
    room_id = result["roomId"]
    # bob's list showed the invite, then the joined room.
    assert result["invitedCount"] == 1 and result["joinedCount"] == 1
    assert result["listed"] == [{"room_id": room_id, "name": "Secret", "membership": "join"}]
    for seen, body in ((result["first"], "first secret"), (result["second"], "second secret")):
        assert seen["sender"] == alice.user_id and seen["body"] == body
        assert seen["type"] == "m.room.message" and seen["wire_type"] == "m.room.encrypted"
        assert seen["algorithm"] == "m.megolm.v1.aes-sha2"
        assert seen["decryption_failure"] is False
    assert result["secondLive"] is True
    # The room key came as an Olm-encrypted to-device message in a sliding sync response.
    assert {"type": "m.room_key", "sender": alice.user_id, "encrypted": True,
            "room_id": room_id} in result["roomKeys"]  # fmt: skip
    responses = result["responses"]
    carried = [r for r in responses if r["to_device"]]
    assert {"type": "m.room.encrypted", "sender": alice.user_id,
            "algorithm": "m.olm.v1.curve25519-aes-sha2"} in carried[0]["to_device"]  # fmt: skip
    # Each request acknowledged the previous response's to-device batch.
    for prev, cur in zip(responses, responses[1:], strict=False):
        assert cur["since"] == prev["next_batch"]
    # The e2ee extension told bob that alice's devices matter once they shared the room.
    assert any(
        alice.user_id in ((r["e2ee"] or {}).get("device_lists") or {}).get("changed", [])
        for r in responses
    )
    # The second message came on an incremental response (the room not sent whole again).
    second = [
        r["rooms"][room_id]
        for r in responses
        if result["second"]["event_id"] in r["rooms"].get(room_id, {}).get("events", [])
    ]
    assert len(second) == 1 and second[0]["initial"] is False  # fmt: skip
    # bob never used /sync: everything came through sliding sync.
    assert not [p for _m, p in result["requests"] if p.endswith("/v3/sync")]
