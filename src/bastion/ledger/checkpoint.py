"""Checkpoints (C2SP tlog-checkpoint "Note text"): the origin, the decimal tree size and the
base64 root hash, one per line, then optional non-empty extension lines.

The parser rejects anything non-canonical with ``ValueError``: a size with a leading zero or
beyond uint64, a root that is not the canonical base64 of 32 bytes, an empty line, a control
character, a text not ending in a newline. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bastion.ledger.merkle import HASH_SIZE, MAX_TREE_SIZE
from bastion.ledger.note import (
    MAX_NOTE_SIZE,
    Note,
    NoteError,
    Signer,
    Verifier,
    b64decode_strict,
    b64encode,
    format_note,
    parse_note,
    verify_note,
)

__all__ = [
    "Checkpoint",
    "format_checkpoint",
    "open_checkpoint",
    "parse_checkpoint",
    "parse_decimal",
    "sign_checkpoint",
]

_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def parse_decimal(text: str, limit: int = MAX_TREE_SIZE) -> int:
    """An ASCII decimal without leading zeros, at most ``limit``; ``ValueError`` else."""
    if not isinstance(text, str) or len(text) > 20 or not _DECIMAL.fullmatch(text):
        raise ValueError(f"not a canonical decimal: {text[:32]!r}")
    value = int(text)
    if value > limit:
        raise ValueError("number out of range")
    return value


@dataclass(frozen=True)
class Checkpoint:
    """tlog-checkpoint: the log's origin, its tree size and root hash, and extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


def _check_line(line: str, what: str) -> None:
    if not line or "\n" in line or any(ord(c) < 0x20 for c in line):
        raise ValueError(f"bad checkpoint {what} line")


def format_checkpoint(cp: Checkpoint) -> str:
    """The checkpoint's note text, ending with a newline (tlog-checkpoint "Note text")."""
    _check_line(cp.origin, "origin")
    if not 0 <= cp.size <= MAX_TREE_SIZE:
        raise ValueError("bad checkpoint size")
    if len(cp.root) != HASH_SIZE:
        raise ValueError("a root hash is 32 bytes")
    for ext in cp.extensions:
        _check_line(ext, "extension")
    return "".join(
        f"{line}\n" for line in (cp.origin, str(cp.size), b64encode(cp.root), *cp.extensions)
    )


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint note text (tlog-checkpoint "Note text"); ``ValueError`` on anything
    not exactly canonical."""
    if not isinstance(text, str) or len(text) > MAX_NOTE_SIZE or not text.endswith("\n"):
        raise ValueError("a checkpoint is newline-terminated text")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise ValueError("a checkpoint has an origin, a size and a root hash")
    for line in lines:
        _check_line(line, "checkpoint")
    size = parse_decimal(lines[1])
    try:
        root = b64decode_strict(lines[2])
    except NoteError:
        raise ValueError("bad checkpoint root hash") from None
    if len(root) != HASH_SIZE:
        raise ValueError("a root hash is 32 bytes")
    return Checkpoint(lines[0], size, root, tuple(lines[3:]))


def sign_checkpoint(cp: Checkpoint, signers: Sequence[Signer]) -> bytes:
    """The checkpoint as a signed note, signed by each of ``signers`` in order."""
    text = format_checkpoint(cp)
    return format_note(Note(text, tuple(s.sign(text) for s in signers)))


def open_checkpoint(
    data: bytes, verifiers: Sequence[Verifier]
) -> tuple[Checkpoint, Note, list[Verifier]]:
    """Parse a signed checkpoint and check its signatures: the checkpoint, the note and the
    verifiers whose signatures verified (``[]`` when none did, or when a known key's
    signature failed). ``ValueError`` only on a malformed note or checkpoint."""
    note = parse_note(data)
    cp = parse_checkpoint(note.text)
    return cp, note, verify_note(note, verifiers)
