"""Key upload, query, claim and changes (C-S API "End-to-End Encryption" → "Key management API"),
with real device keys from vodozemac."""

from __future__ import annotations

from tests.support.e2ee import V3, Device, new_device, signable, sync_direct, wait_writes

UPLOAD = f"{V3}/keys/upload"
QUERY = f"{V3}/keys/query"
CLAIM = f"{V3}/keys/claim"


def query(dev, users: dict):
    return dev.request("POST", QUERY, {"device_keys": users})


def claim(dev, user_id: str, device_id: str, algorithm: str = "signed_curve25519"):
    return dev.request("POST", CLAIM, {"one_time_keys": {user_id: {device_id: algorithm}}})


def test_upload_and_query_returns_keys_exactly(client):
    alice = Device(client.register())
    keys = alice.device_keys()
    r = alice.upload(device_keys=keys, one_time_keys=alice.one_time_keys(5))
    assert r.status == 200, r.body
    assert r.body == {"one_time_key_counts": {"signed_curve25519": 5}}
    bob = new_device(client)
    r = query(bob, {alice.user_id: []})
    assert r.status == 200, r.body
    served = r.body["device_keys"][alice.user_id][alice.device_id]
    unsigned = served.pop("unsigned")
    assert served == keys  # exactly as uploaded apart from `unsigned`
    assert isinstance(unsigned, dict)
    assert r.body["failures"] == {}
    # The served signature verifies with the device's own key (what nio checks).
    import vodozemac

    from bastion.core.canonical_json import canonical_json

    vodozemac.Ed25519PublicKey.from_base64(alice.ed25519).verify_signature(
        canonical_json(signable(served)),
        vodozemac.Ed25519Signature.from_base64(
            served["signatures"][alice.user_id][f"ed25519:{alice.device_id}"]
        ),
    )


def test_query_display_name_specific_devices_and_unknowns(client):
    alice = new_device(client)
    r = alice.request("PUT", f"{V3}/devices/{alice.device_id}", {"display_name": "Alice's phone"})
    assert r.status == 200, r.body
    r = query(alice, {alice.user_id: [alice.device_id, "NOPE"], "@nobody:localhost": []})
    assert r.status == 200
    devices = r.body["device_keys"][alice.user_id]
    assert list(devices) == [alice.device_id]
    assert devices[alice.device_id]["unsigned"]["device_display_name"] == "Alice's phone"
    assert "@nobody:localhost" not in r.body["device_keys"]
    r = query(alice, {"@carol:remote.example": []})
    assert r.status == 200
    assert "remote.example" in r.body["failures"]


def test_upload_rejects_bad_device_keys(client):
    dev = Device(client.register())
    good = dev.device_keys()
    cases = [
        ({**good, "user_id": "@mallory:localhost"}, "M_INVALID_PARAM"),
        ({**good, "device_id": "OTHER"}, "M_INVALID_PARAM"),
        ({**good, "algorithms": "m.olm.v1.curve25519-aes-sha2"}, "M_BAD_JSON"),
        ({**good, "keys": []}, "M_BAD_JSON"),
        ({k: v for k, v in good.items() if k != "signatures"}, "M_INVALID_SIGNATURE"),
        ("not an object", "M_BAD_JSON"),
    ]
    # Forged: a different curve key under the old signature.
    forged = dict(good)
    forged["keys"] = {**good["keys"], f"curve25519:{dev.device_id}": "A" * 43}
    cases.append((forged, "M_INVALID_SIGNATURE"))
    # Signed by a key other than the one it names.
    other = Device(dev.client)
    cases.append((other.sign(signable(good)), "M_INVALID_SIGNATURE"))
    for body, errcode in cases:
        r = dev.upload(device_keys=body)
        assert r.status == 400, (body, r.body)
        assert r.body["errcode"] == errcode, (body, r.body)
    r = query(dev, {dev.user_id: []})
    assert r.body["device_keys"][dev.user_id] == {}


def test_reupload_identical_ok_different_refused(client):
    dev = Device(client.register())
    keys = dev.device_keys()
    assert dev.upload(device_keys=keys).status == 200
    assert dev.upload(device_keys=keys).status == 200
    other = Device(dev.client)
    r = dev.upload(device_keys=other.device_keys())
    assert r.status == 400
    assert r.body["errcode"] == "M_INVALID_PARAM"
    r = query(dev, {dev.user_id: []})
    served = r.body["device_keys"][dev.user_id][dev.device_id]
    served.pop("unsigned")
    assert served == keys


