"""An end-to-end encrypted conversation between matrix-nio users on two Bastion servers (S-S API
"End-to-End Encryption", "Device Management", "Send-to-device messaging").

alice (server A) and bob (server B), both real nio clients with vodozemac, share an encrypted
room joined over federation. What has to work across the servers for them to read each other:
keys/query and keys/claim for the other server's user (proxied to ``/user/keys/query`` and
``/user/keys/claim``, or answered from the device-list cache filled by ``/user/devices``), the
Olm-wrapped room keys as ``m.direct_to_device`` EDUs, and ``m.device_list_update`` EDUs so alice
learns of bob's second device through ``device_lists.changed`` and shares the room key with it.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest

nio = pytest.importorskip("nio")

from tests.support import server_pair  # noqa: E402
from tests.support.nio_clients import (  # noqa: E402
    ENCRYPTION,
    PASSWORD,
    RecordingClient,
    new_client,
    send,
    sync,
    sync_until,
    upload_keys,
)

pair = server_pair.pair  # the fixture


async def _scenario(a_url: str, b_url: str, tmp_path) -> dict:
    tag = secrets.token_hex(4)
    bodies = [f"secret-{i}-{tag}" for i in range(3)]
    alice = new_client(a_url, "alice", tmp_path / "alice")
    bob = new_client(b_url, "bob", tmp_path / "bob")
    bob2: RecordingClient | None = None
    out: dict = {"bodies": bodies}
    try:
        for c, name in ((alice, "alice"), (bob, "bob")):
            assert isinstance(await c.register(name, PASSWORD), nio.RegisterResponse)
            await upload_keys(c)
        r = await alice.room_create(invite=[bob.user_id], initial_state=[ENCRYPTION])
        assert isinstance(r, nio.RoomCreateResponse), r
        room_id = r.room_id
        assert await sync_until(bob, lambda: room_id in bob.invited_rooms)
        assert isinstance(await bob.join(room_id), nio.JoinResponse)
        await sync(bob)
        assert await sync_until(
            alice, lambda: room_id in alice.rooms and bob.user_id in alice.rooms[room_id].users
        )
        assert alice.rooms[room_id].encrypted and bob.rooms[room_id].encrypted

        # Both directions, each decrypted by the other side on the other server.
        await send(alice, room_id, bodies[0])
        assert await sync_until(bob, lambda: (alice.user_id, bodies[0]) in bob.messages)
        await send(bob, room_id, bodies[1])
        assert await sync_until(alice, lambda: (bob.user_id, bodies[1]) in alice.messages)

        # A custom to-device message crosses once.
        nonce = secrets.token_hex(8)

        def pings() -> int:
            return sum(
                1
                for batch in bob.raw_to_device
                for e in batch
                if e.get("type") == "org.bastion.test.ping" and e["content"].get("n") == nonce
            )

        ping = nio.ToDeviceMessage(
            "org.bastion.test.ping", bob.user_id, bob.device_id, {"n": nonce}
        )
        assert isinstance(await alice.to_device(ping), nio.ToDeviceResponse)
        assert await sync_until(bob, lambda: pings() >= 1)

        # bob's second device: alice hears of it through device_lists.changed (an
        # m.device_list_update from B), queries it, and shares the room key with it.
        await sync(alice)
        seen_before = len(alice.changed)
        bob2 = new_client(b_url, bob.user_id, tmp_path / "bob2")
        assert isinstance(await bob2.login(PASSWORD, device_name="second"), nio.LoginResponse)
        await upload_keys(bob2)
        assert await sync_until(
            alice, lambda: any(bob.user_id in ch for ch in alice.changed[seen_before:])
        )
        r = await alice.keys_query()
        assert isinstance(r, nio.KeysQueryResponse), r
        assert bob2.device_id in alice.device_store[bob.user_id]
        await sync(bob2)
        await send(alice, room_id, bodies[2])
        assert await sync_until(bob2, lambda: (alice.user_id, bodies[2]) in bob2.messages)
        assert await sync_until(bob, lambda: (alice.user_id, bodies[2]) in bob.messages)
        for c in (alice, bob, bob2):
            await sync(c)
        out["pings"] = pings()
        out["room_id"] = room_id
        out["clients"] = {
            name: {
                "messages": list(c.messages),
                "undecrypted": [(e.sender, e.session_id) for e in c.undecrypted],
                "to_device": [e for batch in c.raw_to_device for e in batch],
            }
            for name, c in (("alice", alice), ("bob", bob), ("bob2", bob2))
        }
        out["ids"] = {"alice": alice.user_id, "bob": bob.user_id}
        return out
    finally:
        for c in (alice, bob, bob2):
            if c is not None:
                await c.close()


def test_nio_e2ee_conversation_across_two_servers(pair, tmp_path):
    import orjson

    from tests.support.nio_clients import room_events

    a, b = pair
    out = asyncio.run(_scenario(a.base_url, b.base_url, tmp_path))
    bodies, clients, ids = out["bodies"], out["clients"], out["ids"]
    assert ids["alice"].endswith(":" + a.hs.server_name)
    assert ids["bob"].endswith(":" + b.hs.server_name)
    assert (ids["alice"], bodies[0]) in clients["bob"]["messages"]
    assert (ids["bob"], bodies[1]) in clients["alice"]["messages"]
    assert (ids["alice"], bodies[2]) in clients["bob"]["messages"]
    assert (ids["alice"], bodies[2]) in clients["bob2"]["messages"]
    assert clients["alice"]["undecrypted"] == [] and clients["bob"]["undecrypted"] == []
    assert out["pings"] == 1
    for name, c in clients.items():
        seen = [orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in c["to_device"]]
        assert len(seen) == len(set(seen)), f"{name} got a to-device message twice"
    for name in ("bob", "bob2"):
        olm = [e for e in clients[name]["to_device"] if e["type"] == "m.room.encrypted"]
        assert olm and all(e["sender"] == ids["alice"] for e in olm), name
    # Both servers hold only Megolm ciphertext for the room's messages.
    for srv in (a, b):
        events = room_events(srv.hs.config.database_path, out["room_id"])
        messages = [orjson.loads(j) for t, sk, j in events if sk is None]
        assert len(messages) >= 3
        for ev in messages:
            assert ev["type"] == "m.room.encrypted", ev["type"]
            assert ev["content"]["algorithm"] == "m.megolm.v1.aes-sha2"
