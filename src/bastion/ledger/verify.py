"""``bastion ledger verify --data-dir DIR``: check a Bastion database against its own ledger.

What it checks (issue 8, "Tools"), reading the database read-only
(:func:`bastion.storage.sqlite.ledger_audit.open_readonly_store`: no migration, no write):

1. **The leaves.** Every ``ledger_entries`` row: its index sequence (a gap is a deleted leaf,
   an index out of order is a reordered one), its copied columns (kind, event ID, subject,
   action, time) against its entry, and its leaf hash (RFC 9162 2.1, ``SHA-256(0x00 ||
   entry)``).
2. **The tree.** The whole Merkle tree is recomputed from the leaf hashes; every stored full
   tile (tlog-tiles) is compared with the recomputation, and a differing level-0 tile names the
   leaves that differ (changed, deleted with the later ones shifted, inserted, or swapped); the
   integrator's saved right edge is compared too.
3. **The checkpoints.** Every stored checkpoint (tlog-checkpoint signed note): its signature by
   the log's key (the server's signing key from the data directory, its retired keys, and the
   keys of ``signing_key.rotate`` records; key name = the origin ``<server>/bastion-ledger``),
   its size and root against the recomputed tree, and the consistency (RFC 9162 2.1.4) between
   each consecutive pair.
4. **The events.** Every ``events`` row against its latest leaf (every column the leaf
   records), its JSON against its columns, its event ID against the reference hash of the JSON
   (room versions 3 and later; the recorded reference hash in versions 1 and 2), and its
   content hash (S-S API "Calculating the content hash") unless the row was redacted by a
   redaction that is itself in the ledger, or an erasure or retention record
   (``compliance.erase``, ``compliance.purge``) lists it (or it is a remote event stored in
   redacted form, as a failed content hash requires). Leaves whose event has no row are
   *deleted* events (unless a ``room.purge`` record of an admin's room deletion lists them),
   rows without a leaf *inserted* ones.
5. **Rows derived from events:** ``current_state``, ``current_membership`` and
   ``membership_events`` against the events they name.
6. **Keys** (key transparency): every stored device key and cross-signing key against the
   latest ``device_keys.upload`` / ``cross_signing.upload`` record (SHA-256 of the key's
   canonical JSON), and recorded keys that are gone without a recorded deletion.
7. **Rollback and forks**, given a checkpoint saved elsewhere (``--checkpoint-pin``: from a
   witness, or an earlier run) or a copy of the file anchor (``--anchor-file``): a database
   whose tree is smaller than a pinned or anchored checkpoint was *rolled back*; one whose tree
   has a different root at that size has *forked*.

Each finding names the table, the row, the leaf index and (for events) the event ID, and its
kind: changed, deleted, inserted, reordered, rolled_back, forked or invalid.

Speed: the per-event checks (JSON parsing and two hashes per event) run in worker processes
beside the leaf, tree and checkpoint checks of the main process, over batched plain-tuple
reads; a million leaves verify in well under half a minute on two cores.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson

from bastion.core.base64 import decode_base64, encode_base64
from bastion.core.canonical_json import canonical_json
from bastion.core.events import (
    check_content_hash,
    compute_event_id,
    compute_reference_hash,
    redact,
)
from bastion.core.room_versions import KNOWN_ROOM_VERSIONS, EventIdFormat, RoomVersion
from bastion.errors import MatrixError
from bastion.ledger.checkpoint import Checkpoint, parse_checkpoint
from bastion.ledger.merkle import (
    EMPTY_ROOT,
    MemoryNodeReader,
    consistency_proof,
    leaf_hash,
    tree_root,
    verify_consistency,
)
from bastion.ledger.note import (
    Ed25519Verifier,
    Note,
    NoteError,
    Verifier,
    parse_note,
    verify_note,
)
from bastion.ledger.records import (
    ACTION_ACCOUNT_DEACTIVATE,
    ACTION_COMPLIANCE_ERASURE,
    ACTION_CROSS_SIGNING_UPLOAD,
    ACTION_DEVICE_DELETE,
    ACTION_DEVICE_KEYS_UPLOAD,
    ACTION_ROOM_PURGE,
    ACTION_SIGNING_KEY_ROTATE,
    STRIPPING_ACTIONS,
    decision_of,
)
from bastion.ledger.service import checkpoint_origin
from bastion.ledger.tiles import TILE_HEIGHT, TILE_WIDTH

# Finding kinds.
CHANGED = "changed"
DELETED = "deleted"
INSERTED = "inserted"
REORDERED = "reordered"
ROLLED_BACK = "rolled_back"
FORKED = "forked"
INVALID = "invalid"
LEAF_GONE = "leaf_gone"  # internal: an events row names a leaf that is not there

#: The schema version that brought the ledger (migration 4).
LEDGER_SCHEMA_VERSION = 4

#: Events rows checked in this process below this count; above it, in worker processes.
POOL_THRESHOLD = 100_000

OUTLIER = 2  # events.soft_failed of an outlier (storage/sqlite/federation_inbound.py)


@dataclass(frozen=True)
class Finding:
    """One thing that is not as the ledger says: ``kind`` (see the module docstring), the
    ``table`` and row ``key`` it is about, the ``leaf`` index and ``event_id`` when known."""

    kind: str
    table: str
    key: str | None
    message: str
    leaf: int | None = None
    event_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "table": self.table, "key": self.key, "leaf": self.leaf,
            "event_id": self.event_id, "message": self.message,
        }  # fmt: skip

    def line(self) -> str:
        where = self.table + (f" [{self.key}]" if self.key is not None else "")
        if self.leaf is not None:
            where += f" leaf {self.leaf}"
        if self.event_id is not None and self.event_id != self.key:
            where += f" event {self.event_id}"
        return f"{self.kind.upper()}: {where}: {self.message}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, *findings: Finding) -> None:
        self.findings.extend(findings)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "findings": [f.as_json() for f in self.findings], "stats": self.stats,
        }  # fmt: skip


class UsageError(Exception):
    """Bad input to the verifier (exit code 2): a missing directory, no database, a bad pin."""


# -- keys ------------------------------------------------------------------------------------


def read_signing_public_key(path: Path) -> tuple[str, bytes] | None:
    """(key version, Ed25519 public key) of the server's signing key file (``ed25519 <version>
    <seed>``), or None when there is none. The seed is only used to derive the public key."""
    from nacl.signing import SigningKey

    try:
        parts = path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(parts) < 3 or parts[0] != "ed25519":
        return None
    try:
        seed = decode_base64(parts[2])
    except MatrixError:
        return None
    if len(seed) != 32:
        return None
    return parts[1], bytes(SigningKey(seed).verify_key)


def _public_keys_in(details: Any) -> list[bytes]:
    """Ed25519 public keys named by a ``signing_key.rotate`` record's details."""
    out: list[bytes] = []
    if not isinstance(details, Mapping):
        return out
    for name in ("new_public_key", "old_public_key", "public_key", "verify_key"):
        value = details.get(name)
        if isinstance(value, str):
            try:
                raw = decode_base64(value)
            except MatrixError:
                continue
            if len(raw) == 32:
                out.append(raw)
    return out


#: The ML-DSA-44 key of post-quantum checkpoint signing, in the data directory
#: (``ml-dsa-44 <base64 seed>``, ledger service).
PQ_KEY_FILE = "ledger-mldsa44.key"


def read_pq_verifier(path: Path, origin: str) -> Verifier | None:
    """The verifier of the log's ML-DSA-44 subtree/v1 signatures, when the key file exists."""
    from bastion.ledger.cosignature import MLDSA44Cosigner
    from bastion.ledger.note import parse_vkey

    try:
        parts = path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(parts) != 2 or parts[0] != "ml-dsa-44":
        return None
    try:
        seed = base64.b64decode(parts[1], validate=True)
        return parse_vkey(MLDSA44Cosigner(origin, seed).vkey())
    except ValueError:
        return None


def signature_problem(note: Note, verifiers: Sequence[Verifier]) -> str | None:
    """None when the note carries a valid signature by one of ``verifiers`` and every
    signature line with the key ID of one of them verifies; else what is wrong."""
    for sig in note.signatures:
        for v in verifiers:
            if v.name == sig.name and v.key_id == sig.key_id and not v.verify(note.text, sig):
                kid = sig.key_id.hex()
                return f"the signature of key {kid} (type {v.sig_type:#04x}) does not verify"
    if not verify_note(note, verifiers):
        return "no valid signature by the log's keys"
    return None


