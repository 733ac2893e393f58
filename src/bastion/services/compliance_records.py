"""Stripping events of their content, with the ledger records that say so (issue 10).

Erasure (GDPR Art. 17) and retention (Art. 5(1)(e)) both remove what people wrote while the
room's graph stays: :meth:`~bastion.storage.interface.EventContentsStore.strip_event_contents_in`
rewrites each event to its redacted form. The ledger keeps every event's leaf (a leaf holds no
content) and gains one action record per :data:`EVENTS_PER_RECORD` stripped events, listing
their IDs in ``details.events``; ``bastion ledger verify`` accepts an event stored without its
content only when a redaction event in the ledger or one of these records accounts for it, so
an auditor can tell history that was erased from history that was forged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bastion.ledger.records import STRIPPING_ACTIONS
from bastion.services.security_records import record_in

if TYPE_CHECKING:
    from bastion.storage.interface import Store, Txn

__all__ = ["EVENTS_PER_RECORD", "strip_and_record_in"]

#: Event IDs listed per record: an event ID is at most 255 bytes, a ledger entry at most
#: 64 KiB.
EVENTS_PER_RECORD = 200


def strip_and_record_in(
    store: Store, conn: Txn, action: str, event_ids: Sequence[str], *, actor: str, ts: int,
    subject: str | None = None, target: str | None = None, reason: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> list[str]:  # fmt: skip
    """Inside a write: strip ``event_ids`` of their content and append one ``action`` record
    (one of :data:`~bastion.ledger.records.STRIPPING_ACTIONS`) per :data:`EVENTS_PER_RECORD`
    events actually stripped, with ``details`` plus ``events`` (their IDs). The IDs stripped;
    none (and no record) when every event was stripped already."""
    if action not in STRIPPING_ACTIONS:
        raise ValueError(f"{action!r} is not an action that strips events")
    stripped = store.strip_event_contents_in(conn, event_ids)
    for i in range(0, len(stripped), EVENTS_PER_RECORD):
        batch = stripped[i : i + EVENTS_PER_RECORD]
        record_in(
            store, conn, action, actor=actor, ts=ts, target=target, subject=subject,
            reason=reason, details={**(details or {}), "events": batch},
        )  # fmt: skip
    return stripped
