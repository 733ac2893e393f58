"""Cross-signing keys and signatures (C-S API "Cross-signing", cross_signing.yaml), with real
Ed25519 keys (PyNaCl) and device keys (vodozemac)."""

from __future__ import annotations

import nacl.signing

from bastion.core.base64 import decode_base64
from bastion.core.canonical_json import canonical_json
from tests.support.e2ee import (
    V3,
    CrossSigningKey,
    Device,
    cross_signing_body,
    cross_signing_set,
    signable,
    sync_direct,
)

PASSWORD = "correct horse battery"
CS_UPLOAD = f"{V3}/keys/device_signing/upload"
SIG_UPLOAD = f"{V3}/keys/signatures/upload"


def make_user(client) -> Device:
    dev = Device(client.register(password=PASSWORD))
    assert dev.upload(device_keys=dev.device_keys()).status == 200
    return dev


def query(dev, user_id):
    r = dev.request("POST", f"{V3}/keys/query", {"device_keys": {user_id: []}})
    assert r.status == 200, r.body
    return r.body


def verifies(obj: dict, signer: str, key_id: str, pub: str) -> bool:
    sig = obj.get("signatures", {}).get(signer, {}).get(key_id)
    if sig is None:
        return False
    try:
        nacl.signing.VerifyKey(decode_base64(pub)).verify(
            canonical_json(signable(obj)), decode_base64(sig)
        )
    except Exception:  # noqa: BLE001
        return False
    return True


def password_auth(dev, session):
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": dev.user_id},
        "password": PASSWORD,
        "session": session,
    }


def test_first_upload_free_then_uia_to_replace(client, server):
    alice = make_user(client)
    _, token = sync_direct(server, alice.user_id, alice.device_id)
    msk, ssk, usk = cross_signing_set(alice.user_id)
    body = cross_signing_body(msk, ssk, usk)
    r = alice.request("POST", CS_UPLOAD, body)
    assert r.status == 200, r.body
    part, _ = sync_direct(server, alice.user_id, alice.device_id, token)
    assert alice.user_id in part["device_lists"]["changed"]
    # An identical re-upload needs no UIA (MSC3967).
    assert alice.request("POST", CS_UPLOAD, body).status == 200
    mine = query(alice, alice.user_id)
    assert mine["master_keys"][alice.user_id] == body["master_key"]
    assert mine["self_signing_keys"][alice.user_id] == body["self_signing_key"]
    assert mine["user_signing_keys"][alice.user_id] == body["user_signing_key"]
    bob = make_user(client)
    theirs = query(bob, alice.user_id)
    assert alice.user_id in theirs["master_keys"]
    assert alice.user_id in theirs["self_signing_keys"]
    assert theirs["user_signing_keys"] == {}  # only to the owner

    msk2, ssk2, usk2 = cross_signing_set(alice.user_id)
    body2 = cross_signing_body(msk2, ssk2, usk2)
    r = alice.request("POST", CS_UPLOAD, body2)
    assert r.status == 401, r.body
    assert r.body["flows"] == [{"stages": ["m.login.password"]}]
    session = r.body["session"]
    bad = {**password_auth(alice, session), "password": "wrong password!"}
    r = alice.request("POST", CS_UPLOAD, {**body2, "auth": bad})
    assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN"
    assert query(alice, alice.user_id)["master_keys"][alice.user_id] == body["master_key"]
    r = alice.request("POST", CS_UPLOAD, {**body2, "auth": password_auth(alice, session)})
    assert r.status == 200, r.body
    assert query(alice, alice.user_id)["master_keys"][alice.user_id] == body2["master_key"]


def test_upload_validation(client):
    alice = make_user(client)
    msk, ssk, usk = cross_signing_set(alice.user_id)
    other = CrossSigningKey(alice.user_id, "master")
    cases = [
        ({}, 400, "M_MISSING_PARAM"),
        ({"self_signing_key": msk.sign(ssk.public())}, 400, "M_MISSING_PARAM"),
        ({"master_key": "x"}, 400, "M_BAD_JSON"),
        ({"master_key": {**msk.public(), "usage": ["self_signing"]}}, 400, "M_INVALID_PARAM"),
        ({"master_key": {**msk.public(), "user_id": "@bob:localhost"}}, 400, "M_INVALID_PARAM"),
        (
            {"master_key": {**msk.public(), "keys": {**msk.public()["keys"], "ed25519:x": "x"}}},
            400,
            "M_INVALID_PARAM",
        ),
        ({"master_key": {**msk.public(), "keys": {"ed25519:abc": "abc"}}}, 400, "M_INVALID_PARAM"),
        # Self-signing key not signed by the master key, or signed by another key.
        ({"master_key": msk.public(), "self_signing_key": ssk.public()}, 400,
         "M_INVALID_SIGNATURE"),
        ({"master_key": msk.public(), "self_signing_key": other.sign(ssk.public())}, 400,
         "M_INVALID_SIGNATURE"),
    ]  # fmt: skip
    forged = msk.sign(usk.public())
    forged["keys"] = ssk.public()["keys"]  # a different key under the master's signature
    forged["usage"] = ["user_signing"]
    cases.append(({"master_key": msk.public(), "user_signing_key": forged}, 400,
                  "M_INVALID_SIGNATURE"))  # fmt: skip
    for body, status, errcode in cases:
        r = alice.request("POST", CS_UPLOAD, body)
        assert (r.status, r.body.get("errcode")) == (status, errcode), (body, r.body)
    assert query(alice, alice.user_id)["master_keys"] == {}


