"""Security-action records at the sites that make the actions (issue 8, "What goes in").

Every security-relevant action (an account created, locked or deactivated, a login that
succeeded or failed, a password change, a device deleted with its tokens and keys, device and
cross-signing keys published, signatures uploaded, registration tokens and signing keys changed,
every admin API call) is written to the ledger as an ``action`` record
(:func:`bastion.ledger.records.action_record`) **inside the same write function** as the change
it records, so both commit together or neither does. Where an action changes nothing in the
database (a failed login, an admin read), the record is the only write, committed before the
answer goes out.

Fields: ``actor`` (a user ID, ``"cli"`` for ``bastion admin …``), ``target``, ``subject`` (the
user whose personal data the record is: logins, devices, keys, passwords, account changes),
``reason`` (an admin's optional ``reason``), ``ts`` (ms), ``origin`` (the request's client IP,
the TCP peer as everywhere else in Bastion, or ``"cli"``) and ``details``.

Key transparency: a record of published keys carries the SHA-256 of the canonical JSON of the
key object exactly as stored (:func:`key_sha256`), so a verifier can check the keys a server
serves against the latest record for them. One-time and fallback keys are not recorded: there
are hundreds per device, each used once, and a forged one is caught by the device signature it
must carry, so recording them would cost a write per upload for no security value.

The values a client chooses (a login identifier, an admin's reason) are clipped so that no
record can exceed a ledger entry's 64 KiB.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bastion.core.base64 import encode_base64
from bastion.core.canonical_json import canonical_json
from bastion.errors import bad_json, invalid_param
from bastion.ledger import records

if TYPE_CHECKING:
    from bastion.storage.interface import Store, Txn

#: The longest client-chosen identifier kept in a record (a user ID is at most 255 bytes).
MAX_ID_CHARS = 255
#: The longest ``reason`` an admin may give.
MAX_REASON_CHARS = 1000
#: Signatures per ``signatures.upload`` record (so a record stays well under 64 KiB).
SIGNATURES_PER_RECORD = 50

CLI = "cli"


def key_sha256(key: Mapping[str, Any]) -> str:
    """Unpadded base64 of SHA-256 over the canonical JSON of a key object as stored."""
    return encode_base64(hashlib.sha256(canonical_json(key)).digest())


def clip(value: str, limit: int = MAX_ID_CHARS) -> str:
    """A client-chosen string, cut to ``limit`` characters."""
    return value if len(value) <= limit else value[:limit]


def admin_reason(body: Mapping[str, Any]) -> str | None:
    """The optional ``reason`` of an admin request body (``M_BAD_JSON`` if not a string,
    ``M_INVALID_PARAM`` if longer than :data:`MAX_REASON_CHARS`)."""
    reason = body.get("reason")
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise bad_json("'reason' must be a string")
    if len(reason) > MAX_REASON_CHARS:
        raise invalid_param(f"'reason' is at most {MAX_REASON_CHARS} characters")
    return reason


def record_in(
    store: Store,
    conn: Txn,
    action: str,
    *,
    actor: str,
    ts: int,
    target: str | None = None,
    subject: str | None = None,
    reason: str | None = None,
    origin: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> int:
    """Append one action record inside the caller's write function; its ledger index."""
    record = records.action_record(
        action=action, actor=actor, ts=ts, target=target, subject=subject, reason=reason,
        origin=origin, details=details,
    )  # fmt: skip
    return store.ledger_append_in(conn, record)


async def record(
    store: Store,
    action: str,
    *,
    actor: str,
    ts: int,
    target: str | None = None,
    subject: str | None = None,
    reason: str | None = None,
    origin: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> int:
    """An action that changes nothing else (a failed login, an admin read): the record in a
    write of its own, committed when this returns."""

    def fn(conn: Txn) -> int:
        return record_in(
            store, conn, action, actor=actor, ts=ts, target=target, subject=subject,
            reason=reason, origin=origin, details=details,
        )  # fmt: skip

    return await store.transaction(fn)


def admin_request_in(
    store: Store, conn: Txn, *, actor: str, route: str, ts: int, target: str | None,
    reason: str | None, origin: str | None, subject: str | None = None,
) -> int:  # fmt: skip
    """The ``admin.request`` record of one admin API call (``route``: method and path
    pattern; ``subject``: the local user whose data the call reads or changes)."""
    return record_in(
        store, conn, records.ACTION_ADMIN_REQUEST, actor=actor, ts=ts,
        target=None if target is None else clip(target), subject=subject, reason=reason,
        origin=origin, details={"route": route},
    )  # fmt: skip
