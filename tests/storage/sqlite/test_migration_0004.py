"""Migration 4 (``0004_ledger.py``): the ledger's tables. A database at version 3 with rows in it
(the cbbfc30 fixture, migrated) keeps every row; each event becomes an event leaf in insertion
order with its decision, each admin_audit row an action leaf with its original time, each device
key and each user's cross-signing keys a key-upload leaf (all marked migrated); admin_audit is
then a view over the action leaves that reads as the table did, and a server started on the
database goes on appending after them."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3

import orjson

from bastion.core.base64 import encode_base64
from bastion.core.canonical_json import canonical_json
from bastion.core.events import compute_reference_hash
from bastion.ledger import records as rec
from bastion.storage.sqlite import migrations as mig
from bastion.storage.sqlite.migrations import migrate
from bastion.storage.sqlite.store import SqliteStore
from tests.storage.sqlite.test_migrations import V3, as_device, connect, manifest, ok, restore
from tests.support.harness import ServerThread
from tests.support.room_builder import standard_room

__all__ = ["manifest"]  # the module fixture, shared

KEEP = ("users", "devices", "e2e_device_keys", "e2e_cross_signing_keys", "rooms",
        "current_state", "membership_events", "state_groups", "access_tokens")  # fmt: skip


EVENT_COLS = ("event_id, room_id, stream_pos, depth, type, state_key, sender, origin_server_ts,"
              " json, sg_before, sg_after, replaces_state, redacted_because, txn_user,"
              " txn_device, txn_id, rejected, soft_failed")  # fmt: skip


def _rows(path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(str(path))
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def _at_version_3(tmp_path):
    data = tmp_path / "data"
    restore(data)
    path = data / "homeserver.db"
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[:3]) == 3
    c.close()
    return data, path


def _sha(text: str) -> str:
    digest = hashlib.sha256(canonical_json(json.loads(text))).digest()
    return base64.b64encode(digest).decode().rstrip("=")


def _migrate_4(path) -> None:
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[:4]) == 4
    c.close()


def test_rows_are_kept_and_become_leaves(tmp_path):
    _, path = _at_version_3(tmp_path)
    before = {t: _rows(path, f"SELECT * FROM {t} ORDER BY rowid") for t in KEEP}  # noqa: S608
    before_events = _rows(path, f"SELECT {EVENT_COLS} FROM events ORDER BY rowid")  # noqa: S608
    events = _rows(path, "SELECT event_id, room_id, sender, type, state_key, origin_server_ts,"
                         " stream_pos, rejected, soft_failed FROM events ORDER BY rowid")  # fmt: skip
    audit = _rows(
        path, "SELECT id, ts, actor, action, target, details FROM admin_audit ORDER BY id"
    )
    device_keys = _rows(path, "SELECT user_id, device_id, key_json, ts FROM e2e_device_keys")
    cross = _rows(
        path, "SELECT user_id, key_type, public_key, key_json FROM e2e_cross_signing_keys"
    )
    assert len(events) >= 20 and len(audit) == 2 and len(device_keys) == 2 and len(cross) == 3
    _migrate_4(path)
    assert {t: _rows(path, f"SELECT * FROM {t} ORDER BY rowid") for t in KEEP} == before  # noqa: S608
    assert _rows(path, f"SELECT {EVENT_COLS} FROM events ORDER BY rowid") == before_events  # noqa: S608
    # Each event row names its leaf.
    assert _rows(path, "SELECT ledger_idx FROM events ORDER BY rowid") == [
        (i,) for i in range(len(events))]  # fmt: skip

    leaves = _rows(path, "SELECT idx, kind, event_id, subject, action, ts, entry"
                         " FROM ledger_entries ORDER BY idx")  # fmt: skip
    assert [r[0] for r in leaves] == list(range(len(events) + 2 + 2 + 1))
    for (eid, room, sender, etype, sk, ots, pos, rejected, soft), leaf in zip(
        events, leaves, strict=False
    ):
        record = orjson.loads(leaf[6])
        assert leaf[1:6] == ("event", eid, None, None, ots)
        assert record == rec.event_record(
            event_id=eid, room_id=room, sender=sender, type=etype, state_key=sk,
            origin_server_ts=ots, stream_pos=pos, decision=rec.decision_of(rejected, soft),
            migrated=True,
        )  # fmt: skip
        assert leaf[6] == rec.entry_bytes(record)
    actions = leaves[len(events) :]
    for (_, ts, actor, action, target, details), leaf in zip(audit, actions[:2], strict=True):
        assert orjson.loads(leaf[6]) == rec.action_record(
            action=action,
            actor=actor,
            ts=ts,
            target=target,
            details=json.loads(details),
            migrated=True,
        )
        assert leaf[1:6] == ("action", None, None, action, ts)
    keys = {}
    for leaf in actions[2:4]:
        record = orjson.loads(leaf[6])
        assert record["action"] == rec.ACTION_DEVICE_KEYS_UPLOAD and record["migrated"] is True
        assert leaf[3] == record["subject"] == record["actor"] and len(record["nonce"]) >= 16
        keys[(record["subject"], record["details"]["device_id"])] = record
    assert {k: (r["ts"], r["details"]["keys_sha256"]) for k, r in keys.items()} == {
        (u, d): (ts, _sha(kj)) for u, d, kj, ts in device_keys}  # fmt: skip
    record = orjson.loads(actions[4][6])
    assert record["action"] == rec.ACTION_CROSS_SIGNING_UPLOAD and record["migrated"] is True
    assert record["subject"] == cross[0][0] and actions[4][3] == cross[0][0]
    assert record["details"] == {"keys": {t: pk for _, t, pk, _ in cross},
                                 "sha256": {t: _sha(kj) for _, t, _, kj in cross}}  # fmt: skip

    # admin_audit: a view with the same columns, reading as the table did.
    view = _rows(path, "SELECT id, ts, actor, action, target, details FROM admin_audit"
                       " ORDER BY id LIMIT 2")  # fmt: skip
    assert [(ts, a, act, t, json.loads(d)) for _, ts, a, act, t, d in view] == [
        (ts, a, act, t, json.loads(d)) for _, ts, a, act, t, d in audit]  # fmt: skip
    assert _rows(path, "SELECT type FROM sqlite_master WHERE name = 'admin_audit'") == [("view",)]


def test_the_store_and_server_go_on_from_the_migrated_leaves(tmp_path, manifest):
    data, path = _at_version_3(tmp_path)
    n_events = _rows(path, "SELECT COUNT(*) FROM events")[0][0]
    store = SqliteStore(path)
    store.open()  # migrates to the newest version
    try:
        size = store.ledger_size()
        assert size == n_events + 5
        log = store.admin_audit_log()
        assert [r["action"] for r in log][-2:] == ["registration-token-create", "create-user"]
        lock = rec.action_record(action="lock", actor="cli", ts=7, target="@bob:localhost",
                                 details={"locked": True})  # fmt: skip
        store.transaction_sync(lambda conn: store.ledger_append_in(conn, lock))
        assert store.ledger_size() == size + 1
        top = dict(store.admin_audit_log(1)[0])
        assert (top["id"], top["actor"], top["action"], top["target"]) == (
            size, "cli", "lock", "@bob:localhost")  # fmt: skip
        assert "migrated" not in orjson.loads(store.ledger_entry(size).entry)  # type: ignore[union-attr]
    finally:
        store.close()
    srv = ServerThread(data, registration="token").start()
    try:
        ada = as_device(srv, manifest, "ada", "ADADESK")
        room_id = ok(ada.request("POST", f"{V3}/createRoom", {}))["room_id"]
        eid = ok(ada.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/t1",
                             {"msgtype": "m.text", "body": "after the migration"}))["event_id"]  # fmt: skip
        leaf = srv.hs.store.ledger_event_entry(eid)
        assert leaf is not None and leaf.idx > size
        assert "migrated" not in orjson.loads(leaf.entry)
    finally:
        srv.stop()


def test_v1_events_carry_their_reference_hash_and_flags_their_decision(tmp_path):
    """Events of room version 1 (opaque IDs) get the reference hash in their migrated leaf;
    the rejected and soft_failed columns become the decision."""
    path = tmp_path / "h.db"
    c = connect(path)
    assert migrate(c, str(path), mig.migrations()[:3]) == 3
    old = standard_room("1", members={"@bob:b.example": "join"})
    new = standard_room("10", room_id="!other:a.example")
    flags = [(0, 0), (1, 0), (0, 1), (0, 2), (1, 2)]
    c.execute("BEGIN")
    pos = 0
    for room in (old, new):
        c.execute("INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES (?,?,?,1)",
                  (room.room_id, room.version, room.creator))  # fmt: skip
        for i, (eid, ev) in enumerate(room.events.items()):
            pos += 1
            rejected, soft = flags[i % len(flags)]
            c.execute(
                "INSERT INTO events (event_id, room_id, stream_pos, depth, type, state_key,"
                " sender, origin_server_ts, json, rejected, soft_failed)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (eid, room.room_id, pos, ev["depth"], ev["type"], ev.get("state_key"),
                 ev["sender"], ev["origin_server_ts"], orjson.dumps(ev), rejected, soft),
            )  # fmt: skip
    c.execute("COMMIT")
    c.close()
    _migrate_4(path)
    leaves = [
        orjson.loads(r[0]) for r in _rows(path, "SELECT entry FROM ledger_entries ORDER BY idx")
    ]
    events = [*old.events.items(), *new.events.items()]
    assert [leaf["event_id"] for leaf in leaves] == [e for e, _ in events]
    for i, (leaf, (_, ev)) in enumerate(zip(leaves, events, strict=True)):
        if i < len(old.events):
            assert leaf["reference_hash"] == encode_base64(compute_reference_hash(ev, "1"))
        else:
            assert "reference_hash" not in leaf
    decisions = [leaf["decision"] for leaf in leaves[: len(old.events)]]
    assert (
        decisions
        == ["accepted", "rejected", "soft_failed", "outlier", "rejected"][: len(decisions)]
    )
