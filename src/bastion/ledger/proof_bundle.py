"""Offline-verifiable inclusion proofs (C2SP tlog-proof@v1).

Format (tlog-proof "Format")::

    c2sp.org/tlog-proof@v1
    extra <base64>            (optional, opaque, not authenticated)
    index <decimal>
    <base64 hash>             (0 to 63 lines: the RFC 9162 inclusion proof, leaf's sibling first)

    <the signed checkpoint, verbatim>

The parser rejects anything non-canonical with ``ValueError``. :func:`verify_proof_bundle`
runs the spec's "Verifying a tlog proof" steps 2 to 4 for a leaf hash the caller computed
(step 1). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bastion.ledger.checkpoint import Checkpoint, parse_checkpoint, parse_decimal
from bastion.ledger.merkle import HASH_SIZE, MAX_PROOF_HASHES, verify_inclusion
from bastion.ledger.note import (
    MAX_NOTE_SIZE,
    NoteError,
    Verifier,
    b64decode_strict,
    b64encode,
    parse_note,
    verify_note,
)

__all__ = [
    "HEADER",
    "MAX_EXTRA_SIZE",
    "ProofBundle",
    "format_proof_bundle",
    "parse_proof_bundle",
    "verify_proof_bundle",
]

#: tlog-proof "Format": the first line.
HEADER = "c2sp.org/tlog-proof@v1"
#: The largest extra data this module accepts.
MAX_EXTRA_SIZE = 64 * 1024
_MAX_SIZE = MAX_NOTE_SIZE + 128 * 1024


@dataclass(frozen=True)
class ProofBundle:
    """A tlog-proof: the entry's index, its inclusion proof, the signed checkpoint (the note
    bytes, cosignatures included) and the optional extra data."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None


def format_proof_bundle(b: ProofBundle) -> bytes:
    """The ``.tlog-proof`` text of ``b`` (tlog-proof "Format")."""
    if not 0 <= b.index < 2**64 or len(b.proof) > MAX_PROOF_HASHES:
        raise ValueError("bad proof bundle")
    if any(len(h) != HASH_SIZE for h in b.proof):
        raise ValueError("a proof hash is 32 bytes")
    if b.extra is not None and len(b.extra) > MAX_EXTRA_SIZE:
        raise ValueError("extra data too large")
    parse_checkpoint(parse_note(b.checkpoint).text)
    lines = [HEADER]
    if b.extra is not None:
        lines.append("extra " + b64encode(b.extra))
    lines.append(f"index {b.index}")
    lines.extend(b64encode(h) for h in b.proof)
    return ("\n".join(lines) + "\n\n").encode() + b.checkpoint


def parse_proof_bundle(data: bytes) -> ProofBundle:
    """Parse a ``.tlog-proof``; ``ValueError`` on anything malformed or non-canonical: a
    wrong header, a non-canonical index or base64, a proof line that is not a 32-byte hash,
    more than 63 proof lines, a missing blank line, a checkpoint that is not a signed
    checkpoint note."""
    if not isinstance(data, bytes) or len(data) > _MAX_SIZE:
        raise ValueError("bad proof bundle")
    split = data.find(b"\n\n")
    if split < 0:
        raise ValueError("a proof bundle has a blank line before the checkpoint")
    try:
        head = data[:split].decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("bad proof bundle header") from None
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise ValueError("not a c2sp.org/tlog-proof@v1")
    pos = 1
    extra: bytes | None = None
    try:
        if pos < len(lines) and lines[pos].startswith("extra "):
            extra = b64decode_strict(lines[pos][6:])
            if len(extra) > MAX_EXTRA_SIZE:
                raise ValueError("extra data too large")
            pos += 1
        if pos >= len(lines) or not lines[pos].startswith("index "):
            raise ValueError("missing index line")
        index = parse_decimal(lines[pos][6:])
        proof_lines = lines[pos + 1 :]
        if len(proof_lines) > MAX_PROOF_HASHES:
            raise ValueError("more than 63 proof lines")
        proof = tuple(b64decode_strict(line) for line in proof_lines)
    except NoteError:
        raise ValueError("bad base64 in a proof bundle") from None
    if any(len(h) != HASH_SIZE for h in proof):
        raise ValueError("a proof line is a 32-byte hash")
    checkpoint = data[split + 2 :]
    parse_checkpoint(parse_note(checkpoint).text)
    return ProofBundle(index, proof, checkpoint, extra)


def verify_proof_bundle(
    bundle: ProofBundle, leaf: bytes, origin: str, log_verifiers: Sequence[Verifier]
) -> Checkpoint | None:
    """tlog-proof "Verifying a tlog proof", steps 2 and 4 for the leaf hash ``leaf``: the
    checkpoint's origin is ``origin``, a key of ``log_verifiers`` signed it (and no known
    key's signature fails), and the inclusion proof binds ``leaf`` at ``bundle.index`` to
    its root. Returns the checkpoint, or ``None`` on any failure; never raises. Witness
    cosignatures (step 3) are checked by the caller's policy with
    :func:`bastion.ledger.note.verify_note` on the same note."""
    try:
        note = parse_note(bundle.checkpoint)
        cp = parse_checkpoint(note.text)
    except ValueError:
        return None
    if cp.origin != origin or not verify_note(note, log_verifiers):
        return None
    if not verify_inclusion(leaf, bundle.index, cp.size, bundle.proof, cp.root):
        return None
    return cp
