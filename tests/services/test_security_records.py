"""The helpers of the security-action records: the key hash a verifier recomputes, the clipping
of client-chosen values, an admin's ``reason``."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from bastion.core.base64 import decode_base64
from bastion.core.canonical_json import canonical_json
from bastion.errors import MatrixError
from bastion.ledger.records import entry_bytes
from bastion.services.security_records import (
    MAX_REASON_CHARS,
    SIGNATURES_PER_RECORD,
    admin_reason,
    clip,
    key_sha256,
)


def test_key_hash_is_sha256_of_canonical_json():
    key = {"user_id": "@a:x", "keys": {"ed25519:D": "k"}, "algorithms": ["b", "a"], "é": 1}
    digest = decode_base64(key_sha256(key))
    assert digest == hashlib.sha256(canonical_json(key)).digest()
    assert not key_sha256(key).endswith("=")
    # Independent of the order the stored JSON happens to have.
    assert key_sha256(orjson.loads(orjson.dumps(dict(reversed(key.items()))))) == key_sha256(key)


def test_clip():
    assert clip("abc") == "abc"
    assert clip("x" * 300) == "x" * 255
    assert clip("abcdef", 3) == "abc"


def test_admin_reason():
    assert admin_reason({}) is None
    assert admin_reason({"reason": None}) is None
    assert admin_reason({"reason": "spam"}) == "spam"
    assert admin_reason({"reason": "r" * MAX_REASON_CHARS}) == "r" * MAX_REASON_CHARS
    for bad, errcode in ((5, "M_BAD_JSON"), (["x"], "M_BAD_JSON"),
                         ("r" * (MAX_REASON_CHARS + 1), "M_INVALID_PARAM")):  # fmt: skip
        with pytest.raises(MatrixError) as e:
            admin_reason({"reason": bad})
        assert e.value.errcode == errcode


def test_the_largest_records_fit_in_an_entry():
    """The biggest values a client can put in a record still fit a ledger entry (64 KiB):
    a full chunk of signatures with the longest IDs, and the longest reason."""
    from bastion.ledger.records import action_record

    long_id = "@" + "u" * 250 + ":x"
    sig = [long_id, "D" * 255, "ed25519:" + "k" * 43, "s" * 86]
    record = action_record(
        action="signatures.upload", actor=long_id, ts=1, target=long_id, subject=long_id,
        origin="ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", reason="r" * MAX_REASON_CHARS,
        details={"signatures": [sig] * SIGNATURES_PER_RECORD}, nonce="n" * 22,
    )  # fmt: skip
    assert len(entry_bytes(record)) < 0xFFFF
