"""End-to-end encrypted conversations between real matrix-nio clients (vodozemac Olm/Megolm)
through Bastion, for room versions 12, 11 and 10.

One scenario per room version proves, with nothing but what the clients and the database file
show:
- two nio clients with encryption enabled register and upload keys; one creates a room with
  ``m.room.encryption`` in ``initial_state`` and invites the other, who joins;
- each sends a message and each decrypts the other's (no undecryptable ``MegolmEvent`` left);
  the second device below rightly cannot read the two messages sent before it existed;
- a second device of one user (a third nio client logging in as that user) appears in the other
  user's sync ``device_lists.changed`` and ``/keys/query``, and decrypts the next message;
- custom to-device messages arrive exactly once each, and no to-device message (the Olm-wrapped
  ``m.room_key`` shares included) is ever delivered twice to any device;
- the server holds only ciphertext: every message event of the room in the database is an
  ``m.room.encrypted`` Megolm event, and no plaintext body appears in any column of any table nor
  anywhere in the raw bytes of ``homeserver.db`` and ``homeserver.db-wal`` — while a plain state
  value of the same room (a room name) is found there, so the scan can see what is stored.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import urllib.parse

import pytest

nio = pytest.importorskip("nio")

from tests.support.harness import Client  # noqa: E402
from tests.support.nio_clients import (  # noqa: E402
    ENCRYPTION,
    PASSWORD,
    RecordingClient,
    database_texts,
    new_client,
    raw_database_bytes,
    room_events,
    send,
    sync,
    sync_until,
    upload_keys,
)


async def _scenario(base_url: str, tmp_path, room_version: str) -> dict:
    tag = secrets.token_hex(6)
    bodies = [f"plaintext-{i}-{tag}" for i in range(3)]
    canary = f"plain-room-name-{tag}"
    alice = new_client(base_url, "alice", tmp_path / "alice")
    bob = new_client(base_url, "bob", tmp_path / "bob")
    bob2: RecordingClient | None = None
    out: dict = {"bodies": bodies, "canary": canary}
    try:
        for c, name in ((alice, "alice"), (bob, "bob")):
            assert isinstance(await c.register(name, PASSWORD), nio.RegisterResponse)
            await upload_keys(c)

        r = await alice.room_create(
            invite=[bob.user_id],
            room_version=room_version,
            initial_state=[ENCRYPTION, {"type": "m.room.name", "content": {"name": canary}}],
        )
        assert isinstance(r, nio.RoomCreateResponse), r
        room_id = out["room_id"] = r.room_id
        raw = Client(base_url, alice.access_token)
        quoted = urllib.parse.quote(room_id, safe="")
        create = raw.request("GET", f"/_matrix/client/v3/rooms/{quoted}/state/m.room.create/")
        assert create.status == 200 and create.body["room_version"] == room_version, create

        await sync(bob)
        assert room_id in bob.invited_rooms
        assert isinstance(await bob.join(room_id), nio.JoinResponse)
        await sync(bob)
        await sync(alice)
        assert alice.rooms[room_id].encrypted and bob.rooms[room_id].encrypted

        # Both directions, each decrypted by the other side.
        await send(alice, room_id, bodies[0])
        assert await sync_until(bob, lambda: (alice.user_id, bodies[0]) in bob.messages)
        await send(bob, room_id, bodies[1])
        assert await sync_until(alice, lambda: (bob.user_id, bodies[1]) in alice.messages)

        # Custom to-device messages reach bob's device once, and only once: the first is not
        # delivered again by the syncs that carry the second, nor by later ones.
        nonces = [secrets.token_hex(8) for _ in range(2)]

        def pings(nonce: str) -> int:
            return sum(
                1
                for batch in bob.raw_to_device
                for e in batch
                if e.get("type") == "org.bastion.test.ping" and e["content"].get("n") == nonce
            )

        for nonce in nonces:
            ping = nio.ToDeviceMessage(
                "org.bastion.test.ping", bob.user_id, bob.device_id, {"n": nonce}
            )
            assert isinstance(await alice.to_device(ping), nio.ToDeviceResponse)
            assert await sync_until(bob, lambda n=nonce: pings(n) >= 1)

        # A second device of bob: alice learns of it through device_lists.changed and keys/query.
        await sync(alice)
        seen_before = len(alice.changed)
        bob2 = new_client(base_url, bob.user_id, tmp_path / "bob2")
        r = await bob2.login(PASSWORD, device_name="bob's second device")
        assert isinstance(r, nio.LoginResponse), r
        assert bob2.device_id != bob.device_id
        await upload_keys(bob2)
        assert await sync_until(
            alice, lambda: any(bob.user_id in ch for ch in alice.changed[seen_before:])
        )
        q = raw.request("POST", "/_matrix/client/v3/keys/query", {"device_keys": {bob.user_id: []}})
        assert q.status == 200, q.body
        served = q.body["device_keys"][bob.user_id]
        assert set(served) == {bob.device_id, bob2.device_id}
        assert (
            served[bob2.device_id]["keys"][f"ed25519:{bob2.device_id}"]
            == (bob2.olm.account.identity_keys["ed25519"])
        )
        r = await alice.keys_query()
        assert isinstance(r, nio.KeysQueryResponse), r
        assert bob2.device_id in alice.device_store[bob.user_id]

        # The next message reaches both of bob's devices, and both decrypt it.
        await sync(bob2)
        assert room_id in bob2.rooms
        await send(alice, room_id, bodies[2])
        assert await sync_until(bob2, lambda: (alice.user_id, bodies[2]) in bob2.messages)
        assert await sync_until(bob, lambda: (alice.user_id, bodies[2]) in bob.messages)
        for c in (alice, bob, bob2):
            await sync(c)
        out["pings"] = [pings(n) for n in nonces]

        out["clients"] = {
            name: {
                "messages": list(c.messages),
                "undecrypted": [(e.sender, e.session_id) for e in c.undecrypted],
                "to_device": [e for batch in c.raw_to_device for e in batch],
            }
            for name, c in (("alice", alice), ("bob", bob), ("bob2", bob2))
        }
        out["user_ids"] = {"alice": alice.user_id, "bob": bob.user_id}
        return out
    finally:
        for c in (alice, bob, bob2):
            if c is not None:
                await c.close()


@pytest.mark.parametrize("room_version", ["12", "11", "10"])
def test_nio_e2ee_conversation_second_device_and_ciphertext_only(server, tmp_path, room_version):
    import orjson

    t0 = time.monotonic()
    out = asyncio.run(_scenario(server.base_url, tmp_path, room_version))
    bodies, clients = out["bodies"], out["clients"]
    alice_id, bob_id = out["user_ids"]["alice"], out["user_ids"]["bob"]

    # Each side decrypted every message of the other.
    assert (alice_id, bodies[0]) in clients["bob"]["messages"]
    assert (bob_id, bodies[1]) in clients["alice"]["messages"]
    assert (alice_id, bodies[2]) in clients["bob"]["messages"]
    assert (alice_id, bodies[2]) in clients["bob2"]["messages"]
    assert clients["alice"]["undecrypted"] == [] and clients["bob"]["undecrypted"] == []
    # bob's second device sees the two earlier messages, sent before it existed, and rightly
    # has no key for them (Megolm gives no access to history without a key share or backup).
    assert len(clients["bob2"]["undecrypted"]) == 2, clients["bob2"]["undecrypted"]

    # To-device: the custom message exactly once; no delivery ever repeated; bob's devices got
    # their room keys as Olm-encrypted to-device messages.
    assert out["pings"] == [1, 1]
    for name, c in clients.items():
        seen = [orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in c["to_device"]]
        assert len(seen) == len(set(seen)), f"{name} got a to-device message twice"
    for name in ("bob", "bob2"):
        olm = [e for e in clients[name]["to_device"] if e["type"] == "m.room.encrypted"]
        assert olm and all(
            e["content"]["algorithm"] == "m.olm.v1.curve25519-aes-sha2" for e in olm
        ), name

    # The database holds only ciphertext for the room's messages.
    db_path = server.config.database_path
    events = room_events(db_path, out["room_id"])
    timeline = [(t, orjson.loads(j)) for t, sk, j in events if sk is None]
    assert len(timeline) >= 3
    for etype, ev in timeline:
        assert etype == "m.room.encrypted", etype
        content = ev["content"]
        assert content["algorithm"] == "m.megolm.v1.aes-sha2"
        assert isinstance(content["ciphertext"], str) and len(content["ciphertext"]) > 40
        assert "body" not in content and "msgtype" not in content
    for table, col, value in database_texts(db_path):
        for body in bodies:
            assert body not in value, f"plaintext in {table}.{col}"
    raw = raw_database_bytes(db_path)
    assert out["canary"].encode() in raw  # the scan sees what the server stores in plain
    for body in bodies:
        assert body.encode() not in raw
    assert time.monotonic() - t0 < 30