def log_verifiers(origin: str, public_keys: Iterable[bytes]) -> list[Verifier]:
    seen: set[bytes] = set()
    out: list[Verifier] = []
    for pk in public_keys:
        if pk in seen or len(pk) != 32:
            continue
        seen.add(pk)
        out.append(Ed25519Verifier(origin, pk))
    return out


# -- the tree ---------------------------------------------------------------------------------


def node_reader(leaf_hashes: Sequence[bytes]) -> MemoryNodeReader:
    return MemoryNodeReader(leaf_hashes)


def root_at(reader: MemoryNodeReader, size: int) -> bytes:
    return EMPTY_ROOT if size == 0 else tree_root(size, reader)


def classify_leaf_differences(
    stored: Sequence[bytes], computed: Sequence[bytes], offset: int = 0
) -> list[tuple[str, int, str]]:
    """Where ``computed`` leaf hashes differ from ``stored`` ones (the same leaves as tiles
    recorded them): (kind, leaf index, explanation) per difference. A run of leaves shifted by
    one is one deletion or insertion; two leaves that traded places are reordered."""
    n = min(len(stored), len(computed))
    diffs = [i for i in range(n) if stored[i] != computed[i]]
    out: list[tuple[str, int, str]] = []
    where = {stored[i]: i for i in diffs}
    explained: set[int] = set()
    k = 0
    while k < len(diffs):
        i = diffs[k]
        if i in explained:
            k += 1
            continue
        if i + 1 < len(stored) and computed[i] == stored[i + 1]:
            j = i
            # The run ends where the shift does (past the last stored hash nothing tells).
            while j < n and (j + 1 >= len(stored) or computed[j] == stored[j + 1]):
                explained.add(j)
                j += 1
            out.append((DELETED, offset + i,
                        f"the leaf recorded at index {offset + i} is gone; the "
                        f"{j - i} leaves after it moved down by one"))  # fmt: skip
        elif i + 1 < len(computed) and computed[i + 1] == stored[i]:
            j = i
            while j < n and (j + 1 >= len(computed) or computed[j + 1] == stored[j]):
                explained.add(j)
                j += 1
            out.append((INSERTED, offset + i,
                        f"a leaf not in the tiles was inserted at index {offset + i}; the "
                        f"{j - i} leaves after it moved up by one"))  # fmt: skip
        else:
            other = where.get(computed[i])
            if other is not None and other != i and computed[other] == stored[i]:
                j = other
                explained.update((i, j))
                out.append((REORDERED, offset + i,
                            f"leaves {offset + i} and {offset + j} traded places"))  # fmt: skip
            else:
                out.append((CHANGED, offset + i,
                            f"the entry of leaf {offset + i} differs from the one the tiles "
                            "recorded"))  # fmt: skip
        k += 1
    return out


# -- the events pass (runs in worker processes for large databases) ----------------------------


@dataclass
class EventPassResult:
    findings: list[Finding] = field(default_factory=list)
    #: (event_id, redacted_because, leaf) of rows whose content hash failed but that are
    #: redacted: the redaction must be a ledger event (checked once all rows are done).
    redacted: list[tuple[str, str, int | None]] = field(default_factory=list)
    #: (event_id, leaf, problem) of rows stored in redacted form with no redaction event: an
    #: erasure or a retention purge must list them (:data:`STRIPPING_ACTIONS` records).
    stripped: list[tuple[str, int | None, str]] = field(default_factory=list)
    #: (event_id, the ID its JSON hashes to, leaf, the row's other problems) of rows whose
    #: JSON does not hash to their event ID.
    foreign_json: list[tuple[str, str, int | None, list[str]]] = field(default_factory=list)
    rows: int = 0
    #: rows that have a leaf
    with_leaf: int = 0


_RECORD_FIELDS = ("event_id", "room_id", "stream_pos", "type", "state_key", "sender",
                  "origin_server_ts", "decision")  # fmt: skip


def check_event_rows(rows: Iterable[tuple], server_name: str) -> EventPassResult:
    """The per-row event checks (module docstring, step 4) over rows of
    :meth:`LedgerAuditStore.audit_event_batches`: one finding per row, naming every problem
    of it (a JSON that hashes to another event ID, and a redaction, are decided once every
    row is read: :attr:`EventPassResult.foreign_json`, :attr:`EventPassResult.redacted`)."""
    res = EventPassResult()
    suffix = ":" + server_name
    for row in rows:
        res.rows += 1
        kind, problems, idx, eid = _check_event_row(row, suffix, res)
        if kind == LEAF_GONE:
            res.findings.append(Finding(DELETED, "ledger_entries", str(idx), problems[0], idx, eid))
        elif problems:
            res.findings.append(Finding(kind, "events", eid, "; ".join(problems), idx, eid))
    return res


_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_NOT_HASHED = ("unsigned", "signatures", "hashes")


def _fast_hashes_ok(ev: dict, eid: str, rv: RoomVersion) -> bool:
    """The common case in one pass, without the canonical-JSON validation walk: the event ID is
    the reference hash of the JSON and the content hash matches. False sends the row to the
    exact checks (:func:`compute_event_id`, :func:`check_content_hash`), which also accept
    what this fast path cannot (integral floats in old room versions): it never accepts a row
    they would refuse, since it hashes the same bytes canonical JSON would."""
    try:
        red = redact(ev, rv.identifier)
        red.pop("signatures", None)
        digest = hashlib.sha256(orjson.dumps(red, option=_CANONICAL)).digest()
        if (
            "$" + encode_base64(digest, urlsafe=rv.event_id_format is EventIdFormat.V4_URLSAFE)
            != eid
        ):
            return False
        hashes = ev.get("hashes")
        want = hashes.get("sha256") if isinstance(hashes, dict) else None
        body = {k: v for k, v in ev.items() if k not in _NOT_HASHED}
        got = encode_base64(hashlib.sha256(orjson.dumps(body, option=_CANONICAL)).digest())
        return got == want
    except (orjson.JSONEncodeError, MatrixError, TypeError):
        return False


