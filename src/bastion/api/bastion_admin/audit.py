"""The audit trail (issue 10, "Audit"): ``GET /_bastion/admin/v1/audit``.

Not part of the Matrix spec. Query parameters:

* ``since`` (required), ``until`` (default: now): ISO 8601 or ms since the epoch
  (:func:`bastion.core.audit.parse_time`; percent-encode a ``+`` offset);
* ``actor``, ``subject``: only records with that actor / subject (a user ID, ``cli``, ...);
* ``limit``: records per page, 1 to 1000 (default 100; a page also ends after 10000 leaves);
  ``from``: the ``next_batch`` of the previous page (a leaf index). Ask every page with the
  first page's ``until`` (its default is now) and ``since_checkpoint_size`` = the previous
  page's ``proof.tree_size``, so that ``bastion ledger verify-audit PAGE...`` can check the
  pages as one trail;
* ``since_checkpoint_size``: the size of the checkpoint the previous audit saw, for a
  consistency proof from it (RFC 9162 section 2.1.4);
* ``reason``: why the admin reads the trail (recorded).

Answers ``{"since", "until", "actor", "subject", "records": [{"index", "record"}],
"log_keys", "proof", "next_batch"?}``: every ledger ``action`` record in the range with the
proof that the list is complete, the leaf range's entries with inclusion proofs against the
latest signed checkpoint (format: :mod:`bastion.ledger.audit_trail`; offline check: ``bastion
ledger verify-audit FILE``). ``proof`` is null while the log has no checkpoint.

Server admins only (403 ``M_FORBIDDEN``); the call is itself an ``admin.request`` record
(``subject``: the ``subject`` filter), committed before the answer. Bad input: 400
``M_INVALID_PARAM`` (a bad time, ``since`` after ``until``, a limit out of range, a ``from`` or
``since_checkpoint_size`` beyond the signed tree, a filter over 255 characters), 400
``M_MISSING_PARAM`` without ``since``; 404 ``M_NOT_FOUND`` when the ledger is off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.api.admin_access import record_admin_read, require_admin
from bastion.api.http import Request, Router
from bastion.api.ledger import parse_uint
from bastion.core import audit as rules
from bastion.errors import invalid_param, missing_param, not_found
from bastion.services.audit import DEFAULT_LIMIT, MAX_LIMIT, TrailError, TrailQuery, build_trail

if TYPE_CHECKING:
    from bastion.server import HomeServer

PATH = "/_bastion/admin/v1/audit"
#: The longest ``actor`` / ``subject`` filter accepted (user IDs are at most 255 bytes).
MAX_FILTER_CHARS = 255


def _filter(req: Request, key: str) -> str | None:
    values = req.query_all(key)
    if not values or values[-1] == "":
        return None
    if len(values) > 1:
        raise invalid_param(f"give '{key}' at most once")
    if len(values[0]) > MAX_FILTER_CHARS:
        raise invalid_param(f"'{key}' is at most {MAX_FILTER_CHARS} characters")
    return values[0]


def _optional_uint(req: Request, key: str) -> int | None:
    value = req.query.get(key)
    return None if value is None or value == "" else parse_uint(value, key)


def parse_query(req: Request, now_ms: int) -> TrailQuery:
    """The trail an admin asks for (see the module docstring); Matrix errors on bad input."""
    q = req.query
    since = q.get("since")
    if not since:
        raise missing_param("'since' is required")
    try:
        lo, hi = rules.parse_range(since, q.get("until") or None, now_ms)
    except ValueError as e:
        raise invalid_param(str(e)) from None
    limit = _optional_uint(req, "limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    elif not 1 <= limit <= MAX_LIMIT:
        raise invalid_param(f"'limit' must be an integer from 1 to {MAX_LIMIT}")
    old = _optional_uint(req, "since_checkpoint_size")
    if old == 0:
        raise invalid_param("'since_checkpoint_size' is a checkpoint's size (1 or more)")
    return TrailQuery(
        since=lo, until=hi, actor=_filter(req, "actor"), subject=_filter(req, "subject"),
        limit=limit, start=_optional_uint(req, "from"), since_checkpoint_size=old,
    )  # fmt: skip


def register(router: Router, hs: HomeServer) -> None:
    store = hs.store

    async def get_audit(req: Request) -> dict:
        """GET /_bastion/admin/v1/audit — the trail of a time range with the ledger proofs
        that it is complete (C2SP tlog-checkpoint, RFC 9162 sections 2.1.3 and 2.1.4); admins
        only; recorded."""
        require_admin(req)
        query = parse_query(req, hs.now_ms())
        ledger = hs.ledger
        if ledger is None:
            raise not_found("the ledger is off on this server")
        cp = ledger.latest
        size = cp.size if cp is not None else 0
        if query.start is not None and query.start >= max(size, 1):
            raise invalid_param(f"'from' is beyond the signed tree ({size} leaves)")
        if query.since_checkpoint_size is not None and query.since_checkpoint_size > size:
            raise invalid_param(f"since_checkpoint_size is beyond the latest checkpoint ({size})")
        await record_admin_read(hs, req, target=None, subject=query.subject)
        text = old_text = None
        if cp is not None:
            text = (cp.note + b"".join(store.ledger_cosignatures(cp.size))).decode("utf-8")
        if query.since_checkpoint_size is not None:
            old = store.ledger_checkpoint(query.since_checkpoint_size)
            if old is not None:
                old_text = (old.note + b"".join(store.ledger_cosignatures(old.size))).decode()
        try:
            return build_trail(
                store, query, checkpoint=cp, checkpoint_text=text, node=ledger.node_reader(),
                log_keys=[k["vkey"] for k in ledger.all_vkeys()], old_checkpoint_text=old_text,
            )  # fmt: skip
        except TrailError as e:
            raise invalid_param(str(e)) from None

    router.add("GET", PATH, get_audit)
