"""The audit trail's proof that it is complete, and its offline check (issue 10, "Audit").
Pure: no I/O. Built by :mod:`bastion.services.audit`; checked by :func:`verify_trail`
(``bastion ledger verify-audit FILE``).

A trail (the JSON of ``GET /_bastion/admin/v1/audit`` and ``bastion admin audit --format
json``) lists the ``action`` records of a time range (:mod:`bastion.core.audit`) and carries
``proof``:

* ``checkpoint``: the log's latest signed checkpoint (C2SP tlog-checkpoint as a C2SP
  signed-note, cosignature lines included, as ``GET /_bastion/ledger/v1/checkpoint`` serves it)
  and ``tree_size``, its size;
* ``start``, ``end``: the leaf range ``[start, end]`` (inclusive, ``end < tree_size``) and
  ``entries``: the base64 entry (the canonical JSON the leaf hash covers) of **every** leaf in
  it, action and event leaves alike. Event leaves are given as entries, not as leaf hashes or a
  count: a bare hash could hide an action record, and a count cannot be hashed; with the
  entries a verifier sees which leaves are actions and which events (an event leaf holds no
  content: IDs, sender, type, times, the decision). Leaf hashes are RFC 9162 section 2.1.1's
  ``SHA-256(0x00 || entry)``;
* ``start_inclusion_proof``, ``end_inclusion_proof``: RFC 9162 section 2.1.3.1 audit paths of
  leaves ``start`` and ``end`` in the checkpoint's tree (leaf's sibling first, the order of
  C2SP tlog-proof). The siblings left of ``start``'s path and right of ``end``'s, with the
  range's own leaves, are every input of the Merkle Tree Hash (RFC 9162 section 2.1.1): a
  verifier recomputes the checkpoint's root from them (:func:`range_root`), which binds every
  leaf of the range, in order, to the signed root;
* ``from``: the leaf a caller's ``from`` started this page at (None: the range starts at the
  start boundary, :func:`bastion.core.audit.is_start_boundary`, or at leaf 0);
  ``end_reason``: ``"boundary"`` (leaf ``end`` is the end boundary,
  :func:`bastion.core.audit.is_end_boundary`), ``"checkpoint"`` (the signed tree ends before
  any: later records are not yet covered by a checkpoint) or ``"page"`` (``next_batch`` is
  ``end + 1``);
* ``consistency`` (when the caller gave ``since_checkpoint_size``): RFC 9162 section 2.1.4.1
  ``PROOF(old_size, D[tree_size])`` and the stored signed checkpoint of ``old_size``
  (``old_checkpoint``, None when the log kept none of that size): it shows the log the previous
  audit saw is a prefix of this one.

A trail in pages (the admin API's ``limit`` and ``next_batch``) is checked whole by
:func:`verify_pages`: each page, and that they chain (the same query; each page starts at the
previous one's ``next_batch``; the first at the start boundary, the last at the end); a page
signed by a newer checkpoint than the page before must carry the consistency proof from it
(ask each next page with ``since_checkpoint_size`` = the previous page's ``tree_size``).

``log_keys``: the log's verifier keys (C2SP signed-note vkeys); a verifier should check with
keys it got elsewhere (``--key``), else the trail only shows it is self-consistent.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bastion.core import audit as rules
from bastion.ledger.checkpoint import Checkpoint, parse_checkpoint
from bastion.ledger.merkle import (
    HASH_SIZE,
    MAX_TREE_SIZE,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from bastion.ledger.note import Note, Verifier, parse_note, verify_note

__all__ = ["TrailCheck", "path_ranges", "range_root", "verify_pages", "verify_trail"]


def _split(n: int) -> int:
    """RFC 9162 2.1.1's ``k``: the largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def path_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges ``[a, b)`` of the subtrees whose hashes make up ``PATH(index, D[size])``
    (RFC 9162 2.1.3.1), in the proof's order: the leaf's sibling first."""
    out: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start += k
    out.reverse()
    return out


def range_root(
    size: int, start: int, leaf_hashes: Sequence[bytes], start_proof: Sequence[bytes],
    end_proof: Sequence[bytes],
) -> bytes | None:  # fmt: skip
    """The root of the tree of ``size`` leaves (RFC 9162 2.1.1's MTH) from the leaf hashes of
    ``[start, start + len(leaf_hashes))`` and the inclusion proofs (2.1.3.1) of its first and
    last leaf; None on any malformed input (sizes, proof lengths, hash lengths)."""
    end = start + len(leaf_hashes)
    if not (isinstance(size, int) and isinstance(start, int)):
        return None
    if not 0 <= start < end <= size <= MAX_TREE_SIZE:
        return None
    if not all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in leaf_hashes):
        return None
    known: dict[tuple[int, int], bytes] = {}
    for index, proof in ((start, start_proof), (end - 1, end_proof)):
        ranges = path_ranges(index, size)
        if len(ranges) != len(proof):
            return None
        for rng, h in zip(ranges, proof, strict=True):
            if not (isinstance(h, bytes) and len(h) == HASH_SIZE):
                return None
            known[rng] = h

    def mth(a: int, b: int) -> bytes:
        if start <= a and b <= end:
            return root(leaf_hashes[a - start : b - start])
        if b <= start or a >= end:
            # A subtree beside the range whose parent overlaps it: a sibling on the path of
            # leaf ``start`` (left of it) or ``end - 1`` (right of it).
            return known[(a, b)]
        k = _split(b - a)
        return node_hash(mth(a, a + k), mth(a + k, b))

    try:
        return mth(0, size)
    except KeyError:
        return None


@dataclass
class TrailCheck:
    """The outcome of :func:`verify_trail`: ``problems`` empty when the trail holds."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    records: int = 0
    checkpoint: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, "notes": self.notes,
                "records": self.records, "checkpoint": self.checkpoint}  # fmt: skip

    def lines(self) -> list[str]:
        out = [f"FAILED: {p}" for p in self.problems] + [f"note: {n}" for n in self.notes]
        if self.ok and self.checkpoint is not None:
            out.append(
                f"OK: {self.records} record(s); the trail is complete over leaves "
                f"{self.checkpoint['start']}..{self.checkpoint['end']} of the tree of size "
                f"{self.checkpoint['size']} signed by {self.checkpoint['origin']}"
            )
        return out


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None