def _check_event_row(row: tuple, suffix: str, res: EventPassResult
                     ) -> tuple[str, list[str], int | None, str]:  # fmt: skip
    loads = orjson.loads
    (_, eid, room_id, pos, depth, etype, state_key, sender, ots, js, rejected, soft,
     redacted_because, version, idx, entry, ledger_idx) = row  # fmt: skip
    problems: list[str] = []
    kind = CHANGED
    rec: Any = None
    if idx is None and ledger_idx is not None:
        # The leaf the row names is gone (or the row names a leaf that never was).
        return LEAF_GONE, [f"the leaf of this event, {ledger_idx}, is gone"], ledger_idx, eid
    if idx is None:
        kind = INSERTED
        problems.append("an events row with no leaf in the ledger")
    else:
        try:
            rec = loads(entry)
        except orjson.JSONDecodeError:
            rec = None
        if isinstance(rec, dict) and rec.get("event_id") == eid:
            res.with_leaf += 1
        if not isinstance(rec, dict) or rec.get("kind") != "event":
            problems.append(f"its latest leaf {idx} is not an event record")
            rec = None
        else:
            actual = (eid, room_id, pos, etype, state_key, sender, ots,
                      decision_of(rejected, soft, OUTLIER))  # fmt: skip
            bad = [
                (name, have, rec.get(name))
                for name, have in zip(_RECORD_FIELDS, actual, strict=True)
                if rec.get(name) != have
            ]
            if bad:
                if [b[0] for b in bad] == ["stream_pos"]:
                    kind = REORDERED
                problems += [f"{n} is {h!r}, the leaf says {w!r}" for n, h, w in bad]
    try:
        ev = loads(js)
    except (orjson.JSONDecodeError, TypeError):
        ev = None
    if not isinstance(ev, dict):
        problems.append("the json column is not a JSON object")
        return (CHANGED if kind == REORDERED else kind), problems, idx, eid
    col_bad = []
    if ev.get("type") != etype:
        col_bad.append("type")
    sk = ev.get("state_key")
    if (sk if isinstance(sk, str) else None) != state_key:
        col_bad.append("state_key")
    if ev.get("sender") != sender:
        col_bad.append("sender")
    if ev.get("origin_server_ts") != ots:
        col_bad.append("origin_server_ts")
    if "room_id" in ev and ev["room_id"] != room_id:
        col_bad.append("room_id")
    d = ev.get("depth")
    if (d if type(d) is int else 0) != depth:
        col_bad.append("depth")
    if col_bad:
        problems.append("the event JSON disagrees with the row's " + ", ".join(col_bad))
    if kind == REORDERED and len(problems) > 1:
        kind = CHANGED
    rv = KNOWN_ROOM_VERSIONS.get(version) if isinstance(version, str) else None
    if rv is None:
        problems.append("its room has no known room version, so its ID cannot be checked")
        return kind, problems, idx, eid
    if rv.event_format_uses_hash_ids and _fast_hashes_ok(ev, eid, rv):
        return kind, problems, idx, eid
    try:
        if rv.event_format_uses_hash_ids:
            computed = compute_event_id(ev, rv.identifier)
            if computed != eid:
                # Decided once every row is read: another event's JSON, or an edit.
                res.foreign_json.append((eid, computed, idx, problems))
                return kind, [], idx, eid
        else:
            ref = encode_base64(compute_reference_hash(ev, rv.identifier))
            recorded = rec.get("reference_hash") if rec is not None else None
            if ev.get("event_id") != eid or (recorded is not None and recorded != ref):
                problems.append("the JSON does not match the reference hash the ledger recorded")
                return CHANGED if kind == REORDERED else kind, problems, idx, eid
        hash_ok = check_content_hash(ev)
    except MatrixError:
        problems.append("the JSON cannot be hashed (not canonical JSON)")
        return CHANGED if kind == REORDERED else kind, problems, idx, eid
    if hash_ok:
        return kind, problems, idx, eid
    body = {k: v for k, v in ev.items() if k != "unsigned"}
    try:
        is_redacted_form = redact(body, rv.identifier) == body
    except MatrixError:
        is_redacted_form = False
    if not is_redacted_form:
        problems.append("the content does not match the event's content hash")
    elif redacted_because is not None:
        res.redacted.append((eid, redacted_because, idx))
    elif isinstance(sender, str) and sender.endswith(suffix):
        _stripped(res, problems, eid, idx, "the content was removed without a redaction event")
    elif rec is not None and not rec.get("redacted_on_receipt") and not rec.get("migrated"):
        # A remote event stored redacted because its content hash failed (PDU check 3) says
        # so in its leaf; one that arrived whole and lost its content later is a change.
        _stripped(
            res,
            problems,
            eid,
            idx,
            "the content was removed without a redaction event (it arrived whole)",
        )
    if kind == REORDERED and len(problems) > 1:
        kind = CHANGED
    return kind, problems, idx, eid


def _stripped(res: EventPassResult, problems: list[str], eid: str, idx: int | None,
              problem: str) -> None:  # fmt: skip
    """A row in redacted form without a redaction event: decided once the records are read (an
    erasure or purge record listing it accounts for it); with other problems, a problem now."""
    if problems:
        problems.append(problem)
    else:
        res.stripped.append((eid, idx, problem))


def _event_worker(db_path: str, server_name: str, first: int, last: int,
                  key: bytes | None = None) -> EventPassResult:  # fmt: skip
    """One worker's share of the events pass: rows with rowid in ``[first, last]`` (``key``:
    the database key, when it is encrypted at rest)."""
    from bastion.storage.sqlite.ledger_audit import open_readonly_store

    store = open_readonly_store(Path(db_path), key)
    try:
        out = EventPassResult()
        for batch in store.audit_event_batches(first, last):
            part = check_event_rows(batch, server_name)
            out.findings += part.findings
            out.redacted += part.redacted
            out.stripped += part.stripped
            out.foreign_json += part.foreign_json
            out.rows += part.rows
            out.with_leaf += part.with_leaf
        return out
    finally:
        store.close()


# -- the verifier ------------------------------------------------------------------------------


@dataclass
class LocalOptions:
    data_dir: Path
    database: Path
    server_name: str
    signing_key_path: Path
    pins: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, note)
    anchor_file: Path | None = None
    progress: bool = False
    workers: int = 2
    #: the configured witnesses' cosignature verifiers (``ledger_witnesses``)
    witnesses: list[Verifier] = field(default_factory=list)
    #: the database key when it is encrypted at rest (``at_rest_key``)
    database_key: bytes | None = None


