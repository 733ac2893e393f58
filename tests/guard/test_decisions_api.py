"""The decisions admin API (/_bastion/admin/v1/guard/decisions..., rooms/{roomId}/settings):
admins only, every call recorded, pagination newest first, filters, and hostile input answered
with Matrix errors (never a 500)."""

from __future__ import annotations

import pytest

from tests.guard.core_support import (
    GUARD,
    Scripted,
    admin_client,
    block,
    create_room,
    decisions,
    hold,
    ledger_actions,
    q,
    script_detectors,
    send,
)


@pytest.fixture
def setup(server, client):
    script_detectors(server, Scripted({"HOLD": hold(), "BLOCK": block()}))
    admin = admin_client(server)
    alice, bob = client.register(), client.register()
    room_id = create_room(alice, preset="public_chat")
    return admin, alice, bob, room_id


def test_admins_only(setup):
    admin, alice, _, room_id = setup
    for method, path in [
        ("GET", "/decisions"), ("GET", "/decisions/1"), ("POST", "/decisions/1/approve"),
        ("POST", "/decisions/1/reject"), ("POST", "/decisions/1/reverse"),
        ("GET", f"/rooms/{q(room_id)}/settings"), ("PUT", f"/rooms/{q(room_id)}/settings"),
    ]:  # fmt: skip
        r = alice.request(method, GUARD + path, {} if method != "GET" else None)
        assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN"), (method, path)
        assert alice.request(method, GUARD + path, token=None).status == 401


def test_list_is_newest_first_filtered_and_paginated(server, setup):
    admin, alice, bob, room_id = setup
    other = create_room(bob, preset="public_chat")
    for i in range(5):
        assert send(alice, room_id, "BLOCK").status == 403, i
    assert send(bob, other, "HOLD").status == 403
    r = admin.request("GET", GUARD + "/decisions", query={"limit": "2"})
    assert r.status == 200
    ids = [d["id"] for d in r.body["decisions"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 2
    seen = list(ids)
    while "next_batch" in r.body:
        r = admin.request("GET", GUARD + "/decisions",
                          query={"limit": "2", "from": r.body["next_batch"]})  # fmt: skip
        seen += [d["id"] for d in r.body["decisions"]]
    assert seen == sorted(seen, reverse=True) and len(seen) == 6
    by_subject = admin.request("GET", GUARD + "/decisions", query={"subject": bob.user_id}).body
    assert [d["status"] for d in by_subject["decisions"]] == ["held"]
    by_room = admin.request("GET", GUARD + "/decisions", query={"room_id": room_id}).body
    assert len(by_room["decisions"]) == 5 and "next_batch" not in by_room
    held = admin.request("GET", GUARD + "/decisions", query={"status": "held"}).body
    one = admin.request("GET", f"{GUARD}/decisions/{held['decisions'][0]['id']}").body
    assert one == held["decisions"][0]
    assert one["held"]["room_id"] == other and one["signals"][0]["source"] == "detector.test"
    # Every call (reads included) is an admin.request record.
    routes = [x["details"]["route"] for x in ledger_actions(server, "admin.request")]
    assert routes.count(f"GET {GUARD}/decisions") == 6
    assert routes.count(f"GET {GUARD}/decisions/{{id}}") == 1


@pytest.mark.parametrize(
    "query",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "-1"}, {"limit": "ten"}, {"limit": "1e3"},
     {"from": "x"}, {"from": "-5"}, {"from": "9" * 40}, {"limit": "9" * 40},
     {"status": "pending"}, {"subject": "@" + "a" * 300 + ":x"}, {"room_id": "!" * 256}],
)  # fmt: skip
def test_list_refuses_junk(setup, query):
    admin = setup[0]
    r = admin.request("GET", GUARD + "/decisions", query=query)
    assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM"), r.body


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "1.5", "9" * 19, "1e3", "%20", "01"])
def test_bad_decision_ids(setup, bad):
    admin = setup[0]
    for method, suffix in (("GET", ""), ("POST", "/approve"), ("POST", "/reverse")):
        r = admin.request(method, f"{GUARD}/decisions/{bad}{suffix}",
                          {} if method == "POST" else None)  # fmt: skip
        assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM"), (bad, suffix, r.body)