def _hashes(values: Any) -> list[bytes]:
    if not isinstance(values, list):
        raise ValueError("not a list of hashes")
    return [_b64(v) for v in values]


def _opt_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError("a filter is a string or null")
    return value


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} is not a non-negative integer")
    return value


def _signed(text: Any, keys: Sequence[Verifier]) -> tuple[Note, Checkpoint, bool]:
    if not isinstance(text, str):
        raise ValueError("a checkpoint is signed-note text")
    note = parse_note(text.encode("utf-8"))
    cp = parse_checkpoint(note.text)
    return note, cp, bool(verify_note(note, [k for k in keys if k.name == cp.origin]))


def verify_trail(
    doc: Mapping[str, Any], log_keys: Sequence[Verifier],
    previous_checkpoint: bytes | None = None,
) -> TrailCheck:  # fmt: skip
    """Check an audit trail offline (see the module docstring): the checkpoint's signature by
    one of ``log_keys``, the range's leaves against its root (:func:`range_root`, and each end
    with RFC 9162 2.1.3.2), the records against the leaves (exactly the selected actions of the
    range, :func:`bastion.core.audit.selected`), the range's boundaries, and the consistency
    proof (RFC 9162 2.1.4.2) from ``previous_checkpoint`` (the signed note an earlier audit
    saw; else the trail's ``old_checkpoint``). Never raises on a hostile document."""
    res = TrailCheck()
    try:
        _verify(doc, log_keys, previous_checkpoint, res)
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        res.problems.append(f"the trail is malformed: {e}")
    return res


