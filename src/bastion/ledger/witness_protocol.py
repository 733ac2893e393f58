"""The witness side of C2SP tlog-witness "add-checkpoint", as pure decisions, plus the
request and response formats both sides use.

``decide_add_checkpoint`` answers a request given the log keys the witness trusts and its
latest cosigned state for the origin: :class:`Accept` (cosign the checkpoint text, then
persist it atomically with a compare-and-swap on the old size) or :class:`Refuse` with the
HTTP status the spec requires (400, 403, 404, 409 with the witness's size, 422). A witness
deciding with this never cosigns a smaller tree, a fork of the same size, or a larger tree
without a valid consistency proof from the tree it holds. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bastion.ledger.checkpoint import Checkpoint, parse_checkpoint, parse_decimal
from bastion.ledger.merkle import EMPTY_ROOT, HASH_SIZE, MAX_PROOF_HASHES, verify_consistency
from bastion.ledger.note import (
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    NoteError,
    NoteSignature,
    Verifier,
    b64decode_strict,
    b64encode,
    format_signature_line,
    parse_note,
    parse_signature_line,
    verify_note,
)

__all__ = [
    "MAX_ADD_CHECKPOINT_SIZE",
    "SIZE_CONTENT_TYPE",
    "Accept",
    "AddCheckpoint",
    "Refuse",
    "WitnessState",
    "decide_add_checkpoint",
    "format_add_checkpoint",
    "format_cosignatures",
    "parse_add_checkpoint",
    "parse_conflict_size",
    "parse_cosignatures",
]

#: tlog-witness "add-checkpoint": the 409 answer's content type.
SIZE_CONTENT_TYPE = "text/x.tlog.size"
#: The largest request body: the old size line, 63 proof lines and a note.
MAX_ADD_CHECKPOINT_SIZE = MAX_NOTE_SIZE + 64 * 64


@dataclass(frozen=True)
class AddCheckpoint:
    """An add-checkpoint request: the old size, the consistency proof (0 to 63 hashes) and
    the checkpoint as a signed note."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes


@dataclass(frozen=True)
class WitnessState:
    """The latest checkpoint the witness cosigned for an origin."""

    size: int
    root: bytes


@dataclass(frozen=True)
class Accept:
    """Cosign ``text`` (the checkpoint's note text) and record ``checkpoint`` as the latest."""

    checkpoint: Checkpoint
    text: str


@dataclass(frozen=True)
class Refuse:
    """Answer with this HTTP status, body and content type."""

    status: int
    body: bytes
    content_type: str


def _refuse(status: int, message: str) -> Refuse:
    return Refuse(status, message.encode() + b"\n", "text/plain; charset=utf-8")