class Progress:
    """A tqdm bar on stderr (or nothing)."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm  # type: ignore[import-untyped]

            self.bar = tqdm(total=total, desc=desc, unit=" rows", leave=False, smoothing=0.1)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def verify_local(opts: LocalOptions) -> Report:
    """Run every check of the module docstring; raises :class:`UsageError` when the database
    cannot be opened."""
    from bastion.storage.sqlite.ledger_audit import (
        LEDGER_TABLES,
        AuditReadError,
        open_readonly_store,
    )

    started = time.monotonic()
    try:
        store = open_readonly_store(opts.database, opts.database_key)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    report = Report()
    try:
        tables = store.audit_tables()
        missing = [t for t in LEDGER_TABLES if t not in tables]
        if "events" not in tables:
            raise UsageError(f"{opts.database} is not a Bastion database")
        version = store.audit_schema_version()
        if version < LEDGER_SCHEMA_VERSION:
            raise UsageError(
                f"{opts.database} has no ledger yet (schema version {version}; the ledger comes "
                f"with version {LEDGER_SCHEMA_VERSION}): start Bastion once on it to migrate"
            )
        if missing:
            report.add(*(Finding(DELETED, t, None, "the ledger's table is missing")
                         for t in missing))  # fmt: skip
            report.stats["elapsed_s"] = round(time.monotonic() - started, 3)
            return report
        try:
            _Verifier(store, opts, report).run()
        except AuditReadError as e:
            report.add(Finding(INVALID, "database", None, f"cannot be read as Bastion's: {e}"))
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            # A value of a type Bastion never stores (a NULL entry, a text hash): the
            # database was changed beyond what the checks above can name.
            report.add(
                Finding(
                    INVALID,
                    "database",
                    None,
                    f"holds a value Bastion never writes: {type(e).__name__}: {e}",
                )
            )
    finally:
        store.close()
    report.stats["elapsed_s"] = round(time.monotonic() - started, 3)
    return report


class _Verifier:
    def __init__(self, store: Any, opts: LocalOptions, report: Report) -> None:
        self.store = store
        self.opts = opts
        self.report = report
        self.origin = checkpoint_origin(opts.server_name)
        self.leaf_hashes: list[bytes] = []
        self.reader: MemoryNodeReader | None = None
        #: the latest leaf of each event the leaves name, and the events with several leaves.
        self.latest: dict[str, int] = {}
        self.dupes: set[str] = set()
        #: action records the key checks need: (leaf, record).
        self.actions: list[tuple[int, dict]] = []
        #: the events an erasure or retention record says were stripped of their content
        self.stripped_ids: set[str] = set()
        #: the events an admin's room purge (``room.purge`` records) removed with their room
        self.purged_ids: set[str] = set()
        self._verifiers: list[Verifier] | None = None
        #: the leaf ranges of the integrator's saved right edge that differ from the tree
        self.edge_diffs: list[tuple[int, int]] = []

    def add(self, *findings: Finding) -> None:
        self.report.add(*findings)

    def run(self) -> None:
        store, opts = self.store, self.opts
        lo, hi, n_events = store.audit_event_rowid_bounds()
        self.report.stats["schema_version"] = store.audit_schema_version()
        self.report.stats["events"] = n_events
        futures: list[Future[EventPassResult]] = []
        pool = None
        if n_events >= POOL_THRESHOLD and opts.workers > 1:
            pool = ProcessPoolExecutor(max_workers=opts.workers, mp_context=get_context("spawn"))
            parts = opts.workers * 2
            step = (hi - lo) // parts + 1
            for k in range(parts):
                first = lo + k * step
                futures.append(pool.submit(_event_worker, str(opts.database),
                                           opts.server_name, first, first + step - 1,
                                           opts.database_key))  # fmt: skip
        try:
            self.check_leaves()
            self.check_tree()
            self.check_checkpoints()
            self.check_stored_anchors()
            self.check_rollback()
            self.check_derived_rows()
            self.check_keys()
            if futures:
                results = [f.result() for f in futures]
            else:
                results = [self.events_in_process(lo, hi, n_events)]
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self.finish_events(results)

    # -- 1. leaves ------------------------------------------------------------------------------
    def check_leaves(self) -> None:
        store = self.store
        total = store.audit_leaf_count()
        bar = Progress(self.opts.progress, total, "leaves")
        hashes = self.leaf_hashes
        latest = self.latest
        expected = 0
        loads = orjson.loads
        sha256 = hashlib.sha256
        keep = {ACTION_DEVICE_KEYS_UPLOAD, ACTION_CROSS_SIGNING_UPLOAD, ACTION_DEVICE_DELETE,
                ACTION_ACCOUNT_DEACTIVATE, ACTION_SIGNING_KEY_ROTATE}  # fmt: skip
        erasures: list[dict] = []
        for batch in store.audit_leaf_batches():
            for idx, kind, event_id, subject, action, ts, entry in batch:
                if idx != expected:
                    if idx > expected:
                        self.add(Finding(DELETED, "ledger_entries", _span(expected, idx),
                                         f"{idx - expected} leaf row(s) missing from the "
                                         "index sequence", expected))  # fmt: skip
                    else:  # cannot happen with an INTEGER PRIMARY KEY read in order
                        self.add(Finding(REORDERED, "ledger_entries", str(idx),
                                         "leaf index out of order", idx))  # fmt: skip
                    expected = idx
                expected += 1
                if type(entry) is not bytes:
                    self.add(Finding(CHANGED, "ledger_entries", str(idx),
                                     "the entry is not a blob", idx, event_id))  # fmt: skip
                    entry = entry.encode() if isinstance(entry, str) else b""
                hashes.append(sha256(b"\x00" + entry).digest())
                try:
                    rec = loads(entry)
                except orjson.JSONDecodeError:
                    self.add(Finding(CHANGED, "ledger_entries", str(idx),
                                     "the entry is not JSON", idx, event_id))  # fmt: skip
                    continue
                if not isinstance(rec, dict):
                    self.add(Finding(CHANGED, "ledger_entries", str(idx),
                                     "the entry is not a record", idx, event_id))  # fmt: skip
                    continue
                rkind = rec.get("kind")
                want_ts = rec.get("origin_server_ts") if rkind == "event" else rec.get("ts")
                if (
                    kind != rkind
                    or event_id != rec.get("event_id")
                    or subject != rec.get("subject")
                    or action != rec.get("action")
                    or ts != want_ts
                ):
                    self.add(Finding(CHANGED, "ledger_entries", str(idx),
                                     "the row's columns disagree with its entry", idx,
                                     rec.get("event_id")))  # fmt: skip
                if rkind == "event":
                    eid = rec.get("event_id")
                    if isinstance(eid, str):
                        if eid in latest:
                            self.dupes.add(eid)
                        latest[eid] = idx
                elif rkind == "action" and rec.get("action") in keep:
                    self.actions.append((idx, rec))
                elif rkind == "action" and rec.get("action") in STRIPPING_ACTIONS:
                    listed = rec.get("details", {}).get("events") if isinstance(
                        rec.get("details"), dict) else None  # fmt: skip
                    if isinstance(listed, list):
                        self.stripped_ids.update(e for e in listed if isinstance(e, str))
                elif rkind == "action" and rec.get("action") == ACTION_ROOM_PURGE:
                    details = rec.get("details")
                    listed = details.get("events") if isinstance(details, dict) else None
                    if isinstance(listed, list):
                        self.purged_ids.update(e for e in listed if isinstance(e, str))
                elif rkind == "action" and rec.get("action") == ACTION_COMPLIANCE_ERASURE:
                    erasures.append({"leaf": idx, "subject": rec.get("subject"),
                                     "ts": rec.get("ts")})  # fmt: skip
            bar.update(len(batch))
        bar.close()
        self.report.stats["leaves"] = len(hashes)
        # The accounts erased (issue 10): their summary records, for an auditor to see.
        self.report.stats["erasures"] = erasures
        assert leaf_hash(b"") == sha256(b"\x00").digest()  # the inlined leaf hash is RFC 9162's

    # -- 2. the tree and its tiles ------------------------------------------------------------
    def check_tree(self) -> None:
        store = self.store
        reader = self.reader = node_reader(self.leaf_hashes)
        size = len(self.leaf_hashes)
        self.report.stats["root"] = encode_base64(root_at(reader, size))
        tiles = store.audit_tile_keys()
        self.report.stats["tiles"] = len(tiles)
        state = store.ledger_tree_state()
        integrated = state[0] if state is not None else 0
        stored: set[tuple[int, int]] = set()
        level0_stored: dict[int, bytes] = {}
        for level, index, length in tiles:
            stored.add((level, index))
            if length != TILE_WIDTH * 32:
                self.add(Finding(CHANGED, "ledger_tiles", f"{level}/{index}",
                                 f"a stored tile of {length} bytes (a full tile has "
                                 f"{TILE_WIDTH * 32})"))  # fmt: skip
                continue
            span = TILE_WIDTH ** (level + 1)
            if (index + 1) * span > size:
                self.add(Finding(DELETED, "ledger_entries", _span(index * span, (index + 1) * span),
                                 f"tile {level}/{index} covers leaves up to {(index + 1) * span}, "
                                 f"but the ledger has only {size}: leaves were removed",
                                 min(size, index * span)))  # fmt: skip
        # Compare every stored tile with the recomputation, level by level; a higher tile
        # that differs only because a tile below it does is not a finding of its own.
        differing: dict[int, set[int]] = {}
        for level in sorted({lv for lv, _ in stored}):
            nodes = (
                reader.levels[level * TILE_HEIGHT]
                if level * TILE_HEIGHT < len(reader.levels)
                else []
            )
            count = len(nodes) // TILE_WIDTH
            for index, data in store.audit_tiles(level, 0, 2**62):
                if len(data) != TILE_WIDTH * 32 or index >= count:
                    continue
                want = b"".join(nodes[index * TILE_WIDTH : (index + 1) * TILE_WIDTH])
                if data != want:
                    differing.setdefault(level, set()).add(index)
                    below = differing.get(level - 1, set())
                    if level == 0:
                        level0_stored[index] = data
                    elif any(index * TILE_WIDTH <= c < (index + 1) * TILE_WIDTH for c in below):
                        continue
                    else:
                        self.add(
                            Finding(
                                CHANGED,
                                "ledger_tiles",
                                f"{level}/{index}",
                                "the stored tile differs from the recomputed tree",
                            )
                        )
        if level0_stored:
            self._explain_level0(level0_stored)
        # Every full tile below the integrated size must be stored.
        for level in range(0, 64):
            span = TILE_WIDTH ** (level + 1)
            if span > min(integrated, size):
                break
            for index in range(min(integrated, size) // span):
                if (level, index) not in stored:
                    self.add(
                        Finding(
                            DELETED,
                            "ledger_tiles",
                            f"{level}/{index}",
                            "a full tile of the integrated tree is missing",
                        )
                    )
        if state is not None:
            isize, edge = state
            if isize > size:
                self.add(Finding(DELETED, "ledger_entries", _span(size, isize),
                                 f"the integrator recorded {isize} leaves, the ledger has {size}",
                                 size))  # fmt: skip
            elif edge != _right_edge(reader, isize):
                # Each edge hash is one subtree: the differing ones bracket the change.
                self.edge_diffs = [
                    (a, b) for (a, b), h, want in zip(_edge_ranges(isize), edge,
                                                      _right_edge(reader, isize), strict=False)
                    if h != want
                ] or [(0, isize)]  # fmt: skip

    def _explain_level0(self, tiles: dict[int, bytes]) -> None:
        """Name the leaves behind differing level-0 tiles (a contiguous run is compared as
        one sequence, so a shift that crosses tiles reads as one deletion or insertion)."""
        indexes = sorted(tiles)
        runs: list[list[int]] = []
        for i in indexes:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        for run in runs:
            start = run[0] * TILE_WIDTH
            stored: list[bytes] = []
            for i in run:
                data = tiles[i]
                stored += [data[j : j + 32] for j in range(0, len(data), 32)]
            # One extra stored hash past the run lets a deletion at the run's end be seen.
            nxt = self.store.ledger_tile(0, run[-1] + 1)
            if nxt is not None:
                stored.append(nxt[:32])
            computed = self.leaf_hashes[start : start + len(run) * TILE_WIDTH + 1]
            for kind, leaf, text in classify_leaf_differences(stored, computed, start):
                self.add(Finding(kind, "ledger_entries", str(leaf), text, leaf))

    # -- 3. checkpoints -------------------------------------------------------------------------
    def verifiers(self) -> list[Verifier]:
        if self._verifiers is None:
            keys: list[bytes] = []
            current = read_signing_public_key(self.opts.signing_key_path)
            if current is not None:
                keys.append(current[1])
            for _, vk in self.store.audit_local_old_signing_keys():
                try:
                    keys.append(decode_base64(vk))
                except MatrixError:
                    continue
            for _, rec in self.actions:
                if rec.get("action") == ACTION_SIGNING_KEY_ROTATE:
                    keys += _public_keys_in(rec.get("details"))
            found = log_verifiers(self.origin, keys)
            pq = read_pq_verifier(self.opts.data_dir / PQ_KEY_FILE, self.origin)
            if pq is not None:
                found.append(pq)
            self._verifiers = found
        return self._verifiers

    def _check_cosignatures(self, size: int, text: str) -> None:
        """The stored witness cosignatures of a checkpoint, against the configured witnesses'
        vkeys (tlog-cosignature); a line of an unconfigured witness cannot be checked."""
        from bastion.ledger.note import parse_signature_line

        for witness, line, _ts in self.store.audit_cosignatures(size):
            key = f"{size} {witness}"
            try:
                sig = parse_signature_line(line.decode("utf-8").rstrip("\n"))
            except (NoteError, UnicodeDecodeError):
                self.add(Finding(INVALID, "ledger_cosignatures", key, "not a signature line"))
                continue
            known = [w for w in self.opts.witnesses if w.name == sig.name]
            if known and not any(w.verify(text, sig) for w in known):
                self.add(
                    Finding(
                        INVALID,
                        "ledger_cosignatures",
                        key,
                        f"the cosignature by {sig.name} does not verify",
                    )  # fmt: skip
                )

    def check_checkpoints(self) -> None:
        assert self.reader is not None
        reader, size = self.reader, len(self.leaf_hashes)
        verifiers = self.verifiers()
        self.report.stats["log_keys"] = len(verifiers)
        prev: Checkpoint | None = None
        count = 0
        first_fork: tuple[int, int] | None = None  # (size, count of mismatching checkpoints)
        forks = 0
        good_below = 0
        beyond = 0  # checkpoints larger than the ledger
        largest = 0
        prev_ok = False
        for row in self.store.ledger_iter_checkpoints():
            count += 1
            key = str(row.size)
            try:
                note = parse_note(row.note)
                cp = parse_checkpoint(note.text)
            except ValueError as e:
                self.add(Finding(CHANGED, "ledger_checkpoints", key,
                                 f"the stored note is malformed: {e}"))  # fmt: skip
                continue
            if cp.origin != self.origin:
                self.add(
                    Finding(
                        INVALID,
                        "ledger_checkpoints",
                        key,
                        f"origin {cp.origin!r}, expected {self.origin!r}",
                    )
                )
            problem = signature_problem(note, verifiers)
            if problem is not None:
                self.add(Finding(INVALID, "ledger_checkpoints", key, problem))
            self._check_cosignatures(row.size, note.text)
            if cp.size != row.size or cp.root != bytes(row.root):
                self.add(
                    Finding(
                        CHANGED,
                        "ledger_checkpoints",
                        key,
                        "the row's size/root columns disagree with its signed note",
                    )
                )
            ok = False
            if cp.size > size:
                beyond += 1
                largest = cp.size
            elif root_at(reader, cp.size) != cp.root:
                forks += 1
                if first_fork is None:
                    first_fork = (cp.size, good_below)
            else:
                ok = True
                good_below = cp.size
                # Implied by both roots matching one tree; checked as RFC 9162 2.1.4 says.
                if prev is not None and prev_ok and 0 < prev.size < cp.size:
                    proof = consistency_proof(prev.size, cp.size, reader)
                    if not verify_consistency(prev.size, cp.size, prev.root, cp.root, proof):
                        self.add(
                            Finding(
                                FORKED,
                                "ledger_checkpoints",
                                key,
                                f"not consistent with checkpoint {prev.size}",
                            )
                        )
            prev, prev_ok = cp, ok
        if beyond:
            self.add(Finding(ROLLED_BACK, "ledger_entries", _span(size, largest),
                             f"{beyond} signed checkpoint(s) cover more leaves than the ledger "
                             f"has ({size}; the largest covers {largest}): leaves were removed",
                             size))  # fmt: skip
        for a, b in self.edge_diffs:
            if first_fork is not None or beyond:
                # The leaves changed under the integrator's saved edge too: a narrower range.
                self.add(Finding(CHANGED, "ledger_entries", _span(a, b),
                                 f"a leaf in [{a}, {b}) differs from the one the integrator "
                                 "hashed (its saved right edge)", a))  # fmt: skip
            else:
                self.add(Finding(CHANGED, "ledger_tree_state", "1",
                                 f"the saved right edge differs from the tree over [{a}, {b}), "
                                 "which the signed checkpoints confirm"))  # fmt: skip
        if first_fork is not None:
            at, good = first_fork
            self.add(Finding(FORKED, "ledger_entries", _span(good, at),
                             f"the recomputed tree does not match {forks} signed checkpoint(s), "
                             f"the first of size {at}: a leaf in [{good}, {at}) was changed, "
                             "removed or inserted", good))  # fmt: skip
        self.report.stats["checkpoints"] = count
        if count == 0 and size > 0:
            self.add(
                Finding(
                    DELETED,
                    "ledger_checkpoints",
                    None,
                    f"no signed checkpoint, yet the ledger has {size} leaves",
                )
            )

    def check_stored_anchors(self) -> None:
        """The anchor receipts the log stored: each matches its own columns, a file receipt
        holds its checkpoint note (checked offline), and what it anchored is in the tree."""
        from bastion.ledger.anchors import verify_receipt

        verifiers = self.verifiers()
        size = len(self.leaf_hashes)
        count = 0
        for aid, anchor, a_size, a_root, receipt_json in self.store.audit_anchor_rows():
            count += 1
            key = f"{anchor} {aid}"
            try:
                receipt = orjson.loads(receipt_json)
            except orjson.JSONDecodeError:
                receipt = None
            if not isinstance(receipt, dict):
                self.add(Finding(CHANGED, "ledger_anchors", key, "the receipt is not JSON"))
                continue
            root64 = base64.b64encode(a_root).decode()
            if receipt.get("size") != a_size or receipt.get("root") != root64:
                self.add(Finding(CHANGED, "ledger_anchors", key,
                                 "the row's size/root disagree with its receipt"))  # fmt: skip
            data = anchor_note(receipt)
            if data is None:
                continue  # not a file receipt: its note is not at hand
            try:
                note = parse_note(data)
                cp = parse_checkpoint(note.text)
            except ValueError:
                self.add(Finding(CHANGED, "ledger_anchors", key, "the receipt's note is malformed"))
                continue
            if not verify_receipt(receipt, data) or signature_problem(note, verifiers):
                self.add(
                    Finding(
                        CHANGED,
                        "ledger_anchors",
                        key,
                        "the receipt does not hold a checkpoint the log signed",
                    )
                )
                continue
            self._against(cp.size, cp.root, "ledger_anchors", key,
                          f"anchored checkpoint {cp.size}", size)  # fmt: skip
        self.report.stats["anchor_receipts"] = count

    # -- 7. rollback against a pin or the anchor file ----------------------------------------------
    def check_rollback(self) -> None:
        assert self.reader is not None
        verifiers = self.verifiers()
        size = len(self.leaf_hashes)
        for name, pin in self.opts.pins:
            pin_note, pin_cp = parse_pin(name, pin)
            if pin_cp.origin != self.origin:
                raise UsageError(
                    f"{name}: a checkpoint of {pin_cp.origin!r}, not of {self.origin!r}"
                )
            problem = signature_problem(pin_note, verifiers)
            if problem is not None:
                self.add(Finding(INVALID, "pin", name, f"the pinned checkpoint: {problem}"))
            self._against(pin_cp.size, pin_cp.root, "pin", name,
                          f"pinned checkpoint {pin_cp.size}", size)  # fmt: skip
        if self.opts.anchor_file is not None:
            for rec in _read_anchor_file(self.opts.anchor_file):
                key = f"line {rec.get('line')}"
                data = anchor_note(rec)
                note: Note | None = None
                cp: Checkpoint | None = None
                if data is not None:
                    try:
                        note = parse_note(data)
                        cp = parse_checkpoint(note.text)
                    except ValueError:
                        cp = None
                if note is None or cp is None or cp.origin != self.origin:
                    self.add(
                        Finding(
                            INVALID,
                            "anchor",
                            key,
                            "the anchor line holds no checkpoint of this log",
                        )
                    )
                    continue
                problem = signature_problem(note, verifiers)
                if problem is not None:
                    self.add(Finding(INVALID, "anchor", key, f"the anchored checkpoint: {problem}"))
                self._against(cp.size, cp.root, "anchor", key,
                              f"anchored checkpoint {cp.size}", size)  # fmt: skip

    def _against(self, cp_size: int, cp_root: bytes, table: str, key: str, what: str,
                 size: int) -> None:  # fmt: skip
        assert self.reader is not None
        if cp_size > size:
            self.add(Finding(ROLLED_BACK, table, key,
                             f"the database's ledger has {size} leaves, fewer than the "
                             f"{what}: the database was rolled back", size))  # fmt: skip
        elif root_at(self.reader, cp_size) != cp_root:
            self.add(Finding(FORKED, table, key,
                             f"the database's tree at size {cp_size} has another root than the "
                             f"{what}: the database forked from it"))  # fmt: skip

    # -- 4. events ----------------------------------------------------------------------------------
    def events_in_process(self, lo: int, hi: int, n_events: int) -> EventPassResult:
        out = EventPassResult()
        bar = Progress(self.opts.progress, n_events, "events")
        for batch in self.store.audit_event_batches(lo, hi):
            part = check_event_rows(batch, self.opts.server_name)
            out.findings += part.findings
            out.redacted += part.redacted
            out.stripped += part.stripped
            out.foreign_json += part.foreign_json
            out.rows += part.rows
            out.with_leaf += part.with_leaf
            bar.update(len(batch))
        bar.close()
        return out

    def finish_events(self, results: list[EventPassResult]) -> None:
        store = self.store
        redacted: list[tuple[str, str, int | None]] = []
        stripped: list[tuple[str, int | None, str]] = []
        foreign: list[tuple[str, str, int | None, list[str]]] = []
        for r in results:
            for f in r.findings:
                # A row naming a missing leaf, of an event the ledger has: its ledger_idx is
                # wrong, the leaf is where the ledger says.
                if f.kind == DELETED and f.table == "ledger_entries" and f.event_id in self.latest:
                    at = self.latest[f.event_id]
                    f = Finding(CHANGED, "events", f.event_id, f"ledger_idx names leaf {f.leaf}, "
                                f"which does not exist; the event's leaf is {at}", at,
                                f.event_id)  # fmt: skip
                self.add(f)
            redacted += r.redacted
            stripped += r.stripped
            foreign += r.foreign_json
        # An event with several leaves (an outlier stored again): its row names the latest.
        named = store.audit_event_ledger_idx(sorted(self.dupes)) if self.dupes else {}
        for eid, at in named.items():
            if at is not None and at != self.latest[eid]:
                self.add(Finding(CHANGED, "events", eid, f"ledger_idx names leaf {at}, not the "
                                 f"event's latest leaf {self.latest[eid]}", at, eid))  # fmt: skip
        self.report.stats["events_checked"] = sum(r.rows for r in results)
        # A JSON that hashes to another event of the ledger was moved between rows.
        for eid, other, idx, problems in foreign:
            if other in self.latest:
                text = f"the row holds the JSON of another event ({other})"
                self.add(Finding(REORDERED, "events", eid, "; ".join([text, *problems]), idx, eid))
            else:
                text = f"the JSON hashes to {other}, not to the row's event ID"
                self.add(Finding(CHANGED, "events", eid, "; ".join([*problems, text]), idx, eid))
        # A redacted row's redaction must be a redaction of it, in the ledger.
        if redacted:
            info = store.audit_event_types([r for _, r, _ in redacted])
            for eid, by, idx in redacted:
                got = info.get(by)
                ok = False
                if got is not None and got[0] == "m.room.redaction" and got[1] is not None:
                    try:
                        red = orjson.loads(got[1])
                    except orjson.JSONDecodeError:
                        red = None
                    if isinstance(red, dict):
                        content = red.get("content")
                        target = red.get("redacts") or (
                            content.get("redacts") if isinstance(content, dict) else None
                        )
                        ok = target == eid and by in self.latest
                if not ok:
                    self.add(Finding(CHANGED, "events", eid,
                                     f"the content was removed, but {by} is not a redaction of "
                                     "it in the ledger", idx, eid))  # fmt: skip
        # A row stripped of its content without a redaction event: an erasure or a retention
        # purge must have listed it in the ledger (bastion.services.compliance_records).
        accounted = 0
        for eid, idx, problem in stripped:
            if eid in self.stripped_ids:
                accounted += 1
            else:
                self.add(Finding(CHANGED, "events", eid, problem, idx, eid))
        self.report.stats["events_stripped_by_records"] = accounted
        # Event leaves whose row is gone: none when every event ID the leaves name has a row
        # (each row with a leaf is one distinct ID), so the search only runs when one lacks.
        gone: dict[str, int] = {}
        with_leaf = sum(r.with_leaf for r in results)
        if len(self.latest) != with_leaf:
            for idx, eid in store.audit_event_leaves_without_row():
                gone[eid] = idx
        # A room purge (Synapse-compatible admin API) lists the events it removed.
        purged = [eid for eid in gone if eid in self.purged_ids]
        self.report.stats["events_purged_by_records"] = len(purged)
        for eid in purged:
            del gone[eid]
        for eid, idx in gone.items():
            self.add(Finding(DELETED, "events", eid,
                             "the ledger records this event, the events table has no row",
                             idx, eid))  # fmt: skip

    # -- 5. rows derived from events -----------------------------------------------------------------
    def check_derived_rows(self) -> None:
        store = self.store
        for (
            room_id,
            etype,
            skey,
            eid,
            e_room,
            e_type,
            e_skey,
            e_rejected,
        ) in store.audit_current_state():
            key = f"{room_id} {etype} {skey}"
            if e_room is None:
                self.add(
                    Finding(
                        CHANGED,
                        "current_state",
                        key,
                        f"names {eid}, which is not stored",
                        None,
                        eid,
                    )
                )
            elif (e_room, e_type, e_skey) != (room_id, etype, skey):
                self.add(Finding(CHANGED, "current_state", key,
                                 f"names {eid}, an event of ({e_room}, {e_type}, {e_skey})",
                                 None, eid))  # fmt: skip
            elif e_rejected:
                self.add(
                    Finding(
                        CHANGED, "current_state", key, f"names {eid}, a rejected event", None, eid
                    )
                )
        for (room_id, user_id, membership, eid, pos, e_room, e_type, e_skey, e_pos, e_mship,
             cs_eid) in store.audit_current_membership():  # fmt: skip
            key = f"{room_id} {user_id}"
            problem = None
            if e_room is None:
                problem = f"names {eid}, which is not stored"
            elif (e_room, e_type, e_skey) != (room_id, "m.room.member", user_id):
                problem = f"names {eid}, which is not this user's membership in this room"
            elif membership != e_mship:
                problem = f"says {membership!r}, the event {eid} says {e_mship!r}"
            elif pos < e_pos:
                # A membership takes the position of the event that made it current: its own,
                # or a later one's (a state change over federation), never an earlier one.
                problem = f"stream position {pos}, before its event's {e_pos}"
            elif cs_eid is not None and cs_eid != eid:
                problem = f"names {eid}, the room's current state names {cs_eid}"
            if problem is not None:
                self.add(Finding(CHANGED, "current_membership", key, problem, None, eid))
        for (_rowid, room_id, user_id, membership, eid, pos, sender, e_room, e_type, e_skey,
             e_pos, e_sender, e_mship) in store.audit_membership_events():  # fmt: skip
            key = f"{room_id} {user_id} {eid}"
            problem = None
            if e_room is None:
                problem = f"names {eid}, which is not stored"
            elif (e_room, e_type, e_skey) != (room_id, "m.room.member", user_id):
                problem = "the event is not this user's membership in this room"
            elif membership != e_mship:
                problem = f"says {membership!r}, the event says {e_mship!r}"
            elif sender != e_sender:
                problem = f"sender {sender!r}, the event's is {e_sender!r}"
            elif pos < e_pos:
                problem = f"stream position {pos}, before its event's {e_pos}"
            if problem is not None:
                self.add(Finding(CHANGED, "membership_events", key, problem, None, eid))

    # -- 6. keys ---------------------------------------------------------------------------------------
    def check_keys(self) -> None:
        store = self.store
        # The latest record per device and per cross-signing key, and removals.
        uploads: dict[tuple[str, str], tuple[int, dict]] = {}
        removed: dict[tuple[str, str], int] = {}  # device -> leaf of its latest deletion
        deactivated: dict[str, int] = {}
        cross: dict[tuple[str, str], tuple[int, str | None, str | None]] = {}
        for idx, rec in self.actions:
            action = rec.get("action")
            raw_details = rec.get("details")
            details: dict = raw_details if isinstance(raw_details, dict) else {}
            user = rec.get("subject") or rec.get("target")
            if not isinstance(user, str):
                continue
            if action == ACTION_DEVICE_KEYS_UPLOAD:
                dev = details.get("device_id")
                if isinstance(dev, str):
                    uploads[(user, dev)] = (idx, details)
            elif action == ACTION_DEVICE_DELETE:
                devs = details.get("device_ids")
                if not isinstance(devs, list):
                    devs = [details.get("device_id")]
                for dev in devs:
                    if isinstance(dev, str):
                        removed[(user, dev)] = idx
            elif action == ACTION_ACCOUNT_DEACTIVATE:
                deactivated[user] = idx
            elif action == ACTION_CROSS_SIGNING_UPLOAD:
                raw_keys, raw_sums = details.get("keys"), details.get("sha256")
                keys: dict = raw_keys if isinstance(raw_keys, dict) else {}
                sums: dict = raw_sums if isinstance(raw_sums, dict) else {}
                for key_type, pub in keys.items():
                    s = sums.get(key_type)
                    cross[(user, key_type)] = (idx, pub if isinstance(pub, str) else None,
                                               s if isinstance(s, str) else None)  # fmt: skip
        seen: set[tuple[str, str]] = set()
        for user, dev, key_json in store.audit_device_keys():
            seen.add((user, dev))
            key = f"{user} {dev}"
            upload = uploads.get((user, dev))
            if upload is None:
                self.add(
                    Finding(
                        INSERTED,
                        "e2e_device_keys",
                        key,
                        "a device key with no device_keys.upload record",
                    )
                )
                continue
            idx, details = upload
            if _json_sha256(key_json) != details.get("keys_sha256"):
                self.add(
                    Finding(
                        CHANGED,
                        "e2e_device_keys",
                        key,
                        "the stored device key is not the one recorded",
                        idx,
                    )
                )
        for (user, dev), (idx, _) in uploads.items():
            if (user, dev) in seen:
                continue
            if removed.get((user, dev), -1) > idx or deactivated.get(user, -1) > idx:
                continue
            self.add(
                Finding(
                    DELETED,
                    "e2e_device_keys",
                    f"{user} {dev}",
                    "a recorded device key is gone without a recorded deletion",
                    idx,
                )
            )
        cs_seen: set[tuple[str, str]] = set()
        for user, key_type, pub, key_json in store.audit_cross_signing_keys():
            cs_seen.add((user, key_type))
            key = f"{user} {key_type}"
            got = cross.get((user, key_type))
            if got is None:
                self.add(
                    Finding(
                        INSERTED,
                        "e2e_cross_signing_keys",
                        key,
                        "a cross-signing key with no cross_signing.upload record",
                    )
                )
                continue
            idx, want_pub, want_sum = got
            if pub != want_pub or (want_sum is not None and _json_sha256(key_json) != want_sum):
                self.add(
                    Finding(
                        CHANGED,
                        "e2e_cross_signing_keys",
                        key,
                        "the stored cross-signing key is not the one recorded",
                        idx,
                    )
                )
        for (user, key_type), (idx, _, _) in cross.items():
            if (user, key_type) not in cs_seen and deactivated.get(user, -1) < idx:
                self.add(
                    Finding(
                        DELETED,
                        "e2e_cross_signing_keys",
                        f"{user} {key_type}",
                        "a recorded cross-signing key is gone",
                        idx,
                    )
                )


def _json_sha256(text: object) -> str:
    """Unpadded base64 of the SHA-256 of the canonical JSON of a stored key object."""
    try:
        data = canonical_json(orjson.loads(text))  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, MatrixError, TypeError):
        data = text.encode() if isinstance(text, str) else repr(text).encode()
    return encode_base64(hashlib.sha256(data).digest())


def _right_edge(reader: MemoryNodeReader, size: int) -> list[bytes]:
    """The complete-subtree hashes of the right edge of a tree of ``size`` leaves, largest
    first (:class:`~bastion.ledger.merkle.TreeBuilder`'s ``edge``)."""
    out: list[bytes] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size & (1 << level):
            out.append(reader(level, start >> level))
            start += 1 << level
    return out


def _edge_ranges(size: int) -> list[tuple[int, int]]:
    """The leaf ranges of the right edge's subtrees of a tree of ``size`` leaves, largest
    first (the order of :func:`_right_edge`)."""
    out = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size & (1 << level):
            out.append((start, start + (1 << level)))
            start += 1 << level
    return out


def _span(start: int, end: int) -> str:
    return str(start) if end - start <= 1 else f"{start}..{end - 1}"


def _read_anchor_file(path: Path) -> list[dict]:
    """The receipts of a copy of the file anchor (a torn last line is left out: the lines
    before it still count)."""
    from bastion.ledger.anchors import TornLineError, read_file_anchor

    try:
        return list(read_file_anchor(path))
    except TornLineError as e:
        return list(e.entries)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the anchor file {path}: {e}") from None


def anchor_note(receipt: Mapping[str, Any]) -> bytes | None:
    """The signed checkpoint note a file-anchor receipt carries (its line's ``note``)."""
    entry = receipt.get("entry")
    if not isinstance(entry, str):
        return None
    try:
        line = orjson.loads(entry)
        note = line.get("note") if isinstance(line, dict) else None
        return base64.b64decode(note, validate=True) if isinstance(note, str) else None
    except (orjson.JSONDecodeError, ValueError):
        return None


def parse_pin(name: str, data: bytes) -> tuple[Note, Checkpoint]:
    """A pinned checkpoint file: a signed note holding a checkpoint (UsageError otherwise)."""
    try:
        note = parse_note(data)
        return note, parse_checkpoint(note.text)
    except (NoteError, ValueError) as e:
        raise UsageError(f"{name}: not a signed checkpoint: {e}") from None


def render_text(report: Report, write: Callable[[str], Any]) -> None:
    for f in report.findings:
        write(f.line())
    s = report.stats
    summary = ", ".join(f"{k} {v}" for k, v in s.items())
    write(("OK: " if report.ok else f"FAILED: {len(report.findings)} finding(s); ") + summary)


# -- proofs: ``bastion ledger prove`` and ``check-proof`` ----------------------------------------


class ProveError(Exception):
    """The proof cannot be made (no such leaf, not yet covered by a checkpoint, a database
    that does not agree with its own checkpoint)."""


def _read_tile_from(store: Any, level: int, index: int, width: int) -> bytes:
    """A tile of the stored tree: a stored full tile, else recomputed from the leaves (level
    0) or from the full tiles of the level below (tlog-tiles: a level-L hash is the root of a
    full level-(L-1) tile)."""
    from bastion.ledger.merkle import root
    from bastion.ledger.tiles import split_tile

    if width == TILE_WIDTH:
        stored = store.ledger_tile(level, index)
        if stored is not None:
            return bytes(stored)
    if level == 0:
        entries = store.ledger_entries(index * TILE_WIDTH, index * TILE_WIDTH + width)
        if len(entries) != width:
            raise ProveError(f"the ledger lacks leaves of tile 0/{index}")
        return b"".join(leaf_hash(e) for e in entries)
    return b"".join(
        root(split_tile(_read_tile_from(store, level - 1, index * TILE_WIDTH + j, TILE_WIDTH)))
        for j in range(width)
    )


def log_vkeys(store: Any, data_dir: Path, signing_key_path: Path, origin: str) -> list[str]:
    """Every verifier key of the log: the current signing key, the retired ones, the
    ML-DSA-44 key when present (vkeys, signed-note)."""
    from bastion.ledger.note import SIG_TYPE_ED25519, format_vkey

    out: list[str] = []
    current = read_signing_public_key(signing_key_path)
    if current is not None:
        out.append(format_vkey(origin, SIG_TYPE_ED25519, current[1]))
    for _, vk in store.audit_local_old_signing_keys():
        try:
            raw = decode_base64(vk)
        except MatrixError:
            continue
        if len(raw) == 32:
            v = format_vkey(origin, SIG_TYPE_ED25519, raw)
            if v not in out:
                out.append(v)
    pq = read_pq_verifier(data_dir / PQ_KEY_FILE, origin)
    if pq is not None:
        out.append(format_vkey(pq.name, pq.sig_type, pq.public_key))  # type: ignore[attr-defined]
    return out


def make_proof(
    *, database: Path, data_dir: Path, signing_key_path: Path, server_name: str,
    event_id: str | None = None, index: int | None = None, database_key: bytes | None = None,
) -> bytes:  # fmt: skip
    """A tlog-proof@v1 bundle for the latest leaf of ``event_id`` (or the leaf ``index``)
    against the latest checkpoint, with the witnesses' cosignatures on it; ``extra`` is the
    canonical JSON ``{"entry": base64 entry, "note": base64 of the log's signed note as
    anchored, "receipt": the anchor receipt of that checkpoint or null, "vkeys": [...]}``."""
    from bastion.storage.sqlite.ledger_audit import AuditReadError, open_readonly_store

    origin = checkpoint_origin(server_name)
    try:
        store = open_readonly_store(database, database_key)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    try:
        return _make_proof(store, data_dir, signing_key_path, origin, event_id, index)
    except AuditReadError as e:
        raise ProveError(f"cannot read the ledger: {e}") from None
    finally:
        store.close()


def _make_proof(store: Any, data_dir: Path, signing_key_path: Path, origin: str,
                event_id: str | None, index: int | None) -> bytes:  # fmt: skip
    from bastion.ledger.merkle import inclusion_proof, verify_inclusion
    from bastion.ledger.note import Note, format_note, parse_signature_line
    from bastion.ledger.proof_bundle import ProofBundle, format_proof_bundle
    from bastion.ledger.tiles import TileNodeReader

    if "ledger_entries" not in store.audit_tables():
        raise UsageError("the database has no ledger (schema before version 4)")
    row = store.ledger_event_entry(event_id) if event_id is not None else (
        store.ledger_entry(index if index is not None else -1))  # fmt: skip
    if row is None:
        what = f"event {event_id}" if event_id is not None else f"leaf {index}"
        raise ProveError(f"the ledger has no {what}")
    cp = store.ledger_latest_checkpoint()
    if cp is None or row.idx >= cp.size:
        raise ProveError(
            f"leaf {row.idx} is not yet covered by a signed checkpoint (try again in a "
            "second, with the server running)"
        )
    reader = TileNodeReader(lambda lv, ix, w: _read_tile_from(store, lv, ix, w), size=cp.size)
    try:
        proof = inclusion_proof(row.idx, cp.size, reader)
    except ValueError as e:
        raise ProveError(f"cannot compute the proof: {e}") from None
    if not verify_inclusion(leaf_hash(row.entry), row.idx, cp.size, proof, cp.root):
        raise ProveError(
            "the database does not agree with its own checkpoint: run `bastion ledger verify`"
        )
    note = parse_note(cp.note)
    sigs = list(note.signatures)
    for line in store.ledger_cosignatures(cp.size):
        try:
            sigs.append(parse_signature_line(bytes(line).decode().rstrip("\n")))
        except (NoteError, UnicodeDecodeError):
            continue
    with_cosigs = format_note(Note(note.text, tuple(sigs)))
    receipt = None
    for a in store.ledger_anchors(limit=1000):
        if a.size == cp.size:
            receipt = a.receipt
            break
    extra = canonical_json({
        "entry": base64.b64encode(row.entry).decode(),
        "note": base64.b64encode(cp.note).decode(),
        "receipt": receipt,
        "vkeys": log_vkeys(store, data_dir, signing_key_path, origin),
    })  # fmt: skip
    try:
        return format_proof_bundle(ProofBundle(row.idx, tuple(proof), with_cosigs, extra))
    except ValueError as e:
        raise ProveError(f"cannot write the bundle: {e}") from None


@dataclass
class ProofCheck:
    """The outcome of ``check-proof``: ``problems`` empty when the proof holds."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    record: Any = None
    index: int | None = None
    checkpoint: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, "notes": self.notes,
                "index": self.index, "checkpoint": self.checkpoint,
                "record": self.record}  # fmt: skip

    def lines(self) -> list[str]:
        out = [f"FAILED: {p}" for p in self.problems] + [f"note: {n}" for n in self.notes]
        if self.record is not None:
            out.append("record: " + orjson.dumps(self.record, option=orjson.OPT_SORT_KEYS).decode())
        if self.ok and self.checkpoint is not None:
            out.append(
                f"OK: leaf {self.index} is in the tree of size "
                f"{self.checkpoint['size']} signed by {self.checkpoint['origin']}"
            )
        return out


def check_proof(data: bytes, *, keys: Sequence[str] = (), witness_keys: Sequence[str] = ()
                ) -> ProofCheck:  # fmt: skip
    """Verify a bundle of :func:`make_proof` offline (tlog-proof "Verifying a tlog proof"):
    the leaf hash of the entry it carries, the checkpoint's signature by the log's key
    (``keys``; else the keys the bundle carries, which only shows it is self-consistent), the
    inclusion proof, each given witness's cosignature, and the anchor receipt. Bad ``keys`` are
    a :class:`UsageError`."""
    from bastion.ledger.anchors import verify_receipt
    from bastion.ledger.merkle import verify_inclusion
    from bastion.ledger.note import parse_vkey
    from bastion.ledger.proof_bundle import parse_proof_bundle

    def vkeys(values: Sequence[str], what: str) -> list[Verifier]:
        out = []
        for v in values:
            try:
                out.append(parse_vkey(v))
            except (NoteError, ValueError) as e:
                raise UsageError(f"bad {what} {v!r}: {e}") from None
        return out

    log_keys = vkeys(keys, "--key")
    witnesses = vkeys(witness_keys, "--witness-key")
    res = ProofCheck()
    try:
        bundle = parse_proof_bundle(data)
    except ValueError as e:
        res.problems.append(f"not a tlog-proof@v1 bundle: {e}")
        return res
    res.index = bundle.index
    try:
        extra = orjson.loads(bundle.extra) if bundle.extra is not None else None
    except orjson.JSONDecodeError:
        extra = None
    if not isinstance(extra, dict) or not isinstance(extra.get("entry"), str):
        res.problems.append("the bundle's extra data carries no ledger entry")
        return res
    try:
        entry = base64.b64decode(extra["entry"], validate=True)
        res.record = orjson.loads(entry)
    except (ValueError, orjson.JSONDecodeError):
        res.problems.append("the bundle's entry is not a base64 JSON record")
        return res
    try:
        note = parse_note(bundle.checkpoint)
        cp = parse_checkpoint(note.text)
    except ValueError as e:
        res.problems.append(f"the checkpoint is malformed: {e}")
        return res
    res.checkpoint = {"origin": cp.origin, "size": cp.size,
                      "root": base64.b64encode(cp.root).decode()}  # fmt: skip
    if not log_keys:
        carried = extra.get("vkeys")
        for v in carried if isinstance(carried, list) else []:
            if isinstance(v, str):
                try:
                    log_keys.append(parse_vkey(v))
                except (NoteError, ValueError):
                    continue
        res.notes.append("no --key given: the checkpoint's signature was checked with the keys "
                         "the bundle itself carries (this shows the bundle is consistent, not "
                         "that the log is the one you trust)")  # fmt: skip
    log_keys = [v for v in log_keys if v.name == cp.origin]
    problem = signature_problem(note, log_keys) if log_keys else "no key of the log to check with"
    if problem is not None:
        res.problems.append(f"the checkpoint: {problem}")
    if not verify_inclusion(leaf_hash(entry), bundle.index, cp.size, bundle.proof, cp.root):
        res.problems.append(f"the inclusion proof does not bind the entry at index "
                            f"{bundle.index} to the checkpoint's root")  # fmt: skip
    for w in witnesses:
        if not any(w.verify(note.text, s) for s in note.signatures):
            res.problems.append(f"no valid cosignature by witness {w.name}")
    receipt = extra.get("receipt")
    if receipt is not None:
        anchored = extra.get("note")
        try:
            anchored_note = base64.b64decode(anchored, validate=True) if isinstance(
                anchored, str) else b""  # fmt: skip
            same = parse_note(anchored_note).text == note.text
        except ValueError:
            same = False
        if not same or not isinstance(receipt, dict) or not verify_receipt(receipt, anchored_note):
            res.problems.append("the anchor receipt does not hold this checkpoint")
        else:
            res.notes.append(f"anchored by the {receipt.get('anchor')} anchor")
    return res
