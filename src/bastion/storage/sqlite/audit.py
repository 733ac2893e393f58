"""The audit trail's reads (issue 10, "Audit"): where a trail's leaf range starts and ends
(:mod:`bastion.core.audit`). Both use the index ``ledger_entries_kind_ts`` of migration 4 (the
action leaves by time); the leaves themselves are read with
:meth:`~bastion.storage.sqlite.ledger.LedgerStore.ledger_iter_entries`. Read only: they work on
a store opened with :func:`~bastion.storage.sqlite.ledger_audit.open_readonly_store` too."""

from __future__ import annotations

from bastion.storage.sqlite.base import StoreBase

STREAMS: list[tuple[str, str]] = []


class AuditTrailStore(StoreBase):
    """The two boundary reads of an audit trail (see the module docstring)."""

    def audit_last_action_before(self, ts: int, below: int) -> int | None:
        """The largest index below ``below`` of an action leaf with ``ts`` earlier than ``ts``."""
        row = self.db.read_one(
            "SELECT MAX(idx) FROM ledger_entries WHERE kind = 'action' AND ts < ? AND idx < ?",
            (ts, below),
        )
        return None if row is None else row[0]

    def audit_first_action_after(self, ts: int, start: int, below: int) -> int | None:
        """The smallest index in ``[start, below)`` of an action leaf with ``ts`` later than
        ``ts``."""
        row = self.db.read_one(
            "SELECT MIN(idx) FROM ledger_entries WHERE kind = 'action' AND ts > ?"
            " AND idx >= ? AND idx < ?",
            (ts, start, below),
        )
        return None if row is None else row[0]
