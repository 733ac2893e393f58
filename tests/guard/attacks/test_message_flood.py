"""Attack: one user floods a room with messages (issue 9, "a message flood").

Detected (a ``warn`` decision when the flooder passes the flood threshold), mitigated (the
flooder is throttled in that room: 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``, the start
of the throttle recorded once), nothing lost for a client that honours the 429, and the room's
other members keep talking and syncing.

The thresholds are lowered (warn above 3, throttle above 6 in 3 s instead of 10 and 20 in
60 s) so the detector acts inside the per-user rate limit's burst and the test does not wait
a minute; the defaults are tested in tests/guard/test_detectors.py.
"""

from __future__ import annotations

import time
import uuid

import pytest

from bastion.ledger import records
from tests.guard.attacks.victims import Told, victims_still_talk
from tests.guard.core_support import V3, create_room, decisions, ledger_actions, q
from tests.support.accounts import make_user
from tests.support.harness import ServerThread

GUARD = {"detectors": {"message_flood": {"window_seconds": 3, "warn_above": 3,
                                         "throttle_above": 6}}}  # fmt: skip


@pytest.fixture
def srv(tmp_path):
    s = ServerThread(tmp_path / "data", guard=GUARD).start()
    yield s
    s.stop()


def put(c, room_id: str, body: str, txn: str):
    return c.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/{txn}",
                     {"msgtype": "m.text", "body": body})  # fmt: skip


def test_message_flood_is_throttled_and_the_room_keeps_talking(srv):
    Told(srv)
    owner, member, flooder = make_user(srv), make_user(srv), make_user(srv)
    room_id = create_room(owner, preset="public_chat")
    for c in (member, flooder):
        assert c.request("POST", f"{V3}/join/{q(room_id)}", {}).status == 200

    statuses, refused = [], []
    for i in range(40):
        txn = uuid.uuid4().hex
        r = put(flooder, room_id, f"spam {i}", txn)
        statuses.append(r.status)
        if r.status == 429:
            assert r.body["errcode"] == "M_LIMIT_EXCEEDED" and r.body["retry_after_ms"] > 0
            refused.append((i, txn, r.body))
    assert statuses[:6] == [200] * 6 and set(statuses[6:]) == {429}
    # the 7th is the detector's throttle (later ones may meet the per-user rate limit first)
    first = refused[0][2]
    assert "flooding" in first["error"] and first["retry_after_ms"] <= 3000

    # detected: one warn when passing the threshold; the throttle's start recorded once
    flood = [
        x for x in decisions(srv, subject=flooder.user_id) if x["source"].startswith("detector.")
    ]  # (the rate limits record their own)
    assert sorted((x["source"], x["outcome"]) for x in flood) == [
        ("detector.message_flood", "block"), ("detector.message_flood", "warn")]  # fmt: skip
    throttle = next(x for x in flood if x["outcome"] == "block")
    assert throttle["details"]["throttle"] is True and throttle["room_id"] == room_id
    recorded = {r["details"]["decision_id"] for r in
                ledger_actions(srv, records.ACTION_GUARD_DECISION)}  # fmt: skip
    assert {x["id"] for x in flood} <= recorded

    # the victims: they talk and sync; the room holds only the 6 accepted flood messages
    seen = victims_still_talk(room_id, owner, member)
    assert sum(1 for b in seen if b.startswith("spam ")) == 6

    # a client that honours retry_after_ms loses nothing: the refused message goes through
    i, txn, body = refused[0]
    for _ in range(5):
        time.sleep(body["retry_after_ms"] / 1000 + 0.1)
        r = put(flooder, room_id, f"spam {i}", txn)
        if r.status != 429:
            break
        body = r.body
    assert r.status == 200, r.body
