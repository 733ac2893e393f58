"""Attack: a new account invites many users (issue 9, "invite spam").

Stopped (the sixth distinct user a day-old account invites within an hour is refused, 403
``M_FORBIDDEN`` with a reason the sender can read), recorded (a ``guard_decisions`` row and a
``guard.decision`` ledger record per refusal), at the defaults. The victims: the users not
invited see no invite; everyone keeps talking and syncing.
"""

from __future__ import annotations

import pytest

from bastion.ledger import records
from tests.guard.attacks.victims import Told, victims_still_talk
from tests.guard.core_support import V3, create_room, decisions, ledger_actions, q
from tests.support.accounts import make_user
from tests.support.harness import ServerThread
from tests.support.rooms import sync


@pytest.fixture
def srv(tmp_path):
    s = ServerThread(tmp_path / "data").start()
    yield s
    s.stop()


def test_invite_spam_from_a_new_account_is_stopped_and_recorded(srv):
    Told(srv)
    spammer = make_user(srv)  # created just now: a new account
    targets = [make_user(srv) for _ in range(9)]
    spam_room = create_room(spammer, name="free coins")
    statuses = []
    for t in targets:
        r = spammer.request("POST", f"{V3}/rooms/{q(spam_room)}/invite", {"user_id": t.user_id})
        statuses.append(r.status)
        if r.status == 403:
            assert r.body["errcode"] == "M_FORBIDDEN"
            assert "invited 6 users" in r.body["error"]
    assert statuses == [200] * 5 + [403] * 4

    refused = [x for x in decisions(srv, subject=spammer.user_id)
               if x["source"] == "detector.invite_fanout"]  # fmt: skip
    assert len(refused) == 4 and {x["outcome"] for x in refused} == {"block"}
    assert {x["room_id"] for x in refused} == {spam_room}
    recorded = {r["details"]["decision_id"] for r in
                ledger_actions(srv, records.ACTION_GUARD_DECISION)}  # fmt: skip
    assert {x["id"] for x in refused} <= recorded

    # the victims: the last four got no invite; all of them chat and sync as before
    for t in targets[5:]:
        assert spam_room not in sync(t).get("rooms", {}).get("invite", {})
    assert spam_room in sync(targets[0]).get("rooms", {}).get("invite", {})
    a, b = targets[0], targets[8]
    room_id = create_room(a, preset="public_chat")
    assert b.request("POST", f"{V3}/join/{q(room_id)}", {}).status == 200
    victims_still_talk(room_id, a, b)
    # an established pattern is not hurt: a victim may invite a few people
    c = targets[1]
    assert a.request("POST", f"{V3}/rooms/{q(room_id)}/invite",
                     {"user_id": c.user_id}).status == 200  # fmt: skip
