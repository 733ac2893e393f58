"""An encrypted conversation between two matrix-nio clients (vodozemac Olm/Megolm) through
Bastion: key upload, keys/query, keys/claim, the Olm-wrapped room key over sendToDevice, and
Megolm messages decrypted in both directions."""

from __future__ import annotations

import asyncio

import pytest

nio = pytest.importorskip("nio")


async def _conversation(base_url: str, tmp_path) -> tuple[list, list]:
    cfg = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    alice = nio.AsyncClient(base_url, "alice", store_path=str(tmp_path / "a"), config=cfg)
    bob = nio.AsyncClient(base_url, "bob", store_path=str(tmp_path / "b"), config=cfg)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        for c, name in ((alice, "alice"), (bob, "bob")):
            assert isinstance(await c.register(name, "correct horse battery"), nio.RegisterResponse)
            await c.sync(timeout=0)
            assert c.should_upload_keys
            r = await c.keys_upload()
            assert isinstance(r, nio.KeysUploadResponse), r
            assert r.signed_curve25519_count > 0
        r = await alice.room_create(
            invite=[bob.user_id],
            initial_state=[{"type": "m.room.encryption", "state_key": "",
                            "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
        )  # fmt: skip
        assert isinstance(r, nio.RoomCreateResponse), r
        room_id = r.room_id
        await bob.sync(timeout=0)
        assert isinstance(await bob.join(room_id), nio.JoinResponse)
        for c in (alice, bob, alice):
            await c.sync(timeout=0)
        got_bob: list = []
        got_alice: list = []
        bob.add_event_callback(
            lambda _r, e: got_bob.append(e), (nio.RoomMessageText, nio.MegolmEvent)
        )
        alice.add_event_callback(
            lambda _r, e: got_alice.append(e), (nio.RoomMessageText, nio.MegolmEvent)
        )
        content = {"msgtype": "m.text", "body": "secret hello"}
        r = await alice.room_send(
            room_id, "m.room.message", content, ignore_unverified_devices=True
        )
        assert isinstance(r, nio.RoomSendResponse), r
        for _ in range(3):
            await bob.sync(timeout=200)
        content = {"msgtype": "m.text", "body": "secret reply"}
        r = await bob.room_send(room_id, "m.room.message", content, ignore_unverified_devices=True)
        assert isinstance(r, nio.RoomSendResponse), r
        for _ in range(3):
            await alice.sync(timeout=200)
        return got_bob, got_alice
    finally:
        await alice.close()
        await bob.close()


def test_nio_encrypted_conversation(server, tmp_path):
    got_bob, got_alice = asyncio.run(_conversation(server.base_url, tmp_path))
    assert [(type(e).__name__, e.body) for e in got_bob] == [("RoomMessageText", "secret hello")]
    assert ("RoomMessageText", "secret reply") in [
        (type(e).__name__, getattr(e, "body", None)) for e in got_alice
    ]
    assert not any(isinstance(e, nio.MegolmEvent) for e in got_bob + got_alice)  # all decrypted
