"""Migration 4: the ledger's tables (issue 8; see :mod:`bastion.storage.sqlite.ledger`).

* ``ledger_entries``: one row per leaf, ``idx`` 0-based and dense (the next one is the largest
  plus one, taken in the writing transaction); ``entry`` is the canonical JSON the leaf hash is
  taken over (:mod:`bastion.ledger.records`); ``kind``, ``event_id``, ``subject``, ``action``
  and ``ts`` are copied out of it for the indexed reads (``ts``: an action's time, an event's
  origin timestamp). ``events.ledger_idx`` (new) names the latest leaf of each event.
* ``ledger_tiles`` (full tiles only), ``ledger_tree_state`` (the integrator's integrated size
  and right edge), ``ledger_checkpoints``, ``ledger_cosignatures``, ``ledger_witness_sizes`` (the
  log's view of each of its witnesses), ``ledger_anchors``, and ``witness_logs`` (as a witness
  for other logs: the latest checkpoint seen from each origin).

Backfill, in this order: every existing ``events`` row (in insertion order) becomes an event leaf
with its decision; every ``admin_audit`` row becomes an action leaf with its original time,
actor, action, target and details; every stored device key and every user's cross-signing keys
become one ``device_keys.upload`` / ``cross_signing.upload`` leaf. All of these records carry
``"migrated": true``. Then ``admin_audit`` becomes a view over the action leaves with the same
columns, so nothing is recorded twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sqlite3
import time

from bastion.core.canonical_json import canonical_json
from bastion.core.events import compute_reference_hash
from bastion.errors import MatrixError
from bastion.ledger.records import (
    ACTION_CROSS_SIGNING_UPLOAD,
    ACTION_DEVICE_KEYS_UPLOAD,
    action_record,
    decision_of,
    entry_bytes,
    event_record,
)
from bastion.storage.sqlite.migrations import run_script

OUTLIER = 2  # events.soft_failed of an outlier (storage/sqlite/federation_inbound.py)

SCHEMA = """
CREATE TABLE ledger_entries (
    idx INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    event_id TEXT,
    subject TEXT,
    action TEXT,
    ts INTEGER NOT NULL,
    entry BLOB NOT NULL
);
-- An event's latest leaf: events.ledger_idx (no index on a random event ID here: each would
-- cost every message send one more randomly placed page write).
ALTER TABLE events ADD COLUMN ledger_idx INTEGER;
CREATE INDEX ledger_entries_subject ON ledger_entries (subject, idx) WHERE subject IS NOT NULL;
CREATE INDEX ledger_entries_kind_ts ON ledger_entries (kind, ts) WHERE kind = 'action';
CREATE TABLE ledger_tiles (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE ledger_tree_state (
    k INTEGER PRIMARY KEY CHECK (k = 1),
    size INTEGER NOT NULL,
    edge BLOB NOT NULL
);
CREATE TABLE ledger_checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    note BLOB NOT NULL,
    ts INTEGER NOT NULL
);
CREATE TABLE ledger_cosignatures (
    size INTEGER NOT NULL,
    witness TEXT NOT NULL,
    line BLOB NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (size, witness)
);
CREATE TABLE ledger_witness_sizes (
    witness TEXT PRIMARY KEY,
    size INTEGER NOT NULL
);
CREATE TABLE ledger_anchors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    anchor TEXT NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    receipt TEXT NOT NULL,
    ts INTEGER NOT NULL
);
CREATE TABLE witness_logs (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note BLOB NOT NULL,
    ts INTEGER NOT NULL
);
"""

VIEW = """
CREATE VIEW admin_audit (id, ts, actor, action, target, details) AS
    SELECT idx, ts, json_extract(CAST(entry AS TEXT), '$.actor'), action,
           json_extract(CAST(entry AS TEXT), '$.target'),
           COALESCE(json_extract(CAST(entry AS TEXT), '$.details'), '{}')
    FROM ledger_entries WHERE kind = 'action';
