"""Signed notes (C2SP signed-note): text signed by one or more keys, verifier keys (vkeys) and
key IDs, and the Ed25519 signature type 0x01.

Format (signed-note "Format"): the text (ending in a newline), a blank line, then one or more
lines ``— <key name> base64(key ID || signature)``. The parser is strict: valid UTF-8, no
control character but newline, canonical padded standard base64 (RFC 4648 section 4), key
names non-empty without Unicode spaces or ``+``, at most :data:`MAX_NOTE_SIZE` bytes and
:data:`MAX_SIGNATURES` signature lines (the spec asks verifiers to accept at least 16).
Anything else raises :class:`NoteError`. Verification never raises on a bad signature.
Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

__all__ = [
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "SIG_TYPE_ED25519",
    "Ed25519Signer",
    "Ed25519Verifier",
    "Note",
    "NoteError",
    "NoteSignature",
    "Signer",
    "Verifier",
    "b64decode_strict",
    "b64encode",
    "check_key_name",
    "format_note",
    "format_signature_line",
    "format_vkey",
    "key_id",
    "parse_note",
    "parse_signature_line",
    "parse_vkey",
    "verify_note",
]

#: The largest note this module parses (1 MiB).
MAX_NOTE_SIZE = 1 << 20
#: The most signature lines a note may carry.
MAX_SIGNATURES = 100
#: signed-note "Signature types": 0x01, Ed25519 over the note text.
SIG_TYPE_ED25519 = 0x01

_DASH = "\u2014 "


class NoteError(ValueError):
    """A malformed note, signature line or verifier key."""


def b64encode(data: bytes) -> str:
    """Standard, padded base64 (RFC 4648 section 4)."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str) -> bytes:
    """Decode canonical standard padded base64; :class:`NoteError` on anything else (other
    alphabets, missing or extra padding, non-zero padding bits, whitespace)."""
    if not isinstance(text, str) or not text.isascii():
        raise NoteError("not base64")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("not base64") from None
    if b64encode(data) != text:
        raise NoteError("non-canonical base64")
    return data


def check_key_name(name: str) -> None:
    """signed-note "Format": key names are non-empty and contain no Unicode space and no
    ``+``; this module also refuses control characters."""
    if (
        not isinstance(name, str)
        or not name
        or any(c.isspace() or c == "+" or ord(c) < 0x20 or c == "\x7f" for c in name)
    ):
        raise NoteError(f"bad key name {name!r}")


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """signed-note "Signatures": ``SHA-256(key name || 0x0A || type || public key)[:4]``."""
    if not 0 <= sig_type <= 0xFF:
        raise NoteError("a signature type is one byte")
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key name, the 4-byte key ID and the signature bytes that follow
    the key ID."""

    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class Note:
    """A note text (ending in a newline) and its signatures, in order."""

    text: str
    signatures: tuple[NoteSignature, ...]


def format_signature_line(sig: NoteSignature) -> str:
    """``— <key name> base64(key ID || signature)`` with its final newline."""
    check_key_name(sig.name)
    if len(sig.key_id) != 4 or not sig.signature:
        raise NoteError("a signature is a 4-byte key ID and at least one byte")
    return f"{_DASH}{sig.name} {b64encode(sig.key_id + sig.signature)}\n"


def parse_signature_line(line: str) -> NoteSignature:
    """Parse one signature line, without its newline (signed-note "Signatures")."""
    if not line.startswith(_DASH):
        raise NoteError("a signature line starts with an em dash and a space")
    name, sep, sig64 = line[len(_DASH) :].partition(" ")
    if not sep:
        raise NoteError("a signature line is a key name, a space and a signature")
    check_key_name(name)
    raw = b64decode_strict(sig64)
    if len(raw) < 5:
        raise NoteError("a signature is a 4-byte key ID and at least one byte")
    return NoteSignature(name, raw[:4], raw[4:])


def _check_text(text: str) -> None:
    for c in text:
        if ord(c) < 0x20 and c != "\n":
            raise NoteError("control character in a note")


def parse_note(data: bytes) -> Note:
    """signed-note "Format": split a signed note into its text and signatures.

    The text is separated from the signatures by the last blank line. :class:`NoteError`
    on anything malformed or over the limits."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise NoteError("a note is bytes")
    if len(data) > MAX_NOTE_SIZE:
        raise NoteError("note too large")
    try:
        s = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("a note is UTF-8") from None
    _check_text(s)
    split = s.rfind("\n\n")
    if split < 0 or not s.endswith("\n"):
        raise NoteError("a note is text, a blank line and signature lines")
    text, block = s[: split + 1], s[split + 2 :]
    lines = block.split("\n")
    if lines[-1] != "":
        raise NoteError("a signature line ends with a newline")
    lines.pop()
    if not lines:
        raise NoteError("a signed note has at least one signature")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("too many signatures")
    return Note(text, tuple(parse_signature_line(line) for line in lines))


def format_note(note: Note) -> bytes:
    """The signed note: text, blank line, signature lines (signed-note "Format")."""
    if not note.text.endswith("\n"):
        raise NoteError("a note text ends with a newline")
    _check_text(note.text)
    if not note.signatures:
        raise NoteError("a signed note has at least one signature")
    if len(note.signatures) > MAX_SIGNATURES:
        raise NoteError("too many signatures")
    out = (note.text + "\n" + "".join(map(format_signature_line, note.signatures))).encode()
    if len(out) > MAX_NOTE_SIZE:
        raise NoteError("note too large")
    return out