def _verify(doc: Mapping[str, Any], log_keys: Sequence[Verifier],
            previous: bytes | None, res: TrailCheck) -> None:  # fmt: skip
    if not isinstance(doc, Mapping):
        raise ValueError("a trail is a JSON object")
    since, until = _int(doc["since"], "since"), _int(doc["until"], "until")
    actor, subject = _opt_str(doc.get("actor")), _opt_str(doc.get("subject"))
    proof = doc["proof"]
    listed = doc["records"]
    if not isinstance(listed, list):
        raise ValueError("records is not a list")
    res.records = len(listed)
    if not isinstance(proof, Mapping):
        raise ValueError("the trail carries no proof")
    note, cp, signed = _signed(proof["checkpoint"], log_keys)
    start, end = _int(proof["start"], "start"), _int(proof["end"], "end")
    res.checkpoint = {"origin": cp.origin, "size": cp.size, "start": start, "end": end,
                      "root": base64.b64encode(cp.root).decode()}  # fmt: skip
    if not signed:
        res.problems.append("the checkpoint carries no valid signature by the log's keys")
    if proof.get("tree_size") != cp.size:
        res.problems.append("tree_size is not the checkpoint's size")
    entries = [_b64(e) for e in proof["entries"]]
    if len(entries) != end - start + 1 or end >= cp.size:
        raise ValueError(f"the entries do not fill the range [{start}, {end}] of the tree")
    leaves = [leaf_hash(e) for e in entries]
    first, last = _hashes(proof["start_inclusion_proof"]), _hashes(proof["end_inclusion_proof"])
    if not verify_inclusion(leaves[0], start, cp.size, first, cp.root):
        res.problems.append(f"the inclusion proof of leaf {start} does not verify")
    if not verify_inclusion(leaves[-1], end, cp.size, last, cp.root):
        res.problems.append(f"the inclusion proof of leaf {end} does not verify")
    if range_root(cp.size, start, leaves, first, last) != cp.root:
        res.problems.append(f"the leaves {start}..{end} do not rebuild the checkpoint's root")
    records: list[Any] = []
    for data in entries:
        try:
            records.append(orjson.loads(data))
        except orjson.JSONDecodeError:
            records.append(None)
    expected = [
        {"index": start + i, "record": r}
        for i, r in enumerate(records)
        if rules.selected(r, since, until, actor, subject)
    ]
    if listed != expected:
        have = {x.get("index"): x.get("record") for x in listed if isinstance(x, Mapping)}
        want = {x["index"]: x["record"] for x in expected}
        missing = sorted(set(want) - set(have))
        extra = sorted(i for i in set(have) - set(want) if isinstance(i, int))
        changed = sorted(i for i in set(want) & set(have) if want[i] != have[i])
        res.problems.append(
            "the records are not exactly the range's actions in the time range: missing leaves "
            f"{missing[:20]}, extra {extra[:20]}, changed {changed[:20]}"
            + ("" if missing or extra or changed else " (out of order or malformed)")
        )
    if proof.get("from") is None:
        if start != 0 and not rules.is_start_boundary(records[0], since):
            res.problems.append(f"leaf {start} is not the trail's start boundary")
    elif proof["from"] != start:
        res.problems.append("the range does not start at 'from'")
    else:
        res.notes.append(f"this page continues at leaf {start}: check the previous page ended "
                         f"at leaf {start - 1}")  # fmt: skip
    reason = proof.get("end_reason")
    if reason == "boundary":
        if not rules.is_end_boundary(records[-1], until):
            res.problems.append(f"leaf {end} is not the trail's end boundary")
    elif reason == "checkpoint":
        if end != cp.size - 1:
            res.problems.append("the range does not end at the checkpoint's last leaf")
        res.notes.append(f"the signed tree ends at leaf {end}: records written after it are "
                         "not yet covered by a checkpoint")  # fmt: skip
    elif reason == "page":
        if doc.get("next_batch") != str(end + 1):
            res.problems.append("next_batch is not the leaf after the range")
        res.notes.append(f"a next page follows from leaf {end + 1}")
    else:
        res.problems.append("end_reason is not boundary, checkpoint or page")
    _check_consistency(proof.get("consistency"), cp, log_keys, previous, res)


