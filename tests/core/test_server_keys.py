"""Key-response validation and key validity rules (S-S API "Retrieving server keys", keys.yaml;
rooms v5+ signing requirements)."""

import pytest
from nacl.signing import SigningKey

from bastion.core.server_keys import (
    MAX_KEY_VALIDITY_MS,
    KeyResponseError,
    check_notary_signature,
    key_valid_for_event,
    key_valid_for_request,
    server_key_response,
    validate_key_response,
)
from bastion.core.signing import encode_verify_key, sign_json

NOW = 1_700_000_000_000
K1 = SigningKey(b"\x01" * 32)
K2 = SigningKey(b"\x02" * 32)
OLD = SigningKey(b"\x03" * 32)


def response(name="example.org", until=NOW + 3600_000, **kw):
    return server_key_response(
        name, "ed25519:k1", K1, until, [("ed25519:old", encode_verify_key(OLD), NOW - 1000)], **kw
    )


def test_valid_response():
    keys = validate_key_response(response(), "example.org", NOW)
    assert set(keys.verify_keys) == {"ed25519:k1"}
    assert keys.verify_keys["ed25519:k1"].valid_until_ts == NOW + 3600_000
    old = keys.old_verify_keys["ed25519:old"]
    assert old.old and old.valid_until_ts == NOW - 1000


def test_valid_until_capped_at_seven_days():
    keys = validate_key_response(response(until=NOW + 365 * 86400_000), "example.org", NOW)
    assert keys.verify_keys["ed25519:k1"].valid_until_ts == NOW + MAX_KEY_VALIDITY_MS
    assert keys.valid_until_ts == NOW + 365 * 86400_000  # as published


def test_server_name_must_match_exactly():
    for other in ("example.org:8448", "EXAMPLE.org", "evil.org"):
        with pytest.raises(KeyResponseError):
            validate_key_response(response(), other, NOW)
    r = response(name="example.org:8448")
    validate_key_response(r, "example.org:8448", NOW)
    with pytest.raises(KeyResponseError):
        validate_key_response(r, "example.org", NOW)


def test_self_signature_required():
    r = response()
    r2 = dict(r, verify_keys={"ed25519:k1": {"key": encode_verify_key(K2)}})  # key swapped
    with pytest.raises(KeyResponseError):
        validate_key_response(r2, "example.org", NOW)
    unsigned = {k: v for k, v in r.items() if k != "signatures"}
    with pytest.raises(KeyResponseError):
        validate_key_response(unsigned, "example.org", NOW)
    # Signed only by an old key (not in verify_keys): refused.
    body = {k: v for k, v in r.items() if k != "signatures"}
    with pytest.raises(KeyResponseError):
        validate_key_response(
            sign_json(body, "example.org", "ed25519:old", OLD), "example.org", NOW
        )
    # A tampered field breaks the signature.
    with pytest.raises(KeyResponseError):
        validate_key_response(dict(r, valid_until_ts=NOW + 10**9), "example.org", NOW)
    # One good and one bad signature by listed keys: refused.
    bad = sign_json(r, "example.org", "ed25519:k1", K1)
    bad["signatures"]["example.org"]["ed25519:k1"] = (
        r["signatures"]["example.org"]["ed25519:k1"][:-4] + "AAAA"
    )
    with pytest.raises(KeyResponseError):
        validate_key_response(bad, "example.org", NOW)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.pop("verify_keys"),
        lambda r: r.__setitem__("verify_keys", {}),
        lambda r: r.__setitem__("valid_until_ts", "soon"),
        lambda r: r.__setitem__("valid_until_ts", True),
        lambda r: r.__setitem__("old_verify_keys", []),
        lambda r: r.__setitem__("verify_keys", {"ed25519:bad-id!": {"key": encode_verify_key(K1)}}),
        lambda r: r.__setitem__("verify_keys", {"ed25519:k1": {"key": "c2hvcnQ"}}),
        lambda r: r.__setitem__("old_verify_keys", {"ed25519:o": {"key": encode_verify_key(OLD)}}),
    ],
)
def test_malformed(mutate):
    r = response()
    mutate(r)
    with pytest.raises(KeyResponseError):
        validate_key_response(r, "example.org", NOW)
    with pytest.raises(KeyResponseError):
        validate_key_response([r], "example.org", NOW)


def test_banned_keys():
    with pytest.raises(KeyResponseError):
        validate_key_response(response(), "example.org", NOW, banned_keys=[encode_verify_key(K1)])
    keys = validate_key_response(
        response(), "example.org", NOW, banned_keys=[encode_verify_key(OLD)]
    )
    assert keys.old_verify_keys == {}


def test_old_keys_sign_events_not_requests():
    keys = validate_key_response(response(), "example.org", NOW)
    cur, old = keys.verify_keys["ed25519:k1"], keys.old_verify_keys["ed25519:old"]
    assert key_valid_for_request(cur, NOW)
    assert not key_valid_for_request(cur, NOW + 3600_001)
    assert not key_valid_for_request(old, NOW - 10_000)
    # v5+: valid at origin_server_ts.
    assert key_valid_for_event(old, NOW - 1000, True)
    assert not key_valid_for_event(old, NOW - 999, True)
    assert key_valid_for_event(cur, NOW + 3600_000, True)
    assert not key_valid_for_event(cur, NOW + 3600_001, True)
    assert not key_valid_for_event(cur, "x", True)
    # v1–v4 ignore validity.
    assert key_valid_for_event(old, NOW + 10**9, False)


def test_notary_signature():
    r = response()
    signed = sign_json(r, "notary.org", "ed25519:n", K2)
    validate_key_response(signed, "example.org", NOW)  # the origin's signature still holds
    check_notary_signature(signed, "notary.org", {"ed25519:n": K2.verify_key})
    with pytest.raises(KeyResponseError):
        check_notary_signature(r, "notary.org", {"ed25519:n": K2.verify_key})
    with pytest.raises(KeyResponseError):
        check_notary_signature(signed, "notary.org", {"ed25519:n": K1.verify_key})
    with pytest.raises(KeyResponseError):
        check_notary_signature(signed, "notary.org", {})
