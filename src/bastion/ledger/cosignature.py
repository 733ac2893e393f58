"""Checkpoint cosignatures (C2SP tlog-cosignature): signature type 0x04, Ed25519
``cosignature/v1`` over a checkpoint, and type 0x06, ML-DSA-44 ``subtree/v1`` over a
(sub)tree.

Both sign a ``timestamped_signature`` (tlog-cosignature "Format"): a big-endian uint64 POSIX
timestamp (at most 2**63 - 1) followed by the signature (64 bytes for Ed25519, 2420 for
ML-DSA-44). Key IDs are ``SHA-256(name || 0x0A || type || public key)[:4]``.

The log signs its checkpoints with Ed25519 (note type 0x01, :mod:`bastion.ledger.note`) and,
when post-quantum signing is on, also with an ML-DSA-44 subtree/v1 signature over ``[0,
size)`` under the log's own name: the log acting as its own cosigner (tlog-checkpoint
"Signatures": "Logs SHOULD use ML-DSA-44 cosignatures to sign the checkpoint").
Verification returns ``False`` on anything wrong and never raises. Pure: no I/O.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey, MLDSA44PublicKey
from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from bastion.ledger.checkpoint import parse_checkpoint
from bastion.ledger.merkle import HASH_SIZE, MAX_TREE_SIZE
from bastion.ledger.note import (
    NoteError,
    NoteSignature,
    check_key_name,
    ed25519_key,
    format_vkey,
    key_id,
)

__all__ = [
    "MAX_TIMESTAMP",
    "MLDSA44_PUBLIC_KEY_SIZE",
    "MLDSA44_SIGNATURE_SIZE",
    "SIG_TYPE_COSIGNATURE_V1",
    "SIG_TYPE_SUBTREE_V1",
    "CosignatureVerifier",
    "Ed25519Cosigner",
    "MLDSA44Cosigner",
    "cosignature_v1_message",
    "subtree_v1_message",
]

#: signed-note "Signature types": 0x04 timestamped Ed25519 checkpoint cosignatures.
SIG_TYPE_COSIGNATURE_V1 = 0x04
#: signed-note "Signature types": 0x06 timestamped ML-DSA-44 (sub)tree cosignatures.
SIG_TYPE_SUBTREE_V1 = 0x06
#: tlog-cosignature "Format": the timestamp "MUST NOT exceed 2^63 - 1".
MAX_TIMESTAMP = 2**63 - 1
MLDSA44_PUBLIC_KEY_SIZE = 1312
MLDSA44_SIGNATURE_SIZE = 2420
_ED25519_SIGNATURE_SIZE = 64
_SUBTREE_LABEL = b"subtree/v1\n\x00"


def _check_timestamp(timestamp: int) -> None:
    if not isinstance(timestamp, int) or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError("a cosignature timestamp is 0 to 2**63 - 1")


def cosignature_v1_message(checkpoint_text: str, timestamp: int) -> bytes:
    """tlog-cosignature "Ed25519 signed message": ``cosignature/v1``, ``time <timestamp>``,
    then the whole checkpoint note text (extension lines included)."""
    _check_timestamp(timestamp)
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()


def _opaque8(value: bytes, what: str) -> bytes:
    if not 1 <= len(value) <= 255:
        raise ValueError(f"the {what} is 1 to 255 bytes")
    return bytes([len(value)]) + value


def subtree_v1_message(
    cosigner_name: str, timestamp: int, origin: str, start: int, end: int, root: bytes
) -> bytes:
    """tlog-cosignature "ML-DSA-44 signed message": the ``cosigned_message`` structure
    (label ``subtree/v1\\n\\0``, the cosigner name and the log origin as ``opaque<1..255>``,
    big-endian uint64 timestamp, start and end, the 32-byte subtree hash). A non-zero
    ``start`` requires a zero timestamp."""
    _check_timestamp(timestamp)
    if not 0 <= start < end <= MAX_TREE_SIZE and not start == end == 0:
        raise ValueError("bad subtree range")
    if start and timestamp:
        raise ValueError("a subtree not starting at 0 has a zero timestamp")
    if len(root) != HASH_SIZE:
        raise ValueError("a subtree hash is 32 bytes")
    return b"".join(
        [
            _SUBTREE_LABEL,
            _opaque8(cosigner_name.encode(), "cosigner name"),
            timestamp.to_bytes(8, "big"),
            _opaque8(origin.encode(), "log origin"),
            start.to_bytes(8, "big"),
            end.to_bytes(8, "big"),
            root,
        ]
    )


def _checkpoint_message(name: str, checkpoint_text: str, timestamp: int) -> bytes:
    cp = parse_checkpoint(checkpoint_text)
    return subtree_v1_message(name, timestamp, cp.origin, 0, cp.size, cp.root)


class Ed25519Cosigner:
    """tlog-cosignature: an Ed25519 cosigner (type 0x04) from a 32-byte seed."""

    sig_type = SIG_TYPE_COSIGNATURE_V1

    def __init__(self, name: str, seed: bytes) -> None:
        self.name = name
        self._key, self.public_key, self.key_id = ed25519_key(name, SIG_TYPE_COSIGNATURE_V1, seed)

    def cosign(self, checkpoint_text: str, timestamp: int) -> NoteSignature:
        """A cosignature/v1 line over ``checkpoint_text`` (which must be a checkpoint)."""
        parse_checkpoint(checkpoint_text)
        message = cosignature_v1_message(checkpoint_text, timestamp)
        sig = self._key.sign(message).signature
        return NoteSignature(self.name, self.key_id, timestamp.to_bytes(8, "big") + sig)

    def vkey(self) -> str:
        return format_vkey(self.name, SIG_TYPE_COSIGNATURE_V1, self.public_key)

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, SIG_TYPE_COSIGNATURE_V1, self.public_key)


class MLDSA44Cosigner:
    """tlog-cosignature: an ML-DSA-44 cosigner (type 0x06). ``private_key_bytes`` is the
    32-byte ML-DSA seed (FIPS 204 key generation seed, as ``private_bytes_raw`` gives it)."""

    sig_type = SIG_TYPE_SUBTREE_V1

    def __init__(self, name: str, private_key_bytes: bytes) -> None:
        check_key_name(name)
        if len(name.encode()) > 255:
            raise ValueError("an ML-DSA-44 cosigner name is at most 255 bytes")
        if len(private_key_bytes) != 32:
            raise ValueError("an ML-DSA-44 seed is 32 bytes")
        self.name = name
        self._key = MLDSA44PrivateKey.from_seed_bytes(bytes(private_key_bytes))
        self.public_key = self._key.public_key().public_bytes_raw()
        self.key_id = key_id(name, SIG_TYPE_SUBTREE_V1, self.public_key)

    def cosign(self, checkpoint_text: str, timestamp: int) -> NoteSignature:
        """A subtree/v1 line over ``[0, size)`` of the checkpoint ``checkpoint_text``."""
        message = _checkpoint_message(self.name, checkpoint_text, timestamp)
        return self._signature(timestamp, message)

    def sign_subtree(self, origin: str, start: int, end: int, root: bytes) -> NoteSignature:
        """A subtree/v1 line over ``[start, end)`` with a zero timestamp (no statement about
        the largest tree, as tlog-witness "sign-subtree" requires)."""
        return self._signature(0, subtree_v1_message(self.name, 0, origin, start, end, root))

    def _signature(self, timestamp: int, message: bytes) -> NoteSignature:
        sig = self._key.sign(message)
        return NoteSignature(self.name, self.key_id, timestamp.to_bytes(8, "big") + sig)

    def vkey(self) -> str:
        return format_vkey(self.name, SIG_TYPE_SUBTREE_V1, self.public_key)

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, SIG_TYPE_SUBTREE_V1, self.public_key)


class CosignatureVerifier:
    """Checks type 0x04 or 0x06 cosignatures of one cosigner; a note
    :class:`~bastion.ledger.note.Verifier` (the text it verifies is a checkpoint)."""

    def __init__(self, name: str, sig_type: int, public_key: bytes) -> None:
        check_key_name(name)
        self.name = name
        self.sig_type = sig_type
        self.public_key = bytes(public_key)
        self.key_id = key_id(name, sig_type, self.public_key)
        self._ed25519: VerifyKey | None = None
        self._mldsa: MLDSA44PublicKey | None = None
        if sig_type == SIG_TYPE_COSIGNATURE_V1:
            if len(public_key) != 32:
                raise NoteError("an Ed25519 public key is 32 bytes")
            self._ed25519 = VerifyKey(self.public_key)
        elif sig_type == SIG_TYPE_SUBTREE_V1:
            if len(public_key) != MLDSA44_PUBLIC_KEY_SIZE:
                raise NoteError("an ML-DSA-44 public key is 1312 bytes")
            if len(name.encode()) > 255:
                raise NoteError("an ML-DSA-44 cosigner name is at most 255 bytes")
            try:
                self._mldsa = MLDSA44PublicKey.from_public_bytes(self.public_key)
            except ValueError:
                raise NoteError("not an ML-DSA-44 public key") from None
        else:
            raise NoteError(f"not a cosignature type: {sig_type:#04x}")

    def timestamp(self, sig: NoteSignature) -> int:
        """The cosignature's timestamp; ``ValueError`` when too short to hold one."""
        if len(sig.signature) < 8:
            raise ValueError("a cosignature starts with an 8-byte timestamp")
        return int.from_bytes(sig.signature[:8], "big")

    def _mine(self, sig: NoteSignature, size: int) -> bool:
        return sig.name == self.name and sig.key_id == self.key_id and len(sig.signature) == size

    def verify(self, text: str, sig: NoteSignature) -> bool:
        """Does ``sig`` cosign the checkpoint ``text`` (for 0x06: the tree ``[0, size)`` of the
        checkpoint)? ``False`` on anything malformed."""
        try:
            if self._ed25519 is not None:
                if not self._mine(sig, 8 + _ED25519_SIGNATURE_SIZE):
                    return False
                ts = self.timestamp(sig)
                parse_checkpoint(text)
                self._ed25519.verify(cosignature_v1_message(text, ts), sig.signature[8:])
                return True
            if not self._mine(sig, 8 + MLDSA44_SIGNATURE_SIZE):
                return False
            message = _checkpoint_message(self.name, text, self.timestamp(sig))
            return self._verify_mldsa(message, sig)
        except (CryptoError, ValueError, TypeError):
            return False

    def verify_subtree(
        self, origin: str, start: int, end: int, root: bytes, sig: NoteSignature
    ) -> bool:
        """Does the 0x06 ``sig`` sign the subtree ``[start, end)`` of ``origin`` with hash
        ``root``? ``False`` on anything malformed."""
        if self._mldsa is None or not self._mine(sig, 8 + MLDSA44_SIGNATURE_SIZE):
            return False
        try:
            ts = self.timestamp(sig)
            return self._verify_mldsa(
                subtree_v1_message(self.name, ts, origin, start, end, root), sig
            )
        except ValueError:
            return False

    def _verify_mldsa(self, message: bytes, sig: NoteSignature) -> bool:
        assert self._mldsa is not None
        try:
            self._mldsa.verify(sig.signature[8:], message)
        except InvalidSignature:
            return False
        return True