def test_signatures_upload_verified(client):
    alice = make_user(client)
    msk, ssk, usk = cross_signing_set(alice.user_id)
    assert alice.request("POST", CS_UPLOAD, cross_signing_body(msk, ssk, usk)).status == 200
    device = query(alice, alice.user_id)["device_keys"][alice.user_id][alice.device_id]
    device.pop("unsigned")

    # The device signed by the self-signing key: stored and served.
    signed = ssk.sign(device)
    r = alice.request("POST", SIG_UPLOAD, {alice.user_id: {alice.device_id: signed}})
    assert r.status == 200 and r.body["failures"] == {}, r.body
    served = query(alice, alice.user_id)["device_keys"][alice.user_id][alice.device_id]
    assert verifies(served, alice.user_id, ssk.key_id, ssk.pub)
    assert verifies(served, alice.user_id, f"ed25519:{alice.device_id}", alice.ed25519)

    # A forged signature under the self-signing key's ID: refused, never served.
    bob = make_user(client)
    b_msk, b_ssk, b_usk = cross_signing_set(bob.user_id)
    assert bob.request("POST", CS_UPLOAD, cross_signing_body(b_msk, b_ssk, b_usk)).status == 200
    bob_dev = query(bob, bob.user_id)["device_keys"][bob.user_id][bob.device_id]
    bob_dev.pop("unsigned")
    impostor = CrossSigningKey(bob.user_id, "self_signing")
    forged = impostor.sign(bob_dev)
    forged["signatures"][bob.user_id][b_ssk.key_id] = forged["signatures"][bob.user_id].pop(
        impostor.key_id
    )
    r = bob.request("POST", SIG_UPLOAD, {bob.user_id: {bob.device_id: forged}})
    assert r.body["failures"][bob.user_id][bob.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    served = query(alice, bob.user_id)["device_keys"][bob.user_id][bob.device_id]
    assert b_ssk.key_id not in served["signatures"][bob.user_id]
    # A signature by a key that is not the self-signing key.
    r = bob.request("POST", SIG_UPLOAD, {bob.user_id: {bob.device_id: impostor.sign(bob_dev)}})
    assert r.body["failures"][bob.user_id][bob.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    # An object that does not match the stored keys.
    changed = b_ssk.sign({**bob_dev, "algorithms": ["x"]})
    r = bob.request("POST", SIG_UPLOAD, {bob.user_id: {bob.device_id: changed}})
    assert r.body["failures"][bob.user_id][bob.device_id]["errcode"] == "M_INVALID_PARAM"
    # Unknown key.
    r = bob.request("POST", SIG_UPLOAD, {bob.user_id: {"NOPE": b_ssk.sign(bob_dev)}})
    assert r.body["failures"][bob.user_id]["NOPE"]["errcode"] == "M_NOT_FOUND"

    # Alice's own master key signed by her device.
    master = query(alice, alice.user_id)["master_keys"][alice.user_id]
    r = alice.request("POST", SIG_UPLOAD, {alice.user_id: {msk.pub: alice.sign(master)}})
    assert r.body["failures"] == {}, r.body
    master = query(bob, alice.user_id)["master_keys"][alice.user_id]
    assert verifies(master, alice.user_id, f"ed25519:{alice.device_id}", alice.ed25519)

    # Alice verifies Bob: Bob's master key signed by Alice's user-signing key. Only the signer
    # sees that signature (who verified whom is private).
    b_master = query(alice, bob.user_id)["master_keys"][bob.user_id]
    r = alice.request("POST", SIG_UPLOAD, {bob.user_id: {b_msk.pub: usk.sign(b_master)}})
    assert r.body["failures"] == {}, r.body
    for viewer, visible in ((alice, True), (bob, False), (make_user(client), False)):
        served = query(viewer, bob.user_id)["master_keys"][bob.user_id]
        assert verifies(served, alice.user_id, usk.key_id, usk.pub) is visible
    # Signing Bob's master key with Alice's self-signing key is not acceptable.
    r = alice.request("POST", SIG_UPLOAD, {bob.user_id: {b_msk.pub: ssk.sign(b_master)}})
    assert r.body["failures"][bob.user_id][b_msk.pub]["errcode"] == "M_INVALID_SIGNATURE"


def test_signatures_upload_bad_input(client):
    alice = make_user(client)
    r = alice.request("POST", SIG_UPLOAD, {alice.user_id: "x"})
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    r = alice.request("POST", SIG_UPLOAD, {alice.user_id: {alice.device_id: "x"}})
    assert r.status == 200
    assert r.body["failures"][alice.user_id][alice.device_id]["errcode"] == "M_BAD_JSON"
    # No self-signing key yet.
    device = query(alice, alice.user_id)["device_keys"][alice.user_id][alice.device_id]
    r = alice.request("POST", SIG_UPLOAD, {alice.user_id: {alice.device_id: device}})
    assert r.body["failures"][alice.user_id][alice.device_id]["errcode"] == "M_MISSING_PARAM"
    r = client.request("POST", SIG_UPLOAD, {}, token=None)
    assert r.status == 401
