"""The ledger's records (bastion.ledger.records): what an event leaf and an action leaf commit
to, and their canonical entry bytes."""

from __future__ import annotations

import orjson
import pytest

from bastion.errors import MatrixError
from bastion.ledger import records as rec


def _event(**kw):
    base = dict(event_id="$e", room_id="!r:x", sender="@a:x", type="m.room.message",
                state_key=None, origin_server_ts=5, stream_pos=7, decision=rec.DECISION_ACCEPTED)  # fmt: skip
    return rec.event_record(**{**base, **kw})


def test_event_record_commits_to_the_metadata_and_decision_never_content():
    r = _event()
    assert r == {"v": 1, "kind": "event", "event_id": "$e", "room_id": "!r:x", "sender": "@a:x",
                 "type": "m.room.message", "state_key": None, "origin_server_ts": 5,
                 "stream_pos": 7, "decision": "accepted"}  # fmt: skip
    assert "content" not in r and "reference_hash" not in r and "migrated" not in r
    assert _event(reference_hash="abc")["reference_hash"] == "abc"
    assert _event(migrated=True)["migrated"] is True
    for d in ("accepted", "rejected", "soft_failed", "outlier"):
        assert _event(decision=d)["decision"] == d
    with pytest.raises(ValueError, match="decision"):
        _event(decision="maybe")


def test_decision_of_reads_the_rejected_and_soft_failed_columns():
    assert rec.decision_of(False, 0) == rec.DECISION_ACCEPTED
    assert rec.decision_of(False, 1) == rec.DECISION_SOFT_FAILED
    assert rec.decision_of(False, 2) == rec.DECISION_OUTLIER
    assert rec.decision_of(True, 0) == rec.DECISION_REJECTED
    assert rec.decision_of(True, 2) == rec.DECISION_REJECTED  # a rejected outlier (check 4)


def test_action_record_leaves_out_absent_fields():
    r = rec.action_record(action=rec.ACTION_LOGIN_SUCCESS, actor="@a:x", ts=9)
    assert r == {"v": 1, "kind": "action", "action": "login.success", "actor": "@a:x", "ts": 9}
    full = rec.action_record(action="account.lock", actor="cli", ts=1, target="@b:x",
                             subject="@b:x", reason="spam", origin="cli",
                             details={"locked": True}, nonce="n", migrated=True)  # fmt: skip
    assert full == {"v": 1, "kind": "action", "action": "account.lock", "actor": "cli", "ts": 1,
                    "target": "@b:x", "subject": "@b:x", "reason": "spam", "origin": "cli",
                    "details": {"locked": True}, "nonce": "n", "migrated": True}  # fmt: skip
    for bad in (dict(action="", actor="a", ts=1), dict(action="x", actor="", ts=1),
                dict(action="x", actor="a", ts=1.5), dict(action="x", actor="a", ts=True)):  # fmt: skip
        with pytest.raises(ValueError):
            rec.action_record(**bad)


def test_action_names():
    names = [getattr(rec, n) for n in dir(rec) if n.startswith("ACTION_")]
    # (each name once: two kinds of record must never share one)
    assert len(names) == len(set(names))
    assert all(isinstance(n, str) and n.count(".") == 1 for n in names)
    assert {"compliance.erase", "compliance.purge", "compliance.erasure"} <= set(names)
    assert {"device_keys.upload", "cross_signing.upload", "admin.request"} <= set(names)
    assert {"guard.decision", "guard.review", "guard.throttle", "login.notice"} <= set(names)
    assert {"compliance.erase", "compliance.purge"} <= set(names)
    assert {"compliance.erase", "compliance.purge"} == rec.STRIPPING_ACTIONS
    assert {"account.admin", "room.block", "room.purge"} <= set(names)


def test_entry_bytes_is_canonical_json():
    r = _event(state_key="", type="m.room.name")
    data = rec.entry_bytes(r)
    assert data == orjson.dumps(r, option=orjson.OPT_SORT_KEYS)
    assert data.startswith(b'{"decision":"accepted","event_id":"$e"') and b" " not in data
    # Insertion order does not matter; unicode is written as UTF-8.
    a = rec.action_record(action="x", actor="@é:x", ts=1, details={"b": 1, "a": 2})
    assert rec.entry_bytes(a) == rec.entry_bytes(dict(reversed(list(a.items()))))
    assert "@é:x".encode() in rec.entry_bytes(a)


def test_entry_bytes_refuses_what_canonical_json_cannot_carry():
    with pytest.raises(MatrixError):
        rec.entry_bytes(rec.action_record(action="x", actor="a", ts=1, details={"f": 0.5}))
    with pytest.raises(MatrixError):
        rec.entry_bytes(_event(origin_server_ts=2**60))
    with pytest.raises(ValueError, match="65535"):
        rec.entry_bytes(rec.action_record(action="x", actor="a", ts=1, details={"k": "x" * 70000}))