class Verifier(Protocol):
    """A key that checks note signatures (signed-note "Signatures"): it recognises the
    signatures whose name and key ID are its own."""

    @property
    def name(self) -> str: ...
    @property
    def key_id(self) -> bytes: ...
    @property
    def sig_type(self) -> int: ...
    def verify(self, text: str, sig: NoteSignature) -> bool: ...


class Signer(Protocol):
    """A key that signs note texts."""

    @property
    def name(self) -> str: ...
    @property
    def key_id(self) -> bytes: ...
    def sign(self, text: str) -> NoteSignature: ...


def format_vkey(name: str, sig_type: int, public_key: bytes) -> str:
    """signed-note "Verifier keys": ``<name>+hex(key ID)+base64(type || public key)``."""
    check_key_name(name)
    kid = key_id(name, sig_type, public_key)
    return f"{name}+{kid.hex()}+{b64encode(bytes([sig_type]) + public_key)}"


def parse_vkey(vkey: str) -> Verifier:
    """signed-note "Verifier keys": a verifier for types 0x01 (Ed25519), 0x04 (cosignature/v1)
    and 0x06 (subtree/v1 ML-DSA-44). :class:`NoteError` on a malformed key, a key ID that
    does not match, or another type."""
    if not isinstance(vkey, str) or len(vkey) > 4096:
        raise NoteError("bad verifier key")
    parts = vkey.split("+", 2)  # the base64 part may itself contain "+"
    if len(parts) != 3:
        raise NoteError("a verifier key is name+hex+base64")
    name, kid_hex, key64 = parts
    check_key_name(name)
    if len(kid_hex) != 8 or any(c not in "0123456789abcdef" for c in kid_hex):
        raise NoteError("a key ID is 8 lowercase hex digits")
    raw = b64decode_strict(key64)
    if len(raw) < 2:
        raise NoteError("a verifier key has a type and a public key")
    sig_type, public_key = raw[0], raw[1:]
    if key_id(name, sig_type, public_key) != bytes.fromhex(kid_hex):
        raise NoteError("the key ID does not match the key")
    if sig_type == SIG_TYPE_ED25519:
        return Ed25519Verifier(name, public_key)
    from bastion.ledger.cosignature import (  # cosignature imports this module
        SIG_TYPE_COSIGNATURE_V1,
        SIG_TYPE_SUBTREE_V1,
        CosignatureVerifier,
    )

    if sig_type in (SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_SUBTREE_V1):
        return CosignatureVerifier(name, sig_type, public_key)
    raise NoteError(f"unsupported signature type {sig_type:#04x}")


def ed25519_key(name: str, sig_type: int, seed: bytes) -> tuple[SigningKey, bytes, bytes]:
    """An Ed25519 signing key from a 32-byte seed for key name ``name`` and signature type
    ``sig_type``: the key, its public key and its key ID (signed-note "Verifier keys")."""
    check_key_name(name)
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    key = SigningKey(bytes(seed))
    public_key = bytes(key.verify_key)
    return key, public_key, key_id(name, sig_type, public_key)


class Ed25519Signer:
    """signed-note "Ed25519 signatures": signs the note text with an Ed25519 key (type 0x01)."""

    sig_type = SIG_TYPE_ED25519

    def __init__(self, name: str, seed: bytes) -> None:
        self.name = name
        self._key, self.public_key, self.key_id = ed25519_key(name, SIG_TYPE_ED25519, seed)

    def sign(self, text: str) -> NoteSignature:
        return NoteSignature(self.name, self.key_id, self._key.sign(text.encode()).signature)

    def vkey(self) -> str:
        return format_vkey(self.name, SIG_TYPE_ED25519, self.public_key)

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self.name, self.public_key)


class Ed25519Verifier:
    """signed-note "Ed25519 signatures": checks type 0x01 signatures of one key."""

    sig_type = SIG_TYPE_ED25519

    def __init__(self, name: str, public_key: bytes) -> None:
        check_key_name(name)
        if len(public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")
        self.name = name
        self.public_key = bytes(public_key)
        self.key_id = key_id(name, SIG_TYPE_ED25519, self.public_key)
        self._key = VerifyKey(self.public_key)

    def verify(self, text: str, sig: NoteSignature) -> bool:
        if sig.name != self.name or sig.key_id != self.key_id or len(sig.signature) != 64:
            return False
        try:
            self._key.verify(text.encode(), sig.signature)
        except (CryptoError, ValueError, TypeError):
            return False
        return True


def verify_note(note: Note, verifiers: Sequence[Verifier]) -> list[Verifier]:
    """signed-note "Signatures": the verifiers (in the given order) whose signature on the
    note verifies. Signatures from unknown keys (name and key ID not both matching a
    verifier) are ignored. A signature from a known key that fails to verify rejects the
    whole note (the spec's SHOULD; tlog-witness requires it): the answer is then ``[]``.
    Never raises on a bad signature."""
    verified: list[Verifier] = []
    for sig in note.signatures:
        for v in verifiers:
            if v.name != sig.name or v.key_id != sig.key_id:
                continue
            try:
                ok = v.verify(note.text, sig)
            except ValueError:
                ok = False
            if not ok:
                return []
            if not any(v is w for w in verified):
                verified.append(v)
    return [v for v in verifiers if any(v is w for w in verified)]