def _take_line(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\n", pos)
    if end < 0:
        raise ValueError("a line ends with a newline")
    try:
        return data[pos:end].decode("ascii"), end + 1
    except UnicodeDecodeError:
        raise ValueError("not ASCII") from None


def _parse_proof_line(line: str) -> bytes:
    try:
        h = b64decode_strict(line)
    except NoteError:
        raise ValueError("a proof line is a base64 hash") from None
    if len(h) != HASH_SIZE:
        raise ValueError("a proof line is a 32-byte hash")
    return h


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """tlog-witness "add-checkpoint": ``old <size>``, 0 to 63 base64 proof lines, an empty
    line, a signed checkpoint. ``ValueError`` (answer 400) on anything malformed, including
    a note or a checkpoint that does not parse."""
    if not isinstance(body, bytes) or len(body) > MAX_ADD_CHECKPOINT_SIZE:
        raise ValueError("bad add-checkpoint body")
    line, pos = _take_line(body, 0)
    if not line.startswith("old "):
        raise ValueError("the first line is the old size")
    old_size = parse_decimal(line[4:])
    proof: list[bytes] = []
    while True:
        line, pos = _take_line(body, pos)
        if line == "":
            break
        if len(proof) == MAX_PROOF_HASHES:
            raise ValueError("more than 63 proof lines")
        proof.append(_parse_proof_line(line))
    note = body[pos:]
    parse_checkpoint(parse_note(note).text)
    return AddCheckpoint(old_size, tuple(proof), note)


def format_add_checkpoint(req: AddCheckpoint) -> bytes:
    """The request body for ``req`` (tlog-witness "add-checkpoint")."""
    if not 0 <= req.old_size < 2**64 or len(req.proof) > MAX_PROOF_HASHES:
        raise ValueError("bad add-checkpoint request")
    if any(len(h) != HASH_SIZE for h in req.proof):
        raise ValueError("a proof hash is 32 bytes")
    head = f"old {req.old_size}\n" + "".join(b64encode(h) + "\n" for h in req.proof) + "\n"
    return head.encode() + req.note


def decide_add_checkpoint(
    req: AddCheckpoint,
    log_verifiers: Mapping[str, Sequence[Verifier]],
    state: WitnessState | None,
) -> Accept | Refuse:
    """tlog-witness "add-checkpoint", in the spec's order: 400 on a malformed note or
    checkpoint; 404 when the origin is unknown; 403 when no trusted log key signed it or a
    trusted key's signature fails; 400 when the old size exceeds the checkpoint's; 409 (body
    = the witness's size and a newline, ``text/x.tlog.size``) when the old size is not the
    size of ``state`` (0 without one); 422 when a size-0 checkpoint has another root than
    the empty tree's, when the proof is not empty from size 0 or to the same size, when the
    same size has another root, or when the consistency proof from ``state`` fails."""
    try:
        note = parse_note(req.note)
        cp = parse_checkpoint(note.text)
    except ValueError:
        return _refuse(400, "malformed checkpoint")
    if len(req.proof) > MAX_PROOF_HASHES or not 0 <= req.old_size < 2**64:
        return _refuse(400, "malformed request")
    verifiers = log_verifiers.get(cp.origin)
    if not verifiers:
        return _refuse(404, "unknown log origin")
    if not verify_note(note, verifiers):
        return _refuse(403, "no valid signature from the log")
    if req.old_size > cp.size:
        return _refuse(400, "old size larger than the checkpoint size")
    held = state.size if state is not None else 0
    if req.old_size != held:
        return Refuse(409, f"{held}\n".encode(), SIZE_CONTENT_TYPE)
    if cp.size == 0 and cp.root != EMPTY_ROOT:
        return _refuse(422, "an empty tree has the empty root")
    if req.old_size == 0:
        if req.proof:
            return _refuse(422, "no proof from the empty tree")
        return Accept(cp, note.text)
    assert state is not None  # held == old_size > 0
    if req.old_size == cp.size:
        if req.proof or cp.root != state.root:
            return _refuse(422, "same size, different tree")
        return Accept(cp, note.text)
    if not verify_consistency(req.old_size, cp.size, state.root, cp.root, req.proof):
        return _refuse(422, "consistency proof does not verify")
    return Accept(cp, note.text)


def format_cosignatures(sigs: Sequence[NoteSignature]) -> bytes:
    """A witness's 200 answer: one or more note signature lines."""
    if not 1 <= len(sigs) <= MAX_SIGNATURES:
        raise ValueError("one or more cosignatures")
    return "".join(map(format_signature_line, sigs)).encode()


def parse_cosignatures(body: bytes) -> list[NoteSignature]:
    """The signature lines of a witness's 200 answer (tlog-witness "add-checkpoint");
    ``ValueError`` unless it is one to 100 well-formed lines, each ending in a newline."""
    if not isinstance(body, bytes) or not body or len(body) > MAX_NOTE_SIZE:
        raise ValueError("bad cosignature response")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    if not text.endswith("\n"):
        raise ValueError("a signature line ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise ValueError("too many signature lines")
    return [parse_signature_line(line) for line in lines]


def parse_conflict_size(body: bytes) -> int:
    """The witness's size in a 409 answer (``text/x.tlog.size``): a decimal and a newline."""
    if not isinstance(body, bytes) or not body.endswith(b"\n") or len(body) > 21:
        raise ValueError("bad size body")
    try:
        return parse_decimal(body[:-1].decode("ascii"))
    except UnicodeDecodeError:
        raise ValueError("bad size body") from None
