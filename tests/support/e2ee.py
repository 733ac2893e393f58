"""Helpers for the E2EE tests: real device keys (vodozemac), real cross-signing keys (PyNaCl),
and a direct call of the E2EE sync contributor."""

from __future__ import annotations

import asyncio
import json

import nacl.signing
import vodozemac

from bastion.core.base64 import encode_base64
from bastion.core.canonical_json import canonical_json
from bastion.services.sync_api import SyncContext, SyncToken
from bastion.storage.sqlite.accounts import Requester
from tests.support.harness import Client

V3 = "/_matrix/client/v3"


def signable(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


class Device:
    """A logged-in client with a vodozemac Olm account."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.user_id = client.user_id
        self.device_id = client.device_id
        self.account = vodozemac.Account()

    def request(self, *a, **kw):
        return self.client.request(*a, **kw)

    @property
    def ed25519(self) -> str:
        return self.account.ed25519_key.to_base64()

    def sign(self, obj: dict) -> dict:
        sig = self.account.sign(canonical_json(signable(obj))).to_base64()
        out = dict(obj)
        sigs = {u: dict(v) for u, v in obj.get("signatures", {}).items()}
        sigs.setdefault(self.user_id, {})[f"ed25519:{self.device_id}"] = sig
        out["signatures"] = sigs
        return out

    def device_keys(self) -> dict:
        return self.sign(
            {
                "user_id": self.user_id,
                "device_id": self.device_id,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                "keys": {
                    f"curve25519:{self.device_id}": self.account.curve25519_key.to_base64(),
                    f"ed25519:{self.device_id}": self.ed25519,
                },
            }
        )

    def one_time_keys(self, n: int) -> dict:
        self.account.generate_one_time_keys(n)
        keys = {
            f"signed_curve25519:{kid}": self.sign({"key": k.to_base64()})
            for kid, k in self.account.one_time_keys.items()
        }
        self.account.mark_keys_as_published()
        return keys

    def fallback_keys(self) -> dict:
        self.account.generate_fallback_key()
        keys = {
            f"signed_curve25519:{kid}": self.sign({"key": k.to_base64(), "fallback": True})
            for kid, k in self.account.fallback_key.items()
        }
        self.account.mark_keys_as_published()
        return keys

    def upload(self, **body):
        return self.request("POST", f"{V3}/keys/upload", body)


def new_device(client: Client, otks: int = 0, fallback: bool = False) -> Device:
    dev = Device(client.register())
    body: dict = {"device_keys": dev.device_keys()}
    if otks:
        body["one_time_keys"] = dev.one_time_keys(otks)
    if fallback:
        body["fallback_keys"] = dev.fallback_keys()
    r = dev.upload(**body)
    assert r.status == 200, r.body
    return dev


class CrossSigningKey:
    """An Ed25519 cross-signing key made with PyNaCl."""

    def __init__(self, user_id: str, usage: str) -> None:
        self.user_id = user_id
        self.usage = usage
        self.key = nacl.signing.SigningKey.generate()
        self.pub = encode_base64(bytes(self.key.verify_key))

    @property
    def key_id(self) -> str:
        return f"ed25519:{self.pub}"

    def sign(self, obj: dict) -> dict:
        sig = encode_base64(self.key.sign(canonical_json(signable(obj))).signature)
        out = dict(obj)
        sigs = {u: dict(v) for u, v in obj.get("signatures", {}).items()}
        sigs.setdefault(self.user_id, {})[self.key_id] = sig
        out["signatures"] = sigs
        return out

    def public(self) -> dict:
        return {"user_id": self.user_id, "usage": [self.usage], "keys": {self.key_id: self.pub}}


def cross_signing_set(user_id: str) -> tuple[CrossSigningKey, CrossSigningKey, CrossSigningKey]:
    return (
        CrossSigningKey(user_id, "master"),
        CrossSigningKey(user_id, "self_signing"),
        CrossSigningKey(user_id, "user_signing"),
    )


def cross_signing_body(msk, ssk, usk) -> dict:
    return {
        "master_key": msk.public(),
        "self_signing_key": msk.sign(ssk.public()),
        "user_signing_key": msk.sign(usk.public()),
    }


def sync_direct(
    server, user_id: str, device_id: str, since: str | None = None, upto: str | None = None
) -> tuple[dict, str]:
    """Run the E2EE sync contributor on the server's loop as /sync would: returns (response
    part, next_batch)."""
    hs = server.hs

    async def run() -> tuple[dict, str]:
        end = SyncToken.parse(upto) if upto else SyncToken(hs.store.current_pos, 0)
        ctx = SyncContext(
            requester=Requester(user_id, device_id),
            since=SyncToken.parse(since) if since else None,
            upto=end,
            filter={},
        )
        response: dict = {}
        hs.e2ee.contribute_global(ctx, response)
        await asyncio.sleep(0)
        return json.loads(json.dumps(response)), str(end)

    return asyncio.run_coroutine_threadsafe(run(), server.loop).result(10)


def wait_writes(server) -> None:
    """Wait until the background writes the contributor started have committed."""

    async def run() -> None:
        tasks = list(server.hs.e2ee.background_tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await server.hs.store.db.write(lambda conn: None)

    asyncio.run_coroutine_threadsafe(run(), server.loop).result(10)
