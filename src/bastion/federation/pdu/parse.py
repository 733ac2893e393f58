"""Receiving PDUs: the transaction, the event ID and checks 1–3.

S-S API "Transactions" (``PUT /send/{txnId}``: at most 50 PDUs and 100 EDUs, the body's
``origin`` is the authenticated server — :func:`bastion.core.pdu_checks.parse_transaction`),
"Checks performed on receipt of a PDU" (SPEC-MAP §2.4) checks 1–3, "Validating hashes and
signatures on received events", "Calculating the reference hash for an event" (the event ID of
room versions 3+), and room version 12's room ID (the create event's ID):

1. format — :func:`bastion.core.events.validate_pdu` for the room's version; failure: dropped;
2. signatures — the sender's server (and the event ID's in v1–v2) through the keyring, which
   fetches the keys it lacks; failure: dropped;
3. content hash — on a mismatch the event is carried on *redacted* ("Validating hashes and
   signatures on received events": "the server should … redact the event").

:class:`Dropped` carries the reason a PDU was not stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bastion.core.events import compute_event_id, redact, validate_pdu
from bastion.core.pdu_checks import parse_transaction, ref_ids
from bastion.core.room_versions import get_room_version
from bastion.errors import MatrixError

if TYPE_CHECKING:
    from bastion.federation.keyring import Keyring

__all__ = [
    "VERIFY_BATCH",
    "Dropped",
    "auth_ids",
    "check_format_and_signatures",
    "guess_event_id",
    "parse_events",
    "parse_transaction",
    "transaction_pdu_room",
    "verify_batch",
]

log = logging.getLogger("bastion.federation.pdu")

#: Signatures verified concurrently when checking a batch of events (a room's state).
VERIFY_BATCH = 256


class Dropped(Exception):
    """A PDU failed checks 1–2 (or cannot be processed): not stored."""


def guess_event_id(pdu: object, version: str | None = None) -> str | None:
    """An event's ID for logs and the /send response, when it can be computed."""
    if not isinstance(pdu, dict):
        return None
    try:
        return compute_event_id(pdu, version or "10")
    except Exception:  # noqa: BLE001 — hostile input: any failure means "no ID"
        return None


def transaction_pdu_room(pdu: dict[str, Any]) -> tuple[object, str | None]:
    """The room a PDU of a transaction names, and the room version to assume when the PDU itself
    tells it: a v12 create event has no ``room_id``, its room is named after its event ID."""
    room_id = pdu.get("room_id")
    if room_id is None and pdu.get("type") == "m.room.create":
        guess = guess_event_id(pdu, "12")
        return ("!" + guess[1:] if guess else None), "12"
    return room_id, None


def auth_ids(pdu: dict[str, Any], version: str) -> list[str]:
    """The IDs of the event's auth events; in v12 with the room's create event, whose ID is the
    room's (it is never listed)."""
    ids = ref_ids(pdu.get("auth_events"))
    if get_room_version(version).room_id_is_create_hash and pdu.get("type") != "m.room.create":
        ids.append("$" + pdu["room_id"][1:])
    return ids


async def check_format_and_signatures(
    keyring: Keyring, pdu: dict[str, Any], version: str
) -> tuple[dict[str, Any], str]:
    """Checks 1–3 on one PDU. Returns the event (redacted on a content hash mismatch) and its
    ID; raises :class:`Dropped` on a format or signature failure."""
    try:
        validate_pdu(pdu, version)
        eid = compute_event_id(pdu, version)
    except MatrixError as e:
        raise Dropped(f"format: {e.message}") from None
    is_v12_create = (
        get_room_version(version).room_id_is_create_hash and pdu["type"] == "m.room.create"
    )
    if not is_v12_create and not isinstance(pdu.get("room_id"), str):
        raise Dropped("format: no room_id")
    try:
        hash_ok = await keyring.verify_event_signatures(pdu, version)
    except MatrixError as e:
        raise Dropped(f"signatures: {e.message}") from None
    if not hash_ok:
        log.info("PDU %s: content hash mismatch; continuing with the redacted event", eid)
        pdu = redact(pdu, version)
    return pdu, eid


def parse_events(
    events: Iterable[object], version: str, room_id: str | None = None,
    *, expect: set[str] | None = None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Check 1 on a batch: event ID → event for those that are well formed for ``version``
    (junk skipped). With ``room_id``: only the room's events (and its v12 create event, whose ID
    is the room's); with ``expect``: only those IDs."""
    parsed: dict[str, dict[str, Any]] = {}
    for ev in events:
        if not isinstance(ev, dict):
            continue
        try:
            validate_pdu(ev, version)
            eid = compute_event_id(ev, version)
        except MatrixError:
            continue
        if expect is not None and eid not in expect:
            continue
        if (
            room_id is not None
            and ev.get("room_id") != room_id
            and not (ev.get("type") == "m.room.create" and "$" + room_id[1:] == eid)
        ):
            continue
        parsed[eid] = ev
    return parsed


async def verify_batch(
    keyring: Keyring, version: str, events: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Checks 2–3 on many events, ``VERIFY_BATCH`` at a time. Returns the events that pass
    (redacted where the content hash does not match); the others are dropped."""
    out: dict[str, dict[str, Any]] = {}
    items = list(events.items())
    for i in range(0, len(items), VERIFY_BATCH):
        chunk = items[i : i + VERIFY_BATCH]
        results = await asyncio.gather(
            *(keyring.verify_event_signatures(ev, version) for _, ev in chunk),
            return_exceptions=True,
        )
        for (eid, ev), res in zip(chunk, results, strict=True):
            if isinstance(res, BaseException):
                log.info("dropped event %s: signatures: %s", eid, res)
                continue
            out[eid] = ev if res else redact(ev, version)
    return out