def test_one_time_keys_validation(client):
    dev = new_device(client)
    otks = dev.one_time_keys(2)
    kid = next(iter(otks))
    forged = {kid: {**otks[kid], "key": "B" * 43}}
    r = dev.upload(one_time_keys=forged)
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_SIGNATURE"
    r = dev.upload(one_time_keys={"signed_curve25519:X": "just a string"})
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    r = dev.upload(one_time_keys={"nocolon": {"key": "x"}})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    r = dev.upload(one_time_keys=["a"])
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    r = dev.upload(one_time_keys=otks)
    assert r.status == 200 and r.body["one_time_key_counts"]["signed_curve25519"] == 2
    # The same keys again are ignored; the same ID with other content is refused.
    assert dev.upload(one_time_keys=otks).body["one_time_key_counts"]["signed_curve25519"] == 2
    other = dev.sign({"key": "C" * 43})
    r = dev.upload(one_time_keys={kid: other})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    # A fallback key must say so.
    fb = dev.fallback_keys()
    fkid = next(iter(fb))
    no_flag = {fkid: dev.sign({"key": fb[fkid]["key"]})}
    r = dev.upload(fallback_keys=no_flag)
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"


def test_signed_keys_need_device_keys_first(client):
    dev = Device(client.register())
    r = dev.upload(one_time_keys=dev.one_time_keys(1))
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"


