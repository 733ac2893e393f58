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


def test_event_vector_verifies_under_its_redaction_rules():
    signed = sign_event(EVENT_1, "10", "domain", "ed25519:1", KEY)
    keys = {"domain": {"ed25519:1": KEY.verify_key}}
    assert verify_event(signed, "10", keys) is True