def _check_consistency(cons: Any, cp: Checkpoint, log_keys: Sequence[Verifier],
                       previous: bytes | None, res: TrailCheck) -> None:  # fmt: skip
    if cons is None:
        if previous is not None:
            res.problems.append("the trail carries no consistency proof from the previous "
                                "checkpoint (ask with since_checkpoint_size)")  # fmt: skip
        return
    if not isinstance(cons, Mapping):
        raise ValueError("consistency is not an object")
    old_size = _int(cons["old_size"], "old_size")
    hashes = _hashes(cons["proof"])
    text = previous.decode("utf-8", "replace") if previous is not None else cons.get(
        "old_checkpoint")  # fmt: skip
    if text is None:
        res.problems.append(f"no checkpoint of size {old_size} to check the consistency "
                            "proof against (give the previous audit's checkpoint)")  # fmt: skip
        return
    _note, old, signed = _signed(text, log_keys)
    if not signed:
        res.problems.append("the previous checkpoint carries no valid signature by the log's keys")
    if old.size != old_size or old.origin != cp.origin:
        res.problems.append("the previous checkpoint is not of old_size in this log")
    elif not verify_consistency(old_size, cp.size, old.root, cp.root, hashes):
        res.problems.append(f"the consistency proof from size {old_size} to {cp.size} does "
                            "not verify: the log was rewritten")  # fmt: skip


def verify_pages(
    docs: Sequence[Mapping[str, Any]], log_keys: Sequence[Verifier],
    previous_checkpoint: bytes | None = None,
) -> TrailCheck:  # fmt: skip
    """Check a trail given in pages (see the module docstring): every page with
    :func:`verify_trail` (the first against ``previous_checkpoint``, each later one against the
    checkpoint of the page before when it is a newer one) and their chaining. Never raises."""
    res = TrailCheck()
    if not docs:
        res.problems.append("no page")
        return res
    prev: Mapping[str, Any] | None = None
    for n, doc in enumerate(docs, start=1):
        before = previous_checkpoint if prev is None else None
        try:
            if prev is not None:
                old, new = prev["proof"], doc["proof"]
                if old["checkpoint"] != new["checkpoint"]:
                    before = old["checkpoint"].encode("utf-8")
                for key in ("since", "until", "actor", "subject"):
                    if doc.get(key) != prev.get(key):
                        res.problems.append(f"page {n} is of another query ({key})")
                if new.get("from") is None or str(new["from"]) != prev.get("next_batch"):
                    res.problems.append(f"page {n} does not start where page {n - 1} ended")
            elif isinstance(doc.get("proof"), Mapping) and doc["proof"].get("from") is not None:
                res.problems.append("the first page does not start at the start boundary")
        except (KeyError, TypeError, AttributeError) as e:
            res.problems.append(f"page {n} is malformed: {e}")
            return res
        check = verify_trail(doc, log_keys, before)
        res.problems += [f"page {n}: {p}" for p in check.problems]
        res.notes += [f"page {n}: {x}" for x in check.notes if "page" not in x]
        res.records += check.records
        if check.checkpoint is not None:
            if res.checkpoint is None:
                res.checkpoint = dict(check.checkpoint)
            res.checkpoint.update({k: check.checkpoint[k] for k in ("size", "end", "root")})
        prev = doc
    if isinstance(prev, Mapping) and prev.get("next_batch") is not None:
        res.problems.append("the last page has a next_batch: pages are missing")
    return res