def test_claim_order_once_then_fallback(client, server):
    alice = Device(client.register())
    first = alice.one_time_keys(2)
    assert alice.upload(device_keys=alice.device_keys(), one_time_keys=first).status == 200
    second = alice.one_time_keys(1)
    assert alice.upload(one_time_keys=second).status == 200
    fb = alice.fallback_keys()
    r = alice.upload(fallback_keys=fb)
    assert r.body["one_time_key_counts"] == {"signed_curve25519": 3}
    part, _ = sync_direct(server, alice.user_id, alice.device_id)
    assert part["device_one_time_keys_count"] == {"signed_curve25519": 3}
    assert part["device_unused_fallback_key_types"] == ["signed_curve25519"]

    bob = new_device(client)
    got = []
    for _ in range(3):
        r = claim(bob, alice.user_id, alice.device_id)
        assert r.status == 200, r.body
        ((kid, key),) = r.body["one_time_keys"][alice.user_id][alice.device_id].items()
        got.append(kid)
        assert "fallback" not in key
    # Upload order across requests; each key handed out once.
    assert set(got[:2]) == set(first) and got[2] == next(iter(second))
    assert alice.upload().body["one_time_key_counts"] == {"signed_curve25519": 0}
    for _ in range(2):
        r = claim(bob, alice.user_id, alice.device_id)
        ((kid, key),) = r.body["one_time_keys"][alice.user_id][alice.device_id].items()
        assert kid == next(iter(fb)) and key["fallback"] is True
        assert key == fb[kid]
    part, _ = sync_direct(server, alice.user_id, alice.device_id)
    assert part["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert part["device_unused_fallback_key_types"] == []
    # Re-uploading the used key does not make it unused; a new key does.
    alice.upload(fallback_keys=fb)
    part, _ = sync_direct(server, alice.user_id, alice.device_id)
    assert part["device_unused_fallback_key_types"] == []
    alice.upload(fallback_keys=alice.fallback_keys(), one_time_keys={})
    part, _ = sync_direct(server, alice.user_id, alice.device_id)
    assert part["device_unused_fallback_key_types"] == ["signed_curve25519"]
    wait_writes(server)


def test_claim_unknowns_remote_and_bad_input(client):
    alice = new_device(client, otks=1)
    r = bob_claim = alice.request(
        "POST",
        CLAIM,
        {
            "one_time_keys": {
                alice.user_id: {"NOPE": "signed_curve25519", alice.device_id: "curve25519"},
                "@ghost:localhost": {"X": "signed_curve25519"},
                "@carol:remote.example": {"X": "signed_curve25519"},
            },
            "timeout": 10000,
        },
    )
    assert bob_claim.status == 200, r.body
    assert r.body["one_time_keys"] == {}
    assert "remote.example" in r.body["failures"]
    for body in (
        {},
        {"one_time_keys": []},
        {"one_time_keys": {alice.user_id: ["x"]}},
        {"one_time_keys": {alice.user_id: {"D": 5}}},
        {"one_time_keys": {}, "timeout": "soon"},
    ):
        r = alice.request("POST", CLAIM, body)
        assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON", (body, r.body)
    r = alice.request("POST", CLAIM, {"one_time_keys": {"not-a-user": {"D": "x"}}})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"


def test_query_bad_input_and_auth(client):
    alice = new_device(client)
    for body in ({}, {"device_keys": []}, {"device_keys": {alice.user_id: "all"}}):
        r = alice.request("POST", QUERY, body)
        assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON", r.body
    r = alice.request("POST", QUERY, {"device_keys": {"alice": []}})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    for method, path in (("POST", QUERY), ("POST", UPLOAD), ("POST", CLAIM)):
        r = client.request(method, path, {}, token=None)
        assert r.status == 401 and r.body["errcode"] == "M_MISSING_TOKEN"
    r = alice.request("POST", UPLOAD, raw=b"[1,2]")
    assert r.status == 400


def test_sync_counts_always_present(client, server):
    dev = Device(client.register())
    part, token = sync_direct(server, dev.user_id, dev.device_id)
    assert part["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert part["device_unused_fallback_key_types"] == []
    assert part["to_device"] == {"events": []}
    assert "device_lists" not in part  # only on incremental syncs
    dev.upload(device_keys=dev.device_keys(), one_time_keys=dev.one_time_keys(3))
    part, _ = sync_direct(server, dev.user_id, dev.device_id, token)
    assert part["device_one_time_keys_count"] == {"signed_curve25519": 3}
    assert dev.user_id in part["device_lists"]["changed"]  # own device list changed


def test_key_changes(client, server):
    alice = Device(client.register())
    _, token = sync_direct(server, alice.user_id, alice.device_id)
    alice.upload(device_keys=alice.device_keys())
    _, token2 = sync_direct(server, alice.user_id, alice.device_id)
    r = alice.request("GET", f"{V3}/keys/changes", query={"from": token, "to": token2})
    assert r.status == 200, r.body
    assert alice.user_id in r.body["changed"] and r.body["left"] == []
    r = alice.request("GET", f"{V3}/keys/changes", query={"from": token2, "to": token2})
    assert r.body == {"changed": [], "left": []}
    r = alice.request("GET", f"{V3}/keys/changes", query={"from": "garbage", "to": token2})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    r = alice.request("GET", f"{V3}/keys/changes", query={"from": token})
    assert r.status == 400 and r.body["errcode"] == "M_MISSING_PARAM"


def test_device_deletion_drops_keys(client, server):
    password = "correct horse battery"
    c = client.register(password=password)
    alice = Device(c)
    alice.upload(
        device_keys=alice.device_keys(),
        one_time_keys=alice.one_time_keys(2),
        fallback_keys=alice.fallback_keys(),
    )
    # A second device of the same user deletes the first.
    r = client.request(
        "POST",
        f"{V3}/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": alice.user_id},
            "password": password,
        },
        token=None,
    )
    assert r.status == 200, r.body
    other = Device(type(client)(client.base_url, r.body["access_token"]))
    other.user_id, other.device_id = alice.user_id, r.body["device_id"]
    _, token = sync_direct(server, other.user_id, other.device_id)
    path = f"{V3}/devices/{alice.device_id}"
    r = other.request("DELETE", path, {})
    assert r.status == 401 and "session" in r.body
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": password,
        "session": r.body["session"],
    }
    r = other.request("DELETE", path, {"auth": auth})
    assert r.status == 200, r.body
    r = query(other, {alice.user_id: []})
    assert alice.device_id not in r.body["device_keys"][alice.user_id]
    r = claim(other, alice.user_id, alice.device_id)
    assert r.body["one_time_keys"] == {}
    part, _ = sync_direct(server, other.user_id, other.device_id, token)
    assert alice.user_id in part["device_lists"]["changed"]
