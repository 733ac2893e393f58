"""The audit trail (issue 10, "Audit"): the ledger's action records of a time range with the
proof that the trail is complete, for ``GET /_bastion/admin/v1/audit`` and ``bastion admin
audit``. The rules (times, which records, the range's boundaries) are
:mod:`bastion.core.audit`; the proof's format and its offline check are
:mod:`bastion.ledger.audit_trail`.

:func:`build_trail` only reads: the store (the running server's, or a read-only one on a data
directory), a checkpoint and a :data:`~bastion.ledger.merkle.NodeReader` over that
checkpoint's tree (the ledger service's tiles, or the stored tiles and leaves).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from bastion.core import audit as rules
from bastion.ledger import merkle

if TYPE_CHECKING:
    from bastion.storage.interface import CheckpointRow, Store

#: Records per page of the admin API: the default and the most.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Leaves per page of the admin API (a page also ends here, with ``next_batch``): every leaf of
#: the range is in the answer (see :mod:`bastion.ledger.audit_trail`).
MAX_PAGE_LEAVES = 10_000


class TrailError(ValueError):
    """The trail cannot be made as asked (a ``from`` or ``since_checkpoint_size`` beyond the
    signed tree)."""


@dataclass(frozen=True)
class TrailQuery:
    """What an auditor asks for: the time range ``[since, until]`` (ms), the optional
    ``actor`` / ``subject`` filters, at most ``limit`` records and ``max_leaves`` leaves (None:
    no bound), the leaf ``start`` to continue from (a previous page's ``next_batch``) and the
    size of the checkpoint the previous audit saw."""

    since: int
    until: int
    actor: str | None = None
    subject: str | None = None
    limit: int | None = DEFAULT_LIMIT
    max_leaves: int | None = MAX_PAGE_LEAVES
    start: int | None = None
    since_checkpoint_size: int | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _record(entry: bytes) -> Any:
    try:
        return orjson.loads(entry)
    except orjson.JSONDecodeError:
        return None


def build_trail(
    store: Store, q: TrailQuery, *, checkpoint: CheckpointRow | None, checkpoint_text: str | None,
    node: merkle.NodeReader, log_keys: Sequence[str], old_checkpoint_text: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The trail of ``q`` (see :mod:`bastion.ledger.audit_trail` for the format) over the
    tree of ``checkpoint`` (``checkpoint_text``: its signed note with cosignatures;
    ``old_checkpoint_text``: the stored note of ``q.since_checkpoint_size``). Without a
    checkpoint the trail is empty with ``proof`` None: nothing is signed yet."""
    out: dict[str, Any] = {
        "since": q.since, "until": q.until, "actor": q.actor, "subject": q.subject,
        "records": [], "log_keys": list(log_keys), "proof": None,
    }  # fmt: skip
    size = checkpoint.size if checkpoint is not None else 0
    if q.start is not None and q.start >= max(size, 1):
        raise TrailError(f"'from' is beyond the signed tree ({size} leaves)")
    if q.since_checkpoint_size is not None and q.since_checkpoint_size > size:
        raise TrailError(f"since_checkpoint_size is beyond the latest checkpoint ({size})")
    if checkpoint is None or size == 0 or checkpoint_text is None:
        return out
    if q.start is not None:
        start = q.start
    else:
        before = store.audit_last_action_before(q.since - rules.MARGIN_MS, size)
        start = 0 if before is None else before
    boundary = store.audit_first_action_after(q.until + rules.MARGIN_MS, start + 1, size)
    last = size - 1 if boundary is None else boundary
    reason = "checkpoint" if boundary is None else "boundary"
    entries: list[bytes] = []
    listed: list[dict[str, Any]] = []
    end = start
    for row in store.ledger_iter_entries(start, batch=2000):
        if row.idx > last:
            break
        if row.idx != start + len(entries):
            raise TrailError(f"the ledger lacks leaf {start + len(entries)}: run "
                             "`bastion ledger verify`")  # fmt: skip
        entries.append(row.entry)
        end = row.idx
        record = _record(row.entry)
        if rules.selected(record, q.since, q.until, q.actor, q.subject):
            listed.append({"index": row.idx, "record": record})
        if row.idx == last:
            break
        if (q.limit is not None and len(listed) >= q.limit) or (
            q.max_leaves is not None and len(entries) >= q.max_leaves
        ):
            reason = "page"
            break
    if end != last and reason != "page":
        raise TrailError(f"the ledger lacks leaf {end + 1}: run `bastion ledger verify`")
    proof: dict[str, Any] = {
        "checkpoint": checkpoint_text,
        "tree_size": size,
        "start": start,
        "end": end,
        "from": q.start,
        "end_reason": reason,
        "margin_ms": rules.MARGIN_MS,
        "entries": [_b64(e) for e in entries],
        "start_inclusion_proof": [_b64(h) for h in merkle.inclusion_proof(start, size, node)],
        "end_inclusion_proof": [_b64(h) for h in merkle.inclusion_proof(end, size, node)],
    }
    if q.since_checkpoint_size is not None:
        proof["consistency"] = {
            "old_size": q.since_checkpoint_size,
            "proof": [
                _b64(h) for h in merkle.consistency_proof(q.since_checkpoint_size, size, node)
            ],  # fmt: skip
            "old_checkpoint": old_checkpoint_text,
        }
    out["records"] = listed
    out["proof"] = proof
    if reason == "page":
        out["next_batch"] = str(end + 1)
    return out


def trail_records(trail: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(index, record) of each record of a trail (for :func:`bastion.core.audit.csv_rows`)."""
    return [(r["index"], r["record"]) for r in trail["records"]]
