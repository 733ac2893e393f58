"""The running ledger (issue 8): the integrator and checkpointer, witnesses and anchors.

Leaves are appended by the store in the same transaction as what they record
(:mod:`bastion.storage.sqlite.ledger`). This service, on ``hs.ledger``:

* **integrates** them: reads the committed entries past the integrated size, hashes them
  (RFC 9162 section 2.1), extends the tree's right edge (:class:`merkle.TreeBuilder`) and
  stores every completed full tile (C2SP tlog-tiles) with the new tree state in one write. The
  rightmost, partial tile of each level is kept in memory and served from there.
* **checkpoints** it: at most every ``ledger_checkpoint_interval`` seconds while there are new
  leaves it signs a C2SP tlog-checkpoint (origin :func:`checkpoint_origin`) with the server's
  Ed25519 key (and ML-DSA-44 when ``ledger_pq_signing`` is on) and stores it with a *durable*
  commit before anything serves or sends it.
* **never signs two inconsistent checkpoints**: on start it recomputes the root at the latest
  stored checkpoint's size from the stored tiles and entries, and before every signature it
  checks a consistency proof from the previous checkpoint; a file anchor or a witness holding
  a newer checkpoint than the database (the database was rolled back) counts too. On any
  mismatch it halts signing, logs an error, appends a ``ledger.checkpoint_halt`` record and
  reports it in :meth:`LedgerService.status`.
* submits each new checkpoint to the configured **witnesses** (C2SP tlog-witness, see
  :mod:`bastion.ledger.witnessing`) and runs the **anchors** (:mod:`bastion.ledger.anchors`).
  Network work runs in tasks of its own, bounded in time, never under a lock: a slow witness
  never delays signing.

Across a signing-key rotation the tree continues: same origin, new key ID; ``keys`` lists every
key the log has signed with.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bastion.core.base64 import decode_base64
from bastion.ledger import anchors as anchors_mod
from bastion.ledger import merkle, tiles
from bastion.ledger.checkpoint import Checkpoint, format_checkpoint, parse_checkpoint
from bastion.ledger.cosignature import MLDSA44Cosigner
from bastion.ledger.note import (
    Ed25519Signer,
    Note,
    NoteSignature,
    format_note,
    format_vkey,
    parse_note,
)
from bastion.ledger.records import ACTION_LEDGER_CHECKPOINT_HALT, action_record
from bastion.ledger.witnessing import WitnessClient, WitnessTarget
from bastion.services.lifecycle import BackgroundService
from bastion.storage.interface import CheckpointRow

if TYPE_CHECKING:
    from bastion.server import HomeServer

log = logging.getLogger(__name__)

#: The fixed suffix of the log's origin line (and key name).
ORIGIN_SUFFIX = "bastion-ledger"
#: Entries integrated per step (the event loop is yielded between steps).
INTEGRATE_BATCH = 2048
#: Signed-note signature types (C2SP signed-note): Ed25519, and the ML-DSA-44 subtree/v1
#: cosignature (C2SP tlog-cosignature) the log adds over its own tree when post-quantum signing
#: is on.
SIG_ED25519 = 0x01
HASH_SIZE = 32
#: Seconds before the end of an interval at which a checkpoint starts (see ``_run``).
SIGN_MARGIN = 0.1
#: Seconds a witness submission may take, and the wait before a failed one is retried.
WITNESS_TIMEOUT = 10.0
WITNESS_RETRY = 5.0
#: Default seconds between Ethereum anchor transactions.
ETHEREUM_INTERVAL = 3600.0


def checkpoint_origin(server_name: str) -> str:
    """The origin line of this server's checkpoints (C2SP tlog-checkpoint: a schema-less URL)."""
    return f"{server_name}/{ORIGIN_SUFFIX}"


class LedgerHalted(Exception):
    """Signing stopped: the log could otherwise sign a checkpoint inconsistent with one it
    already signed."""


