"""Witnesses both ways (C2SP tlog-witness): this server as a witness for other logs, and its own
log submitting each new checkpoint to the witnesses it is configured with.

As a witness (:class:`WitnessRole`, on when ``ledger_witness_for`` lists log keys): ``POST
<prefix>/add-checkpoint`` is parsed and decided by the pure
:mod:`bastion.ledger.witness_protocol`; the latest checkpoint of each log is persisted with a
compare-and-swap on its size inside one durable transaction *before* the cosignature is
answered, so two concurrent submissions cannot both win (tlog-witness "add-checkpoint": "checking
the old size against the latest checkpoint and persisting the new checkpoint must be performed
atomically"), and a witness never cosigns a smaller tree or a fork of one it cosigned.

As a log (:class:`WitnessClient` and :class:`WitnessTarget`, driven by
:class:`bastion.ledger.service.LedgerService`): one bounded HTTP request per submission, no
redirects followed, a bounded response read; a 409 answer gives the witness's size.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from bastion.ledger.cosignature import Ed25519Cosigner
from bastion.ledger.note import NoteSignature, Verifier, format_signature_line, parse_vkey
from bastion.ledger.witness_protocol import (
    SIZE_CONTENT_TYPE,
    Accept,
    AddCheckpoint,
    WitnessState,
    decide_add_checkpoint,
    format_add_checkpoint,
    parse_add_checkpoint,
    parse_conflict_size,
    parse_cosignatures,
)

if TYPE_CHECKING:
    from bastion.server import HomeServer

log = logging.getLogger(__name__)

#: The fixed suffix of this server's witness name.
WITNESS_SUFFIX = "bastion-witness"
#: Largest add-checkpoint request body: a checkpoint with a few signatures (an ML-DSA-44
#: signature line is about 3.3 KiB) and at most 63 proof lines.
MAX_REQUEST_BYTES = 64 * 1024
#: Largest witness response read.
MAX_RESPONSE_BYTES = 64 * 1024
TEXT_PLAIN = "text/plain; charset=utf-8"


def witness_name(server_name: str) -> str:
    return f"{server_name}/{WITNESS_SUFFIX}"


def signature_line(sig: NoteSignature) -> bytes:
    """A signed-note signature line: ``— <name> <base64(key ID || signature)>\\n``."""
    return format_signature_line(sig).encode()


def load_or_create_witness_key(path: Path) -> bytes:
    """The witness's Ed25519 seed (32 bytes), in a file ``ed25519-witness <base64 seed>``
    created with mode 0600 on first use."""
    if path.exists():
        parts = path.read_text(encoding="ascii").split()
        if len(parts) != 2 or parts[0] != "ed25519-witness":
            raise ValueError(f"{path}: not a witness key file")
        seed = base64.b64decode(parts[1], validate=True)
        if len(seed) != 32:
            raise ValueError(f"{path}: an Ed25519 seed is 32 bytes")
        return seed
    seed = os.urandom(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"ed25519-witness {base64.b64encode(seed).decode('ascii')}\n")
        f.flush()
        os.fsync(f.fileno())
    return seed


def witness_vkey(server_name: str, seed: bytes) -> str:
    """The vkey (cosignature/v1) a log configures to trust this server's witness."""
    return Ed25519Cosigner(witness_name(server_name), seed).vkey()


def origin_hash(origin: str) -> str:
    """tlog-witness "Monitor Retrieval Mechanism": lowercase hex SHA-256 of the origin."""
    return hashlib.sha256(origin.encode()).hexdigest()


@dataclass(frozen=True)
class WitnessAnswer:
    status: int
    content_type: str
    body: bytes