"""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _sha256_of_json(text: str) -> str:
    """Unpadded base64 of the SHA-256 of a stored JSON object's canonical form (of its stored
    text when it has none)."""
    try:
        data = canonical_json(json.loads(text))
    except (ValueError, MatrixError):
        data = text.encode()
    return _b64(hashlib.sha256(data).digest())


def up(conn: sqlite3.Connection) -> None:
    run_script(conn, SCHEMA)
    idx = 0

    def append(record: dict, kind: str, event_id: str | None, subject: str | None,
               action: str | None, ts: int) -> None:  # fmt: skip
        nonlocal idx
        conn.execute(
            "INSERT INTO ledger_entries (idx, kind, event_id, subject, action, ts, entry)"
            " VALUES (?,?,?,?,?,?,?)",
            (idx, kind, event_id, subject, action, ts, entry_bytes(record)),
        )
        idx += 1

    versions = {r[0]: r[1] for r in conn.execute("SELECT room_id, room_version FROM rooms")}
    opaque = sorted(r for r, v in versions.items() if v in ("1", "2"))
    last = None
    while True:  # in batches of rows, by insertion order: the events table may be large
        rows = conn.execute(
            "SELECT rowid, event_id, room_id, sender, type, state_key, origin_server_ts,"
            " stream_pos, rejected, soft_failed,"
            " CASE WHEN room_id IN (SELECT value FROM json_each(?)) THEN json END"
            " FROM events WHERE ? IS NULL OR rowid > ? ORDER BY rowid LIMIT 5000",
            (json.dumps(opaque), last, last),
        ).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        for rowid, eid, room_id, sender, etype, state_key, ots, pos, rejected, soft, js in rows:
            ref = None
            if js is not None:
                try:
                    ref = _b64(compute_reference_hash(json.loads(js), versions[room_id]))
                except (ValueError, MatrixError):
                    ref = None
            record = event_record(
                event_id=eid, room_id=room_id, sender=sender, type=etype, state_key=state_key,
                origin_server_ts=ots, stream_pos=pos,
                decision=decision_of(rejected, soft, OUTLIER), reference_hash=ref, migrated=True,
            )  # fmt: skip
            conn.execute("UPDATE events SET ledger_idx = ? WHERE rowid = ?", (idx, rowid))
            append(record, "event", eid, None, None, ots)
    for ts, actor, action, target, details in conn.execute(
        "SELECT ts, actor, action, target, details FROM admin_audit ORDER BY id"
    ).fetchall():
        try:
            parsed = json.loads(details)
        except ValueError:
            parsed = {"text": details}
        record = action_record(
            action=action, actor=actor, ts=ts, target=target,
            details=parsed if isinstance(parsed, dict) else {"value": parsed}, migrated=True,
        )  # fmt: skip
        append(record, "action", None, None, action, ts)
    for user_id, device_id, key_json, ts in conn.execute(
        "SELECT user_id, device_id, key_json, ts FROM e2e_device_keys ORDER BY ts, user_id,"
        " device_id"
    ).fetchall():
        record = action_record(
            action=ACTION_DEVICE_KEYS_UPLOAD, actor=user_id, ts=ts, target=user_id,
            subject=user_id, nonce=secrets.token_urlsafe(16), migrated=True,
            details={"device_id": device_id, "keys_sha256": _sha256_of_json(key_json)},
        )  # fmt: skip
        append(record, "action", None, user_id, ACTION_DEVICE_KEYS_UPLOAD, ts)
    now = int(time.time() * 1000)
    cross: dict[str, tuple[dict, dict]] = {}
    for user_id, key_type, public_key, key_json in conn.execute(
        "SELECT user_id, key_type, public_key, key_json FROM e2e_cross_signing_keys"
        " ORDER BY user_id, key_type"
    ):
        keys, sums = cross.setdefault(user_id, ({}, {}))
        keys[key_type] = public_key
        sums[key_type] = _sha256_of_json(key_json)
    for user_id, (keys, sums) in cross.items():
        record = action_record(
            action=ACTION_CROSS_SIGNING_UPLOAD, actor=user_id, ts=now, target=user_id,
            subject=user_id, nonce=secrets.token_urlsafe(16), migrated=True,
            details={"keys": keys, "sha256": sums},
        )  # fmt: skip
        append(record, "action", None, user_id, ACTION_CROSS_SIGNING_UPLOAD, now)
    conn.execute("DROP TABLE admin_audit")
    run_script(conn, VIEW)