def load_or_create_pq_key(path: Path) -> bytes:
    """The ML-DSA-44 private key seed (32 bytes), in a file ``ml-dsa-44 <base64 seed>`` created
    with mode 0600 on first use."""
    if path.exists():
        parts = path.read_text(encoding="ascii").split()
        if len(parts) != 2 or parts[0] != "ml-dsa-44":
            raise ValueError(f"{path}: not an ML-DSA-44 key file")
        seed = _unb64(parts[1])
        if len(seed) != 32:
            raise ValueError(f"{path}: an ML-DSA-44 seed is 32 bytes")
        return seed
    from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

    seed = MLDSA44PrivateKey.generate().private_bytes_raw()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"ml-dsa-44 {_b64(seed)}\n")
        f.flush()
        os.fsync(f.fileno())
    return seed


@dataclass
class AnchorHealth:
    name: str
    interval: float
    last_size: int | None = None
    last_ts: int | None = None
    last_error: str | None = None


@dataclass
class _Anchoring:
    anchor: Any  # anchors.Anchor
    health: AnchorHealth
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class LedgerService(BackgroundService):
    """The integrator, checkpointer, witness submitter and anchor runner (see the module)."""

    background_name = "ledger"

    def __init__(self, hs: HomeServer) -> None:
        super().__init__()
        self.hs = hs
        self.store = hs.store
        config = hs.config
        self.origin = checkpoint_origin(hs.server_name)
        self.interval = float(config.ledger_checkpoint_interval)
        self._signer = Ed25519Signer(self.origin, bytes(hs.signing_key.key))
        self._pq: MLDSA44Cosigner | None = None
        #: The ML-DSA-44 vkey of a key this log signed with before post-quantum signing was
        #: turned off (still listed, so those signatures stay verifiable).
        self._pq_retired: str | None = None
        if config.ledger_pq_signing:
            self._pq = MLDSA44Cosigner(
                self.origin, load_or_create_pq_key(config.ledger_pq_key_path)
            )
        elif config.ledger_pq_key_path.exists():
            seed = load_or_create_pq_key(config.ledger_pq_key_path)
            self._pq_retired = MLDSA44Cosigner(self.origin, seed).vkey()
        self.builder = merkle.TreeBuilder()
        #: Per tile level, the hashes of the rightmost (not yet full) tile.
        self._pending: list[list[bytes]] = [[]]
        #: The reason signing halted, or None.
        self.halted: str | None = None
        self.latest: CheckpointRow | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listening = False
        self._last_sign = 0.0
        self._margin = min(SIGN_MARGIN, self.interval / 10)
        self._client = WitnessClient(timeout=WITNESS_TIMEOUT)
        self.witnesses = [WitnessTarget.from_config(w) for w in config.ledger_witnesses]
        self._anchoring: list[_Anchoring] = []
        anchor_path = config.ledger_anchor_path
        self.file_anchor_path = anchor_path
        if anchor_path is not None:
            anchor = anchors_mod.FileAnchor(anchor_path, clock=hs.now_ms)
            health = AnchorHealth("file", float(config.ledger_anchor_interval))
            self._anchoring.append(_Anchoring(anchor, health))
        self._ethereum_config = dict(config.ledger_ethereum)

    # -- the keys ---------------------------------------------------------------------------
    @property
    def vkey(self) -> str:
        """The verifier key of the current Ed25519 signing key (C2SP signed-note)."""
        return self._signer.vkey()

    @property
    def pq_vkey(self) -> str | None:
        return self._pq.vkey() if self._pq is not None else None

    def all_vkeys(self) -> list[dict[str, Any]]:
        """Every key the log signs or has signed with: the current Ed25519 key, the server's
        retired signing keys (key rotation keeps the tree, with a new key ID), and the
        ML-DSA-44 key when post-quantum signing is on."""
        keys: list[dict[str, Any]] = [
            {"vkey": self.vkey, "key_id": self.hs.signing_key.key_id, "current": True}
        ]
        for key_id, b64, expired_ts in self.store.get_local_old_signing_keys():
            try:
                public = decode_base64(b64)
            except Exception:  # noqa: BLE001 - a malformed stored key is skipped
                continue
            vkey = format_vkey(self.origin, SIG_ED25519, public)
            if vkey != self.vkey:
                keys.append({"vkey": vkey, "key_id": key_id, "current": False,
                             "expired_ts": expired_ts})  # fmt: skip
        if self._pq is not None:
            keys.append({"vkey": self._pq.vkey(), "key_id": "ml-dsa-44", "current": True})
        elif self._pq_retired is not None:
            keys.append({"vkey": self._pq_retired, "key_id": "ml-dsa-44", "current": False})
        return keys

    # -- tiles --------------------------------------------------------------------------------
    @property
    def integrated_size(self) -> int:
        return self.builder.size

    def read_tile(self, level: int, index: int, width: int) -> bytes:
        """The tile ``level``/``index`` holding at least ``width`` hashes (a full stored tile, or
        the rightmost partial one); ValueError when the integrated tree has no such tile."""
        if not 1 <= width <= tiles.TILE_WIDTH:
            raise ValueError("bad tile width")
        full = self.store.ledger_tile(level, index)
        if full is not None:
            return full
        pending = self._pending[level] if level < len(self._pending) else []
        current = self.builder.size >> (tiles.TILE_HEIGHT * level)
        if index != current // tiles.TILE_WIDTH or width > len(pending):
            raise ValueError(f"no tile {level}/{index} of width {width}")
        return b"".join(pending)

    def tile(self, level: int, index: int, width: int | None) -> bytes | None:
        """A tile exactly as tlog-tiles serves it (``width`` None: the full tile), or None when
        it is beyond the integrated tree."""
        if width is None:
            return self.store.ledger_tile(level, index)
        try:
            data = self.read_tile(level, index, width)
        except ValueError:
            return None
        return data[: width * HASH_SIZE]

    def node_reader(self) -> tiles.TileNodeReader:
        return tiles.TileNodeReader(self.read_tile)

    def entry_bundle(self, index: int, width: int | None) -> bytes | None:
        """The entry bundle ``index`` (tlog-tiles), or None beyond the integrated tree."""
        start = index * tiles.TILE_WIDTH
        end = start + (width if width is not None else tiles.TILE_WIDTH)
        if end > self.builder.size:
            return None
        return tiles.encode_entry_bundle(self.store.ledger_entries(start, end))

    # -- proofs -------------------------------------------------------------------------------
    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(index, size, self.node_reader())

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        return merkle.consistency_proof(old, new, self.node_reader())

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        super().start()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        for a in self._anchoring:
            a.wake = asyncio.Event()
        for w in self.witnesses:
            # The latest stored checkpoint goes to every witness once at start: a witness
            # holding a newer one shows that the database was rolled back.
            w.wake = asyncio.Event()
            w.last_size = None
        if self._ethereum_config and not any(a.health.name == "ethereum" for a in self._anchoring):
            self._add_ethereum()
        self._load_state()
        anchored = self.store.ledger_anchors(1000)
        for a in self._anchoring:
            a.health.last_size = next((r.size for r in anchored if r.anchor == a.health.name), None)
        if not self._listening:
            self.store.add_listener(self._on_commit)
            self._listening = True
        self.spawn(self._run(), cancel_on_stop=True)
        if self.halted is None:
            self.spawn(self.check_stored_tiles(self.builder.size), cancel_on_stop=True)
        for w in self.witnesses:
            self.spawn(self._witness_loop(w), cancel_on_stop=True)
        for a in self._anchoring:
            self.spawn(self._anchor_loop(a), cancel_on_stop=True)

    async def close(self) -> None:
        """Release the witness client (after the service drained)."""
        await self._client.close()

    def _add_ethereum(self) -> None:
        eth = self._ethereum_config
        interval = float(eth.get("interval", ETHEREUM_INTERVAL))
        try:
            anchor = make_ethereum_anchor(eth)
        except Exception as e:  # noqa: BLE001 - reported in status, never fatal
            log.error("the Ethereum anchor is not available: %s", e)
            health = AnchorHealth("ethereum", interval, last_error=str(e))
            self._anchoring.append(_Anchoring(_Unavailable(str(e)), health))
            return
        self._anchoring.append(_Anchoring(anchor, AnchorHealth("ethereum", interval)))

    def _on_commit(self, _pos: int, _keys: set[str]) -> None:
        """On the writer thread after each commit: wake the integrator."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or self.stopped or wake.is_set():
            return
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the loop closed
            pass

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- start: restore and check -------------------------------------------------------------
    def _load_state(self) -> None:
        """Restore the tree (right edge and partial tiles) and check it against the latest
        stored checkpoint and the file anchor; halt on any mismatch."""
        self.latest = self.store.ledger_latest_checkpoint()
        state = self.store.ledger_tree_state()
        try:
            if state is None:
                self.builder = merkle.TreeBuilder()
                self._pending = [[]]
            else:
                size, edge = state
                self.builder = merkle.TreeBuilder(size, edge)
                self._pending = self._restore_pending(size)
            self._check_start()
        except LedgerHalted as e:
            self._halt(str(e))
        except ValueError as e:
            self._halt(f"the stored tree cannot be read: {e}")

    def _restore_pending(self, size: int) -> list[list[bytes]]:
        """The hashes of the rightmost partial tile of each level of a tree of ``size``: level
        0 from the entries, level l > 0 from the roots of the full tiles of level l - 1."""
        base = size - size % tiles.TILE_WIDTH
        entries = self.store.ledger_entries(base, size)
        if len(entries) != size - base:
            raise LedgerHalted(f"leaves {base}..{size} are missing from the database")
        pending = [[merkle.leaf_hash(e) for e in entries]]
        level = 1
        while size >> (tiles.TILE_HEIGHT * level):
            n = size >> (tiles.TILE_HEIGHT * level)
            first = n - n % tiles.TILE_WIDTH
            hashes = []
            for j in range(first, n):
                tile = self.store.ledger_tile(level - 1, j)
                if tile is None:
                    raise LedgerHalted(f"the full tile {level - 1}/{j} is missing")
                hashes.append(merkle.root(tiles.split_tile(tile)))
            pending.append(hashes)
            level += 1
        return pending

    def _check_start(self) -> None:
        size = self.builder.size
        reader = self.node_reader()
        if size and merkle.tree_root(size, reader) != self.builder.root():
            raise LedgerHalted(
                "the stored leaves, tiles and tree state do not agree (changed after the fact)"
            )
        if self.store.ledger_size() < size:
            raise LedgerHalted(
                f"the database holds {self.store.ledger_size()} leaves, fewer than the "
                f"{size} already integrated"
            )
        cp = self.latest
        if cp is not None:
            if cp.size > size:
                raise LedgerHalted(
                    f"the latest checkpoint covers {cp.size} leaves but only {size} are integrated"
                )
            if merkle.tree_root(cp.size, reader) != cp.root:
                raise LedgerHalted(
                    f"the tree recomputed at size {cp.size} does not match the signed checkpoint"
                )
        self._check_file_anchor()

    def _check_file_anchor(self) -> None:
        """A file anchor line for a bigger checkpoint than the database has means the database
        was rolled back; one for a size the tree has must have the same root."""
        path = self.file_anchor_path
        if path is None or not path.exists():
            return
        try:
            receipts = anchors_mod.read_file_anchor(path)
        except anchors_mod.TornLineError as e:
            receipts = e.entries
        except (OSError, ValueError) as e:
            log.error("the file anchor %s cannot be checked: %s", path, e)
            return
        latest = self.latest.size if self.latest is not None else 0
        for r in receipts:
            try:
                origin = parse_checkpoint(parse_note(_unb64(_entry_note(r))).text).origin
            except (ValueError, KeyError, TypeError):
                continue
            if origin != self.origin:
                continue
            size, root = r["size"], _unb64(r["root"])
            if size > latest:
                raise LedgerHalted(
                    f"the file anchor holds a checkpoint of size {size}, newer than the "
                    f"database's latest ({latest}): the database was rolled back"
                )
            if size and merkle.tree_root(size, self.node_reader()) != root:
                raise LedgerHalted(f"the file anchor's checkpoint of size {size} has another root")

    async def check_stored_tiles(self, size: int) -> bool:
        """Check every full tile of a tree of ``size`` leaves against what it summarizes: a
        level-0 tile against the hashes of its entries, a higher one against the roots of the
        tiles below. With the start check (the stored tiles give the signed root) this covers
        every stored leaf: a changed, inserted or deleted leaf halts signing. It runs in the
        background, a slice at a time, while the log goes on signing (consistency with the
        signed checkpoints never depends on it: the tiles do not change)."""
        level = 0
        while size >> (tiles.TILE_HEIGHT * (level + 1)):
            count = size >> (tiles.TILE_HEIGHT * (level + 1))
            for index in range(count):
                if not self._tile_matches(level, index):
                    self._halt(
                        f"the stored tile {level}/{index} does not match the leaves it covers "
                        "(changed after the fact)"
                    )
                    return False
                if index % 16 == 15:
                    await asyncio.sleep(0)
                if self.halted is not None:
                    return False
            level += 1
        return True

    def _tile_matches(self, level: int, index: int) -> bool:
        try:
            stored = self.store.ledger_tile(level, index)
            if stored is None:
                return False
            first = index * tiles.TILE_WIDTH
            if level == 0:
                entries = self.store.ledger_entries(first, first + tiles.TILE_WIDTH)
                hashes = [merkle.leaf_hash(e) for e in entries]
            else:
                hashes = []
                for j in range(first, first + tiles.TILE_WIDTH):
                    below = self.store.ledger_tile(level - 1, j)
                    if below is None:
                        return False
                    hashes.append(merkle.root(tiles.split_tile(below)))
            return tiles.split_tile(stored) == hashes
        except ValueError:
            return False

    def _halt(self, reason: str) -> None:
        if self.halted is not None:
            return
        self.halted = reason
        log.error("ledger: checkpoint signing halted: %s", reason)
        if self._loop is not None and not self.stopped:
            self.spawn(self._record_halt(reason))

    async def _record_halt(self, reason: str) -> None:
        record = action_record(
            action=ACTION_LEDGER_CHECKPOINT_HALT, actor="server", ts=self.hs.now_ms(),
            target=self.origin, reason=reason, origin=self.hs.server_name,
        )  # fmt: skip
        await self.store.transaction(lambda conn: self.store.ledger_append_in(conn, record))

    # -- the integrator and checkpointer ------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except TimeoutError:
                pass  # leaves written by another process (an admin command) wake no one
            self._wake.clear()
            if self.halted is not None:
                continue
            try:
                latest = self.latest.size if self.latest is not None else 0
                if self.store.ledger_size() <= latest:
                    continue
                # Integration and signing run once per interval, not once per commit: under
                # load the integrator then adds one write a second, not one per commit. The
                # next signature starts one interval after the previous one started, less the
                # time integrating and the durable commit take (SIGN_MARGIN): a leaf is then
                # covered by a stored checkpoint within one interval.
                delay = self._last_sign + self.interval - self._margin - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self.integrate()
                self._last_sign = loop.time()
                await self.sign()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ledger: integrating or signing failed; retrying")
                await asyncio.sleep(min(self.interval, 1.0))
                self._wake.set()

    async def integrate(self) -> int:
        """Integrate every committed leaf past the integrated size; returns how many."""
        done = 0
        while self.halted is None:
            n = await self._integrate_step()
            if not n:
                break
            done += n
            await asyncio.sleep(0)
        return done

    async def _integrate_step(self) -> int:
        start = self.builder.size
        end = min(self.store.ledger_size(), start + INTEGRATE_BATCH)
        if end <= start:
            return 0
        entries = self.store.ledger_entries(start, end)
        if len(entries) != end - start:
            raise RuntimeError(f"expected {end - start} leaves from {start}, got {len(entries)}")
        builder = merkle.TreeBuilder(self.builder.size, self.builder.edge)
        pending = [list(p) for p in self._pending]
        full: list[tuple[int, int, bytes]] = []
        for entry in entries:
            for level, k, h in builder.append(merkle.leaf_hash(entry)):
                tile_level, rest = divmod(level, tiles.TILE_HEIGHT)
                if rest:
                    continue
                while len(pending) <= tile_level:
                    pending.append([])
                pending[tile_level].append(h)
                if len(pending[tile_level]) == tiles.TILE_WIDTH:
                    full.append((tile_level, k // tiles.TILE_WIDTH, b"".join(pending[tile_level])))
                    pending[tile_level] = []
        size, edge = builder.size, list(builder.edge)

        def write(conn: Any) -> None:
            if full:
                self.store.ledger_store_tiles_in(conn, full)
            self.store.ledger_save_tree_state_in(conn, size, edge)

        await self.store.transaction(write)
        self.builder, self._pending = builder, pending
        return end - start

    async def sign(self) -> CheckpointRow | None:
        """Sign and durably store a checkpoint of the integrated tree, when it is bigger than
        the latest one and consistent with it (otherwise halt)."""
        if self.halted is not None:
            return None
        size, root = self.builder.size, self.builder.root()
        prev = self.latest
        if prev is not None:
            if size <= prev.size:
                return None
            proof = self.consistency_proof(prev.size, size)
            if not merkle.verify_consistency(prev.size, size, prev.root, root, proof):
                self._halt(
                    f"the tree of size {size} is not consistent with the signed checkpoint of "
                    f"size {prev.size}"
                )
                return None
        elif size == 0:
            return None
        text = format_checkpoint(Checkpoint(self.origin, size, root))
        now_ms = self.hs.now_ms()
        sigs: list[NoteSignature] = [self._signer.sign(text)]
        if self._pq is not None:
            sigs.append(self._pq.cosign(text, now_ms // 1000))
        note = format_note(Note(text, tuple(sigs)))
        await self.store.ledger_add_checkpoint(size, root, note, now_ms)
        self.latest = self.store.ledger_latest_checkpoint()
        for w in self.witnesses:
            if w.wake is not None:
                w.wake.set()
        for a in self._anchoring:
            a.wake.set()
        return self.latest

    # -- witnesses ----------------------------------------------------------------------------
    async def _witness_loop(self, w: WitnessTarget) -> None:
        assert w.wake is not None
        w.wake.set()  # submit the latest checkpoint once at start
        while True:
            timeout = WITNESS_RETRY if w.last_error is not None else None
            try:
                await asyncio.wait_for(w.wake.wait(), timeout=timeout)
            except TimeoutError:
                pass
            w.wake.clear()
            if self.halted is not None:
                continue
            cp = self.latest
            if cp is None or (w.last_size is not None and w.last_size >= cp.size):
                continue
            await self.submit_to_witness(w, cp)

    async def submit_to_witness(self, w: WitnessTarget, cp: CheckpointRow) -> bool:
        """Submit ``cp`` to ``w`` (tlog-witness add-checkpoint) with a consistency proof from
        the size the witness is known to hold; on 409 retry once from the size it answers.
        Stores the verified cosignature line. Returns whether ``w`` cosigned."""
        known = self.store.ledger_witness_size(w.vkey) or 0
        w.last_attempt_ts = self.hs.now_ms()
        for _attempt in range(2):
            if known > cp.size:
                self._halt(
                    f"witness {w.name} holds a checkpoint of size {known}, newer than the "
                    f"database's latest ({cp.size}): the database was rolled back"
                )
                w.last_error = f"holds size {known}, newer than ours"
                return False
            proof = self.consistency_proof(known, cp.size) if 0 < known < cp.size else []
            result = await self._client.add_checkpoint(w, known, proof, cp.note)
            if result.conflict_size is not None:
                known = result.conflict_size
                await self.store.ledger_set_witness_size(w.vkey, known)
                continue
            if result.error is not None:
                w.last_error = result.error
                log.warning("ledger: witness %s: %s", w.name, result.error)
                return False
            text = parse_note(cp.note).text
            lines = w.verified_lines(text, result.signatures)
            if not lines:
                w.last_error = "the witness answered no valid cosignature"
                return False
            now = self.hs.now_ms()
            for line in lines:
                await self.store.ledger_add_cosignature(cp.size, w.vkey, line, now)
            await self.store.ledger_set_witness_size(w.vkey, cp.size)
            w.last_size, w.last_cosigned_ts, w.last_error = cp.size, now, None
            return True
        w.last_error = "the witness's size kept changing"
        return False

    # -- anchors ------------------------------------------------------------------------------
    async def _anchor_loop(self, a: _Anchoring) -> None:
        """Anchor each newer checkpoint, at most once per the anchor's interval."""
        while True:
            cp = self.latest
            last = a.health.last_size
            if cp is not None and self.halted is None and (last is None or cp.size > last):
                await self.anchor_now(a, cp)
                await asyncio.sleep(a.health.interval)
                continue
            a.wake.clear()
            await a.wake.wait()  # set by every new checkpoint

    async def anchor_now(self, a: _Anchoring, cp: CheckpointRow) -> dict | None:
        try:
            receipt = await asyncio.wait_for(a.anchor.publish(cp.note, cp.size, cp.root), 180)
        except Exception as e:  # noqa: BLE001 - any anchor failure is reported, never fatal
            a.health.last_error = f"{type(e).__name__}: {e}"
            log.warning("ledger: the %s anchor failed: %s", a.health.name, e)
            return None
        now = self.hs.now_ms()
        await self.store.ledger_add_anchor(a.health.name, cp.size, cp.root, receipt, now)
        a.health.last_size, a.health.last_ts, a.health.last_error = cp.size, now, None
        return receipt

    async def anchor_all(self) -> None:
        """Run every anchor now on the latest checkpoint (tests, and the CLI)."""
        cp = self.latest
        if cp is None:
            return
        for a in self._anchoring:
            await self.anchor_now(a, cp)

    # -- status -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What ``bastion ledger status`` shows: sizes, the last checkpoint, halt, witness and
        anchor health."""
        now = self.hs.now_ms()
        cp = self.latest
        return {
            "origin": self.origin,
            "size": self.store.ledger_size(),
            "integrated_size": self.builder.size,
            "checkpoint": None if cp is None else {
                "size": cp.size, "ts": cp.ts, "age_ms": max(0, now - cp.ts),
                "root": _b64(cp.root),
            },
            "halted": self.halted is not None,
            "halt_reason": self.halted,
            "witnesses": [w.health() for w in self.witnesses],
            "anchors": [vars(a.health).copy() for a in self._anchoring],
        }  # fmt: skip


def _b64(data: bytes) -> str:
    """Standard, padded base64 (the C2SP formats' encoding)."""
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict standard base64 (ValueError otherwise)."""
    return base64.b64decode(text.encode("ascii"), validate=True)


def _entry_note(receipt: dict) -> str:
    """The base64 signed note inside a file anchor receipt's line."""
    line = orjson.loads(receipt["entry"])
    note = line["note"]
    if not isinstance(note, str):
        raise TypeError("note")
    return note


class _Unavailable:
    """An anchor that could not be configured: every publish fails with the reason."""

    name = "ethereum"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def publish(self, checkpoint: bytes, size: int, root: bytes) -> dict:
        raise RuntimeError(self.reason)


def make_ethereum_anchor(eth: dict) -> Any:
    """The Ethereum anchor from the ``ledger_ethereum`` table (web3 is an optional extra)."""
    rpc = eth["rpc"]
    if rpc == "eth-tester":
        web3_mod = anchors_mod.load_web3()
        tester = importlib.import_module("web3.providers.eth_tester")
        w3 = web3_mod.Web3(tester.EthereumTesterProvider())
        account = eth.get("account") or w3.eth.accounts[0]
        return anchors_mod.EthereumAnchor(w3, account)
    if "key_file" in eth:
        key = Path(eth["key_file"]).read_text(encoding="ascii").strip()
        return anchors_mod.make_ethereum_anchor(rpc, private_key=key)
    return anchors_mod.make_ethereum_anchor(rpc, account=eth["account"])
