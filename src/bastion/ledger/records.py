"""The ledger's records: what one leaf of the log says (pure: no I/O, no clock).

A leaf's *entry* is the canonical JSON (appendices, "Canonical JSON";
:mod:`bastion.core.canonical_json`) of a record dict; its leaf hash is RFC 9162 section 2.1's
``SHA-256(0x00 || entry)``, computed by the integrator, never here. Two kinds of record:

* ``event``: one event the server persisted, local or remote, whatever the server decided about
  it (accepted, rejected, soft-failed, or held as an outlier). It commits to the event's ID
  (the reference hash from room version 3 on: S-S API "Calculating the reference hash for an
  event"), room, sender, type, state key, origin timestamp, stream position and the decision —
  never its content, so that erasing content later leaves a commitment that still verifies. In
  room versions 1 and 2 the event ID is an opaque name chosen by its origin, so the record
  carries the reference hash as well.
* ``action``: one security-relevant action (an admin command, a login, a key upload, ...), with
  who did it (``actor``), to what (``target``), whose personal data it is (``subject``: served
  only to admins and that user), why, when, from where, and details. A record with a subject
  carries a random ``nonce`` so that its leaf hash cannot be confirmed by guessing its fields.

Records that a migration made from rows written before the ledger existed carry
``"migrated": true``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bastion.core.canonical_json import canonical_json

RECORD_VERSION = 1

KIND_EVENT = "event"
KIND_ACTION = "action"

DECISION_ACCEPTED = "accepted"
DECISION_REJECTED = "rejected"
DECISION_SOFT_FAILED = "soft_failed"
DECISION_OUTLIER = "outlier"
DECISIONS = frozenset(
    {DECISION_ACCEPTED, DECISION_REJECTED, DECISION_SOFT_FAILED, DECISION_OUTLIER}
)

ACTION_ACCOUNT_CREATE = "account.create"
ACTION_ACCOUNT_DEACTIVATE = "account.deactivate"
ACTION_ACCOUNT_LOCK = "account.lock"
ACTION_ACCOUNT_UNLOCK = "account.unlock"
ACTION_ACCOUNT_SUSPEND = "account.suspend"
ACTION_ACCOUNT_UNSUSPEND = "account.unsuspend"
ACTION_LOGIN_SUCCESS = "login.success"
ACTION_LOGIN_FAILURE = "login.failure"
ACTION_PASSWORD_CHANGE = "password.change"
ACTION_TOKEN_REVOKE = "token.revoke"
ACTION_DEVICE_DELETE = "device.delete"
ACTION_DEVICE_KEYS_UPLOAD = "device_keys.upload"
ACTION_CROSS_SIGNING_UPLOAD = "cross_signing.upload"
ACTION_SIGNATURES_UPLOAD = "signatures.upload"
ACTION_REGISTRATION_TOKEN_CREATE = "registration_token.create"
ACTION_REGISTRATION_TOKEN_UPDATE = "registration_token.update"
ACTION_REGISTRATION_TOKEN_DELETE = "registration_token.delete"
ACTION_SIGNING_KEY_ROTATE = "signing_key.rotate"
ACTION_ADMIN_REQUEST = "admin.request"
ACTION_LEDGER_CHECKPOINT_HALT = "ledger.checkpoint_halt"
# The guard (issue 9).
#: A verdict of the guard (a detector, the classifier, a policy list, a report) and what it did.
ACTION_GUARD_DECISION = "guard.decision"
#: A moderator's review of a decision: approve, reject, reverse.
ACTION_GUARD_REVIEW = "guard.review"
#: A login or registration throttle started (per account, address or prefix), or lifted.
ACTION_GUARD_THROTTLE = "guard.throttle"
ACTION_GUARD_THROTTLE_LIFT = "guard.throttle_lift"
#: A per-user rate-limit override set or removed.
ACTION_GUARD_RATE_OVERRIDE = "guard.rate_override"
#: A policy list subscribed to or dropped.
ACTION_GUARD_POLICY_LIST = "guard.policy_list"
#: A new-login notice sent to a user (new device or new network prefix).
ACTION_LOGIN_NOTICE = "login.notice"
# Compliance (issue 10).
#: The database's encryption at rest turned on, its key changed, or turned off.
ACTION_AT_REST_REKEY = "at_rest.rekey"
#: Events a user's erasure stripped to their redacted form (``details.events``: their IDs).
ACTION_COMPLIANCE_ERASE = "compliance.erase"
#: Events a retention policy purged to their redacted form (``details.events``: their IDs).
ACTION_COMPLIANCE_PURGE = "compliance.purge"
#: Local media a retention policy deleted, files, thumbnails and rows (``details.media``).
ACTION_COMPLIANCE_MEDIA_PURGE = "compliance.media_purge"
#: A legal hold set on a user or a room (retention leaves what it covers alone), or lifted.
ACTION_COMPLIANCE_LEGAL_HOLD = "compliance.legal_hold"
ACTION_COMPLIANCE_LEGAL_HOLD_LIFT = "compliance.legal_hold_lift"
#: One user's erasure (its summary: rows deleted per kind, never content; ``redact_federated``).
ACTION_COMPLIANCE_ERASURE = "compliance.erasure"
#: The actions whose records list events stripped of their content (``details.events``): a
#: stripped event without a redaction event is legitimate only when one of these lists it.
STRIPPING_ACTIONS = frozenset({ACTION_COMPLIANCE_ERASE, ACTION_COMPLIANCE_PURGE})
#: An export of one user's data (GDPR Art. 15/20): counts per kind, archive bytes and SHA-256.
ACTION_COMPLIANCE_EXPORT = "compliance.export"
# The Synapse-compatible admin API (issue 10).
#: A user's server-admin privilege granted or withdrawn (``details.admin``).
ACTION_ACCOUNT_ADMIN = "account.admin"
#: A room blocked or unblocked (``details.block``): no local user may join it while blocked.
ACTION_ROOM_BLOCK = "room.block"
#: A room deleted from the database (``details.events``: the IDs of the events removed, 200 per
#: record; ``details.total``: how many in all).
ACTION_ROOM_PURGE = "room.purge"


def decision_of(rejected: bool, soft_failed: int, outlier_flag: int = 2) -> str:
    """The decision an ``events`` row records: its ``rejected`` column first (PDU checks 4-5
    failed), then its ``soft_failed`` column (``outlier_flag``, 2 in the SQLite store: an
    outlier; any other non-zero value: soft-failed, check 6)."""
    if rejected:
        return DECISION_REJECTED
    if soft_failed == outlier_flag:
        return DECISION_OUTLIER
    if soft_failed:
        return DECISION_SOFT_FAILED
    return DECISION_ACCEPTED


def event_record(
    *,
    event_id: str,
    room_id: str,
    sender: str,
    type: str,  # noqa: A002 - the event field's name
    state_key: str | None,
    origin_server_ts: int,
    stream_pos: int,
    decision: str,
    reference_hash: str | None = None,
    redacted_on_receipt: bool = False,
    migrated: bool = False,
) -> dict[str, Any]:
    """The record of one persisted event (never its content). ``reference_hash`` (unpadded
    base64) only for room versions whose event IDs are not reference hashes (v1, v2).
    ``redacted_on_receipt``: a received event whose content hash did not match, stored in its
    redacted form as PDU check 3 requires (S-S API "Checks performed on receipt of a PDU"); the
    verifier accepts a remote event without content only when its leaf says so."""
    if decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}")
    record: dict[str, Any] = {
        "v": RECORD_VERSION,
        "kind": KIND_EVENT,
        "event_id": event_id,
        "room_id": room_id,
        "sender": sender,
        "type": type,
        "state_key": state_key,
        "origin_server_ts": origin_server_ts,
        "stream_pos": stream_pos,
        "decision": decision,
    }
    if reference_hash is not None:
        record["reference_hash"] = reference_hash
    if redacted_on_receipt:
        record["redacted_on_receipt"] = True
    if migrated:
        record["migrated"] = True
    return record


def action_record(
    *,
    action: str,
    actor: str,
    ts: int,
    target: str | None = None,
    subject: str | None = None,
    reason: str | None = None,
    origin: str | None = None,
    details: Mapping[str, Any] | None = None,
    nonce: str | None = None,
    migrated: bool = False,
) -> dict[str, Any]:
    """The record of one security-relevant action. ``actor``: a user ID, ``"cli"`` or
    ``"server"``; ``origin``: the request's client IP, ``"cli"`` or a server name; ``subject``:
    the user whose personal data this is (the store adds a ``nonce`` when there is none).
    Absent optional fields are left out of the record."""
    if not isinstance(action, str) or not action:
        raise ValueError("an action record needs an action")
    if not isinstance(actor, str) or not actor:
        raise ValueError("an action record needs an actor")
    if type(ts) is not int:
        raise ValueError("an action record's ts is an integer (milliseconds)")
    record: dict[str, Any] = {"v": RECORD_VERSION, "kind": KIND_ACTION, "action": action,
                              "actor": actor, "ts": ts}  # fmt: skip
    for key, value in (("target", target), ("subject", subject), ("reason", reason),
                       ("origin", origin), ("nonce", nonce)):  # fmt: skip
        if value is not None:
            record[key] = value
    if details is not None:
        record["details"] = dict(details)
    if migrated:
        record["migrated"] = True
    return record


def entry_bytes(record: Mapping[str, Any]) -> bytes:
    """A record's entry: its canonical JSON, the bytes the leaf hash is taken over.

    Raises ``M_BAD_JSON`` (:class:`~bastion.errors.MatrixError`) for a value canonical JSON
    cannot carry (a float, an integer beyond ±(2**53-1)); an entry is at most 65535 bytes
    (tlog-tiles entry bundles prefix each entry with a 16-bit length), else ValueError."""
    data = canonical_json(record)
    if len(data) > 0xFFFF:
        raise ValueError(f"a ledger entry is at most 65535 bytes, this one is {len(data)}")
    return data