class WitnessRole:
    """This server as a witness for the logs whose keys ``ledger_witness_for`` lists."""

    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.name = witness_name(hs.server_name)
        self.cosigner = Ed25519Cosigner(
            self.name, load_or_create_witness_key(hs.config.ledger_witness_key_path)
        )
        verifiers: dict[str, list[Verifier]] = {}
        for vkey in hs.config.ledger_witness_for:
            v = parse_vkey(vkey)
            verifiers.setdefault(v.name, []).append(v)
        self.log_verifiers: Mapping[str, Sequence[Verifier]] = verifiers
        self.origins_by_hash = {origin_hash(o): o for o in verifiers}

    @property
    def vkey(self) -> str:
        return self.cosigner.vkey()

    async def add_checkpoint(self, body: bytes) -> WitnessAnswer:
        """tlog-witness "add-checkpoint": 400 malformed (or old size above the new size), 404
        unknown origin, 403 no valid signature of the log, 409 (``text/x.tlog.size``) when the
        old size is not the size last cosigned, 422 bad proof or a different root at the same
        size; 200 with the cosignature line once the new state is durably stored."""
        try:
            req = parse_add_checkpoint(body)
        except ValueError as e:
            return WitnessAnswer(400, TEXT_PLAIN, f"malformed add-checkpoint: {e}\n".encode())
        store = self.hs.store
        origin = _origin_of(req)
        if origin not in self.log_verifiers:
            origin = None  # the decision answers 404 (or 400); no state to read
        for _attempt in range(3):
            row = store.witness_log_state(origin) if origin is not None else None
            state = WitnessState(row.size, row.root) if row is not None else None
            decision = decide_add_checkpoint(req, self.log_verifiers, state)
            if not isinstance(decision, Accept):
                if decision.status == 422:
                    # A validly signed checkpoint that is not consistent with what this witness
                    # cosigned: possible evidence of a misbehaving log (tlog-witness allows
                    # keeping it; the operator sees it here).
                    log.warning(
                        "witness: log %s submitted an inconsistent checkpoint (held size %s): %s",
                        origin, row.size if row is not None else 0, decision.body[:200],
                    )  # fmt: skip
                return WitnessAnswer(decision.status, decision.content_type, decision.body)
            cp = decision.checkpoint
            now = self.hs.now_ms()
            line = signature_line(self.cosigner.cosign(decision.text, max(1, now // 1000)))
            expect = row.size if row is not None else None
            stored = req.note + line

            def cas(conn: Any, cp: Any = cp, expect: int | None = expect,
                    stored: bytes = stored, now: int = now) -> bool:  # fmt: skip
                return store.witness_update_log_in(
                    conn, cp.origin, expect, cp.size, cp.root, stored, now
                )

            if await store.transaction(cas, durable=True):
                return WitnessAnswer(200, TEXT_PLAIN, line)
        # Lost the race three times: answer with the size now stored, as a 409 would.
        row = store.witness_log_state(origin) if origin is not None else None
        size = row.size if row is not None else 0
        return WitnessAnswer(409, SIZE_CONTENT_TYPE, f"{size}\n".encode())

    def latest(self, hashed_origin: str) -> bytes | None:
        """The latest cosigned checkpoint of the log whose origin hashes to ``hashed_origin``,
        with the log's signatures and this witness's cosignature; None if never cosigned."""
        origin = self.origins_by_hash.get(hashed_origin)
        if origin is None:
            return None
        row = self.hs.store.witness_log_state(origin)
        return row.note if row is not None else None


def _origin_of(req: AddCheckpoint) -> str | None:
    """The origin line of the submitted note (None when it has none: the decision refuses)."""
    first, sep, _ = req.note.partition(b"\n")
    if not sep:
        return None
    try:
        return first.decode("utf-8")
    except UnicodeDecodeError:
        return None


# -- the log's side ----------------------------------------------------------------------------
@dataclass
class WitnessTarget:
    """A witness this log submits to, and its health."""

    url: str
    vkey: str
    verifier: Verifier
    last_size: int | None = None
    last_cosigned_ts: int | None = None
    last_attempt_ts: int | None = None
    last_error: str | None = None
    wake: asyncio.Event | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, entry: Mapping[str, str]) -> WitnessTarget:
        return cls(url=entry["url"], vkey=entry["vkey"], verifier=parse_vkey(entry["vkey"]))

    @property
    def name(self) -> str:
        return self.verifier.name

    def verified_lines(self, text: str, sigs: Sequence[NoteSignature]) -> list[bytes]:
        """The lines of ``sigs`` that are this witness's valid cosignatures of ``text``
        (tlog-witness: "The client MUST ignore any cosignatures from unknown keys")."""
        v = self.verifier
        return [
            signature_line(s)
            for s in sigs
            if s.name == v.name and s.key_id == v.key_id and v.verify(text, s)
        ]

    def health(self) -> dict[str, Any]:
        return {
            "name": self.name, "url": self.url, "vkey": self.vkey,
            "last_cosigned_size": self.last_size, "last_cosigned_ts": self.last_cosigned_ts,
            "last_attempt_ts": self.last_attempt_ts, "last_error": self.last_error,
        }  # fmt: skip


@dataclass(frozen=True)
class SubmitResult:
    signatures: tuple[NoteSignature, ...] = ()
    conflict_size: int | None = None
    error: str | None = None


class WitnessClient:
    """Submits checkpoints to witnesses over HTTP (one keep-alive session)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def add_checkpoint(
        self, w: WitnessTarget, old_size: int, proof: Sequence[bytes], note: bytes
    ) -> SubmitResult:
        body = format_add_checkpoint(AddCheckpoint(old_size, tuple(proof), note))
        url = w.url.rstrip("/") + "/add-checkpoint"
        try:
            async with asyncio.timeout(self.timeout):
                session = self._get_session()
                async with session.post(
                    url, data=body, allow_redirects=False, headers={"Content-Type": TEXT_PLAIN}
                ) as resp:
                    status = resp.status
                    data = await resp.content.read(MAX_RESPONSE_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            return SubmitResult(error=f"{type(e).__name__}: {e}")
        if len(data) > MAX_RESPONSE_BYTES:
            return SubmitResult(error="the witness's answer is too large")
        if status == 409:
            try:
                return SubmitResult(conflict_size=parse_conflict_size(data))
            except ValueError:
                return SubmitResult(error="409 without a valid size")
        if status != 200:
            text = data[:200].decode("utf-8", "replace").strip()
            return SubmitResult(error=f"HTTP {status}: {text}")
        try:
            return SubmitResult(signatures=tuple(parse_cosignatures(data)))
        except ValueError as e:
            return SubmitResult(error=f"malformed cosignatures: {e}")
