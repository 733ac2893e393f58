"""The audit trail's pure decisions (issue 10, "Audit"): the time range an auditor asks for,
which ledger records belong in the trail, where the trail's leaf range starts and ends, and
the CSV an auditor opens in a spreadsheet. No I/O, no clock.

* **Times** are ISO 8601 (``2026-12-06T19:00:00Z``, an offset, or a date: midnight UTC; no
  offset means UTC) or milliseconds since the Unix epoch (a decimal integer: digits alone are
  always milliseconds, so ISO 8601's basic date form ``20261206`` is not accepted as a date).
* **The trail** of ``[since, until]`` is every ``action`` record of the ledger whose ``ts`` lies
  in the range (both ends included) and whose ``actor`` / ``subject`` equal the filters when
  given (:func:`selected`).
* **Its leaf range.** An action record's ``ts`` is the server's clock right before the write
  that appends it, and leaves are appended in commit order, so ``ts`` grows with the leaf
  index up to the write queue's delay (milliseconds). The trail's range ``[start, end]`` of
  leaves runs from the last action leaf with ``ts < since - MARGIN_MS`` (the *start boundary*;
  leaf 0 when there is none) to the first action leaf with ``ts > until + MARGIN_MS`` (the *end
  boundary*; the last leaf of the signed tree when there is none yet): every record written
  within the range then lies inside, even one committed up to :data:`MARGIN_MS` after a later
  one (:func:`is_start_boundary`, :func:`is_end_boundary`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

#: How far an action record's ``ts`` may lag behind the order of its leaf (see the module).
MARGIN_MS = 60_000
#: Times beyond this are refused (canonical JSON integers stop at 2**53 - 1).
MAX_TIME_MS = 2**53 - 1
#: The longest time text accepted.
MAX_TIME_CHARS = 64
#: The CSV columns (:func:`csv_rows`).
CSV_COLUMNS = ("index", "time", "ts", "action", "actor", "subject", "target", "reason",
               "origin", "route", "details")  # fmt: skip

_MS = re.compile(r"[0-9]{1,16}")
#: A cell a spreadsheet would read as a formula (OWASP "CSV Injection"): leading ``=``, ``+``,
#: ``-``, ``@``, a tab or a carriage return (also after leading spaces).
_FORMULA = re.compile(r"^[ ]*[=+\-@\t\r]")
#: A user ID of the strict grammar (appendices, "User Identifiers": localpart ``[a-z0-9._=-/+]``,
#: a server name without spaces, brackets of IPv6 excluded): a spreadsheet cannot run anything
#: from it (no ``(``, ``|``, ``!`` or space), so it stays as it is, readable.
_PLAIN_USER_ID = re.compile(r"@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(?::[0-9]{1,5})?")


def parse_time(text: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 time or a decimal ms count; ValueError on
    anything else (an empty or over-long text, a time before 1970 or beyond 2**53 - 1 ms)."""
    if not isinstance(text, str) or not text or len(text) > MAX_TIME_CHARS:
        raise ValueError("a time is ISO 8601 or milliseconds since the epoch")
    if _MS.fullmatch(text):
        ms = int(text)
    else:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {text!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ms = (parsed - datetime(1970, 1, 1, tzinfo=UTC)) // _ONE_MS
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValueError("a time must lie between 1970 and 2**53 - 1 ms")
    return ms


_ONE_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


def parse_range(since: str, until: str | None, now_ms: int) -> tuple[int, int]:
    """``(since, until)`` in ms (``until`` None: ``now_ms``); ValueError when a time is bad or
    ``since`` is after ``until``."""
    lo = parse_time(since)
    hi = now_ms if until is None else parse_time(until)
    if lo > hi:
        raise ValueError("'since' is after 'until'")
    return lo, hi


def iso_time(ms: int) -> str:
    """``ms`` as ISO 8601 UTC with milliseconds (``2026-12-06T19:00:00.000Z``)."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _is_action(record: Any) -> bool:
    return (
        isinstance(record, Mapping)
        and record.get("kind") == "action"
        and type(record.get("ts")) is int
    )


def selected(
    record: Any, since: int, until: int, actor: str | None = None, subject: str | None = None
) -> bool:
    """Whether a leaf's record belongs in the trail (see the module docstring)."""
    if not _is_action(record) or not since <= record["ts"] <= until:
        return False
    if actor is not None and record.get("actor") != actor:
        return False
    return subject is None or record.get("subject") == subject


def is_start_boundary(record: Any, since: int) -> bool:
    """Whether a leaf's record may start a trail of ``since``: an action written more than
    :data:`MARGIN_MS` before it."""
    return _is_action(record) and record["ts"] < since - MARGIN_MS


def is_end_boundary(record: Any, until: int) -> bool:
    """Whether a leaf's record may end a trail of ``until``: an action written more than
    :data:`MARGIN_MS` after it."""
    return _is_action(record) and record["ts"] > until + MARGIN_MS


def neutralise_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: a value that would start a formula gets a
    leading ``'`` (OWASP "CSV Injection"), except a user ID of the strict grammar. Quoting is
    the CSV writer's (RFC 4180)."""
    if _PLAIN_USER_ID.fullmatch(value):
        return value
    return "'" + value if _FORMULA.match(value) else value


def csv_rows(records: Iterable[tuple[int, Mapping[str, Any]]]) -> list[list[str]]:
    """The trail as CSV rows (header first, :data:`CSV_COLUMNS`), every cell neutralised."""
    import orjson

    rows = [list(CSV_COLUMNS)]
    for index, r in records:
        details = r.get("details")
        route = details.get("route") if isinstance(details, Mapping) else None
        cells = [
            str(index), iso_time(r["ts"]), str(r["ts"]), r.get("action"), r.get("actor"),
            r.get("subject"), r.get("target"), r.get("reason"), r.get("origin"), route,
            None if details is None else orjson.dumps(details, option=orjson.OPT_SORT_KEYS).decode(),
        ]  # fmt: skip
        rows.append([neutralise_cell("" if c is None else str(c)) for c in cells])
    return rows
