"""The official test vectors of the spec's appendices (SPEC-MAP §4): base64, canonical JSON,
JSON signing and event signing."""

import pytest

from bastion.core import (
    canonical_json,
    compute_content_hash,
    compute_event_id,
    decode_base64,
    encode_base64,
    parse_json,
    sign_event,
    sign_json,
    signing_key_from_seed,
    verify_event,
    verify_signed_json,
)
from bastion.core.signing import encode_verify_key

SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
KEY = signing_key_from_seed(SEED)


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"", ""),
        (b"f", "Zg"),
        (b"fo", "Zm8"),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg"),
        (b"fooba", "Zm9vYmE"),
        (b"foobar", "Zm9vYmFy"),
    ],
)
def test_unpadded_base64_vectors(raw, encoded):
    assert encode_base64(raw) == encoded
    assert decode_base64(encoded) == raw
    padded = encoded + "=" * (-len(encoded) % 4)
    assert decode_base64(padded) == raw


CANONICAL_VECTORS = [
    ("{}", "{}"),
    ('{"one": 1, "two": "Two"}', '{"one":1,"two":"Two"}'),
    ('{"b": "2", "a": "1"}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        '{"auth":{"success":true,"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        '"three_pids":[{"medium":"email","address":"john.doe@example.org"},'
        '{"medium":"msisdn","address":"123456789"}]}}}',
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":'
        '[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},'
        '"success":true}}',
    ),
    ('{"a": "日本語"}', '{"a":"日本語"}'),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'),
    ('{"a": "\\u65E5"}', '{"a":"日"}'),
    ('{"a": null}', '{"a":null}'),
    ('{"a": -0, "b": 1e10}', '{"a":0,"b":10000000000}'),
]


@pytest.mark.parametrize(("text", "expected"), CANONICAL_VECTORS)
def test_canonical_json_vectors(text, expected):
    assert canonical_json(parse_json(text)) == expected.encode("utf-8")


def test_signing_key_public_part():
    assert encode_verify_key(KEY) == "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"


@pytest.mark.parametrize(
    ("obj", "signature"),
    [
        (
            {},
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ",
        ),
        (
            {"one": 1, "two": "Two"},
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw",
        ),
    ],
)
def test_json_signing_vectors(obj, signature):
    signed = sign_json(obj, "domain", "ed25519:1", KEY)
    assert signed["signatures"] == {"domain": {"ed25519:1": signature}}
    verify_signed_json(signed, "domain", "ed25519:1", KEY.verify_key)


EVENT_1 = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}
EVENT_2 = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}


@pytest.mark.parametrize("room_version", ["1", "5", "10"])
@pytest.mark.parametrize(
    ("event", "content_hash", "signature"),
    [
        (
            EVENT_1,
            "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos",
            "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg",
        ),
        (
            EVENT_2,
            "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g",
            "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA",
        ),
    ],
)
def test_event_signing_vectors(room_version, event, content_hash, signature):
    # The appendix vectors use the pre-v11 redaction algorithm (which keeps `origin`).
    signed = sign_event(event, room_version, "domain", "ed25519:1", KEY)
    assert signed["hashes"] == {"sha256": content_hash}
    assert signed["signatures"] == {"domain": {"ed25519:1": signature}}
    assert signed["unsigned"] == {"age_ts": 1000000}
    assert compute_content_hash(event) == content_hash
    unchanged = {k: v for k, v in signed.items() if k not in ("hashes", "signatures")}
    assert unchanged == {k: v for k, v in event.items() if k not in ("hashes", "signatures")}


def test_event_vector_1_reference_hash():
    signed = sign_event(EVENT_1, "10", "domain", "ed25519:1", KEY)
    assert compute_event_id(signed, "4") == "$8yif6p8EqgoSten2BLje9ntKm720NyFLWQv9tn8memc"
    assert compute_event_id(signed, "3") == "$8yif6p8EqgoSten2BLje9ntKm720NyFLWQv9tn8memc"


# Derived vector (not in the spec): the spec's EVENT_1 with `depth` changed from 3 to 13, the
# smallest change found whose reference hash, base64-encoded, contains both `+` and `/` in the
# standard alphabet (hence `-` and `_` in the URL-safe one), so that it tells room version 3
# (standard alphabet) from room version 4 and later (URL-safe). The expected IDs were computed by
# Synapse 1.163.2 (`synapse.events.make_event_from_dict(...).event_id`, which uses
# `synapse.crypto.event_signing.compute_event_reference_hash`); the test recomputes them with
# Synapse's code as an independent implementation.
EVENT_1_DEPTH_13 = {**EVENT_1, "depth": 13}
EVENT_1_DEPTH_13_ID_V3 = "$cC2VJ+Cq83/LSlQ43CTEElw0+iNgpfXu99TpDngrAhs"
EVENT_1_DEPTH_13_ID_V4 = "$cC2VJ-Cq83_LSlQ43CTEElw0-iNgpfXu99TpDngrAhs"


def test_event_id_alphabet_v3_standard_v4_url_safe():
    signed = sign_event(EVENT_1_DEPTH_13, "10", "domain", "ed25519:1", KEY)
    assert compute_event_id(signed, "3") == EVENT_1_DEPTH_13_ID_V3
    for version in ("4", "5", "10"):  # v11 redacts `origin`: another hash
        assert compute_event_id(signed, version) == EVENT_1_DEPTH_13_ID_V4
    # The vector does what it is for: both alphabets' distinguishing characters occur.
    assert {"+", "/"} <= set(EVENT_1_DEPTH_13_ID_V3) and not {"-", "_"} & set(
        EVENT_1_DEPTH_13_ID_V3
    )
    assert {"-", "_"} <= set(EVENT_1_DEPTH_13_ID_V4) and not {"+", "/"} & set(
        EVENT_1_DEPTH_13_ID_V4
    )


def test_event_id_alphabet_matches_synapse():
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
    from synapse.crypto.event_signing import compute_event_reference_hash
    from synapse.events import make_event_from_dict
    from unpaddedbase64 import encode_base64 as synapse_b64

    signed = sign_event(EVENT_1_DEPTH_13, "10", "domain", "ed25519:1", KEY)
    v3 = make_event_from_dict(dict(signed), KNOWN_ROOM_VERSIONS["3"])
    v4 = make_event_from_dict(dict(signed), KNOWN_ROOM_VERSIONS["4"])
    _, digest = compute_event_reference_hash(v3)
    assert "$" + synapse_b64(digest) == v3.event_id == EVENT_1_DEPTH_13_ID_V3
    assert "$" + synapse_b64(digest, urlsafe=True) == v4.event_id == EVENT_1_DEPTH_13_ID_V4
    assert compute_event_id(signed, "3") == v3.event_id
    assert compute_event_id(signed, "4") == v4.event_id


def test_event_vector_verifies_under_its_redaction_rules():
    signed = sign_event(EVENT_1, "10", "domain", "ed25519:1", KEY)
    keys = {"domain": {"ed25519:1": KEY.verify_key}}
    assert verify_event(signed, "10", keys) is True