def test_unknown_decision_and_wrong_bodies(server, setup):
    admin, alice, _, room_id = setup
    assert admin.request("GET", f"{GUARD}/decisions/999999").status == 404
    assert admin.request("POST", f"{GUARD}/decisions/999999/reject", {}).status == 404
    assert send(alice, room_id, "HOLD").status == 403
    did = admin.request("GET", GUARD + "/decisions").body["decisions"][0]["id"]
    path = f"{GUARD}/decisions/{did}/reject"
    r = admin.request("POST", path, raw=b"not json")
    assert (r.status, r.body["errcode"]) == (400, "M_NOT_JSON")
    r = admin.request("POST", path, [1, 2])
    assert (r.status, r.body["errcode"]) == (400, "M_BAD_JSON")
    r = admin.request("POST", path, {"reason": 5})
    assert (r.status, r.body["errcode"]) == (400, "M_BAD_JSON")
    r = admin.request("POST", path, {"reason": "x" * 1001})
    assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM")
    assert decisions(server)[0]["status"] == "held"  # nothing changed
    r = admin.request("POST", f"{GUARD}/decisions/{did}/reverse", {})
    assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM")  # held, not done
    assert admin.request("POST", path).status == 200  # an empty body is fine
    assert admin.request("GET", f"{GUARD}/decisions/{did}").body["status"] == "rejected"


def test_room_settings(server, setup):
    admin, alice, _, room_id = setup
    path = f"{GUARD}/rooms/{q(room_id)}/settings"
    assert admin.request("GET", path).body == {"room_id": room_id, "settings": {}}
    body = {"classifier": {"hold_per_mille": 600, "block_per_mille": 900},
            "detectors": {"message_flood": False}, "reason": "a busy room"}  # fmt: skip
    r = admin.request("PUT", path, body)
    assert r.status == 200, r.body
    want = {"classifier": {"hold_per_mille": 600, "block_per_mille": 900},
            "detectors": {"message_flood": False}}  # fmt: skip
    assert r.body["settings"] == want
    assert admin.request("GET", path).body["settings"] == want
    # The parts read the thresholds also as fractions.
    assert dict(server.hs.guard.room_settings(room_id)) == {
        "classifier": {"hold_per_mille": 600, "block_per_mille": 900, "hold": 0.6, "block": 0.9},
        "detectors": {"message_flood": False}}  # fmt: skip
    reasons = [x.get("reason") for x in ledger_actions(server, "admin.request")
               if x["details"]["route"] == f"PUT {GUARD}/rooms/{{roomId}}/settings"]  # fmt: skip
    assert reasons == ["a busy room"]
    assert admin.request("PUT", path, {}).body["settings"] == {}
    assert server.hs.guard.room_settings(room_id) == {}


@pytest.mark.parametrize(
    "body",
    [{"classifier": {"hold_per_mille": 3000}}, {"classifier": {"hold": 1}}, {"classifier": []}, {"colour": "red"},
     {"detectors": {"DROP TABLE": True}}, {"reason": 7}],
)  # fmt: skip
def test_room_settings_refuse_junk(setup, body):
    admin, _, _, room_id = setup
    r = admin.request("PUT", f"{GUARD}/rooms/{q(room_id)}/settings", body)
    assert r.status == 400 and r.body["errcode"] in ("M_INVALID_PARAM", "M_BAD_JSON"), r.body
    assert admin.request("GET", f"{GUARD}/rooms/{q(room_id)}/settings").body["settings"] == {}


def test_room_settings_bad_rooms(setup):
    admin = setup[0]
    r = admin.request("GET", f"{GUARD}/rooms/{q('not a room')}/settings")
    assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM")
    r = admin.request("GET", f"{GUARD}/rooms/{q('!nope:localhost')}/settings")
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")
    r = admin.request("PUT", f"{GUARD}/rooms/{q('!nope:localhost')}/settings", {})
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")
