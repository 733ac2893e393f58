"""Signing JSON (appendices, "Signing JSON", "Signing Details", "Checking for a Signature").

To sign, remove ``signatures`` and ``unsigned``, encode the rest as canonical JSON, sign it with
Ed25519 and add the unpadded-base64 signature under ``signatures[signing_name][key_id]``; the
``unsigned`` object is put back. An object may carry many signatures; signing adds one and keeps
the others. To verify, the same bytes are rebuilt and the named signature checked; signatures
under algorithms other than ``ed25519`` are ignored (an object with only those is unsigned for
our purposes).
"""

from __future__ import annotations

import nacl.exceptions
import nacl.signing
from nacl.signing import SigningKey, VerifyKey

from bastion.core.base64 import decode_base64, encode_base64
from bastion.core.canonical_json import canonical_json
from bastion.core.json_types import JsonDict
from bastion.errors import M_FORBIDDEN, MatrixError, bad_json

SUPPORTED_ALGORITHMS = ("ed25519",)


class SignatureError(MatrixError):
    """A signature is missing or does not verify (``M_FORBIDDEN``, 401 for requests)."""

    def __init__(self, message: str) -> None:
        super().__init__(M_FORBIDDEN, message, 401)


def _signable(obj: JsonDict) -> JsonDict:
    if not isinstance(obj, dict):
        raise bad_json("only a JSON object can be signed")
    return {k: v for k, v in obj.items() if k != "signatures" and k != "unsigned"}


def sign_json(obj: JsonDict, signing_name: str, key_id: str, key: SigningKey) -> JsonDict:
    """Return a copy of ``obj`` signed by ``signing_name`` with ``key`` under ``key_id``.

    ``key_id`` is the full ``ed25519:<version>`` identifier. Existing signatures are kept.
    """
    if not key_id.startswith("ed25519:"):
        raise bad_json(f"key ID {key_id!r} is not an ed25519 key")
    message = canonical_json(_signable(obj))
    signature = encode_base64(key.sign(message).signature)
    signed = dict(obj)
    existing = obj.get("signatures") or {}
    if not isinstance(existing, dict) or not all(isinstance(v, dict) for v in existing.values()):
        raise bad_json("'signatures' must be an object of objects")
    sigs = {name: dict(by_key) for name, by_key in existing.items()}
    sigs.setdefault(signing_name, {})[key_id] = signature
    signed["signatures"] = sigs
    return signed


def signature_of(obj: JsonDict, signing_name: str, key_id: str) -> bytes:
    """The decoded signature ``obj`` carries for ``signing_name``/``key_id``; raises if absent."""
    if not isinstance(obj, dict):
        raise bad_json("only a JSON object carries signatures")
    sigs = obj.get("signatures")
    if not isinstance(sigs, dict):
        raise SignatureError("object has no signatures")
    by_key = sigs.get(signing_name)
    if not isinstance(by_key, dict):
        raise SignatureError(f"no signature from {signing_name}")
    sig = by_key.get(key_id)
    if sig is None:
        raise SignatureError(f"no signature from {signing_name} with key {key_id}")
    try:
        return decode_base64(sig)
    except MatrixError:
        raise SignatureError(f"signature from {signing_name} ({key_id}) is not base64") from None


def verify_signature_bytes(message: bytes, signature: bytes, key: VerifyKey, what: str) -> None:
    """Verify a detached Ed25519 signature, raising :class:`SignatureError` on failure."""
    try:
        key.verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        raise SignatureError(f"invalid signature from {what}") from None


def verify_signed_json(obj: JsonDict, signing_name: str, key_id: str, key: VerifyKey) -> None:
    """Check that ``obj`` carries a valid signature by ``signing_name`` with ``key``.

    Raises :class:`SignatureError` (a :class:`~bastion.errors.MatrixError`) if the signature is
    missing, malformed or wrong, and ``M_BAD_JSON`` if ``obj`` cannot be canonicalised.
    """
    if not isinstance(key_id, str):
        raise bad_json("key ID must be a string")
    algorithm = key_id.partition(":")[0]
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise SignatureError(f"unsupported signing algorithm {algorithm!r}")
    signature = signature_of(obj, signing_name, key_id)
    verify_signature_bytes(canonical_json(_signable(obj)), signature, key, signing_name)


def signing_key_ids(obj: JsonDict, signing_name: str) -> list[str]:
    """The key IDs of ``signing_name``'s signatures on ``obj`` in supported algorithms only."""
    sigs = obj.get("signatures")
    if not isinstance(sigs, dict):
        return []
    by_key = sigs.get(signing_name)
    if not isinstance(by_key, dict):
        return []
    return [k for k in by_key if isinstance(k, str) and k.partition(":")[0] in SUPPORTED_ALGORITHMS]


def signing_key_from_seed(seed: bytes | str) -> SigningKey:
    """An Ed25519 signing key from its 32-byte seed (raw or unpadded base64)."""
    raw = decode_base64(seed) if isinstance(seed, str) else seed
    if not isinstance(raw, bytes) or len(raw) != 32:
        raise bad_json("an Ed25519 seed is 32 bytes")
    return nacl.signing.SigningKey(raw)


def verify_key_from_base64(key: str) -> VerifyKey:
    """An Ed25519 verify key from its unpadded-base64 form (as in ``verify_keys``)."""
    raw = decode_base64(key)
    if len(raw) != 32:
        raise bad_json("an Ed25519 public key is 32 bytes")
    return nacl.signing.VerifyKey(raw)


def encode_verify_key(key: VerifyKey | SigningKey) -> str:
    """The unpadded-base64 public key, as published in ``verify_keys``."""
    if isinstance(key, SigningKey):
        key = key.verify_key
    return encode_base64(bytes(key))


def generate_signing_key() -> SigningKey:
    """A fresh random Ed25519 signing key."""
    return nacl.signing.SigningKey.generate()


__all__ = [
    "SignatureError",
    "encode_verify_key",
    "generate_signing_key",
    "sign_json",
    "signing_key_from_seed",
    "signing_key_ids",
    "verify_key_from_base64",
    "verify_signed_json",
]
