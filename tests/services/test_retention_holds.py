"""The legal-hold admin API (api/bastion_admin/legal_holds.py) and ``legal_holds_for``: admins
only, bad IDs are Matrix errors, every change a ``compliance.legal_hold`` /
``compliance.legal_hold_lift`` ledger record beside the call's ``admin.request`` record."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from bastion.ledger.records import (
    ACTION_ADMIN_REQUEST,
    ACTION_COMPLIANCE_LEGAL_HOLD,
    ACTION_COMPLIANCE_LEGAL_HOLD_LIFT,
)
from tests.support.accounts import assert_error, call_on_server, db_rows, make_admin
from tests.support.harness import Client, ServerThread

HOLDS = "/_bastion/admin/v1/legal_holds"


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


@pytest.fixture
def setup(tmp_path):
    srv = ServerThread(tmp_path / "data").start()
    try:
        admin = Client(srv.base_url).register("admin", "correct horse battery")
        make_admin(srv, admin.user_id)
        alice = Client(srv.base_url).register("alice", "correct horse battery")
        r = alice.request("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"})
        yield srv, admin, alice, r.body["room_id"]
    finally:
        srv.stop()


def _records(srv: ServerThread, action: str) -> list[dict]:
    rows = db_rows(srv, "SELECT entry FROM ledger_entries WHERE action = ? ORDER BY idx",
                   (action,))  # fmt: skip
    return [json.loads(r[0]) for r in rows]


def test_set_list_and_lift_with_records(setup):
    srv, admin, alice, room = setup
    r = admin.request("PUT", f"{HOLDS}/users/{_q(alice.user_id)}", {"reason": "case 7"})
    assert r.status == 200, r.body
    assert (r.body["kind"], r.body["target"], r.body["reason"], r.body["set_by"]) == (
        "user", alice.user_id, "case 7", admin.user_id)  # fmt: skip
    remote = "@someone:elsewhere.example"
    assert admin.request("PUT", f"{HOLDS}/users/{_q(remote)}", {"reason": "r"}).status == 200
    assert admin.request("PUT", f"{HOLDS}/rooms/{_q(room)}", {"reason": "case 8"}).status == 200
    # Setting again replaces the reason.
    assert admin.request("PUT", f"{HOLDS}/rooms/{_q(room)}", {"reason": "case 9"}).status == 200
    r = admin.request("GET", HOLDS)
    assert r.status == 200
    assert sorted((h["kind"], h["target"], h["reason"]) for h in r.body["legal_holds"]) == [
        ("room", room, "case 9"), ("user", alice.user_id, "case 7"),
        ("user", "@someone:elsewhere.example", "r")]  # fmt: skip
    holds = call_on_server(srv, srv.hs.store.legal_holds_for, alice.user_id, room)
    assert sorted(h["kind"] for h in holds) == ["room", "user"]
    assert call_on_server(srv, srv.hs.store.legal_holds_for, "@x:y", None) == []
    assert call_on_server(srv, srv.hs.store.legal_holds_for, None, "!other:localhost") == []
    set_records = _records(srv, ACTION_COMPLIANCE_LEGAL_HOLD)
    assert [(x["target"], x["actor"], x["reason"], x["details"]) for x in set_records] == [
        (alice.user_id, admin.user_id, "case 7", {"kind": "user", "new": True}),
        (remote, admin.user_id, "r", {"kind": "user", "new": True}),
        (room, admin.user_id, "case 8", {"kind": "room", "new": True}),
        (room, admin.user_id, "case 9", {"kind": "room", "new": False}),
    ]
    assert set_records[0]["subject"] == alice.user_id and "subject" not in set_records[2]
    r = admin.request("DELETE", f"{HOLDS}/users/{_q(alice.user_id)}", {"reason": "settled"})
    assert r.status == 200, r.body
    assert_error(admin.request("DELETE", f"{HOLDS}/users/{_q(alice.user_id)}"), 404,
                 "M_NOT_FOUND")  # fmt: skip
    lifts = _records(srv, ACTION_COMPLIANCE_LEGAL_HOLD_LIFT)
    assert [(x["target"], x["reason"]) for x in lifts] == [(alice.user_id, "settled")]
    routes = [x["details"]["route"] for x in _records(srv, ACTION_ADMIN_REQUEST)]
    assert routes.count(f"PUT {HOLDS}/users/{{userId}}") == 2
    assert routes.count(f"GET {HOLDS}") == 1
    assert routes.count(f"DELETE {HOLDS}/users/{{userId}}") == 2  # the 404 is recorded too
    assert call_on_server(srv, srv.hs.store.legal_holds_for, alice.user_id, None) == []


def test_non_admins_are_refused(setup):
    srv, _, alice, room = setup
    n = len(_records(srv, ACTION_COMPLIANCE_LEGAL_HOLD))
    assert_error(alice.request("GET", HOLDS), 403, "M_FORBIDDEN")
    assert_error(alice.request("PUT", f"{HOLDS}/users/{_q(alice.user_id)}", {"reason": "x"}),
                 403, "M_FORBIDDEN")  # fmt: skip
    assert_error(alice.request("PUT", f"{HOLDS}/rooms/{_q(room)}", {"reason": "x"}), 403,
                 "M_FORBIDDEN")  # fmt: skip
    assert_error(alice.request("DELETE", f"{HOLDS}/rooms/{_q(room)}"), 403, "M_FORBIDDEN")
    assert_error(Client(srv.base_url).request("GET", HOLDS, token=None), 401, "M_MISSING_TOKEN")
    assert len(_records(srv, ACTION_COMPLIANCE_LEGAL_HOLD)) == n
    assert call_on_server(srv, srv.hs.store.list_legal_holds) == []


@pytest.mark.parametrize(
    ("path", "body", "status", "errcode"),
    [
        ("users/alice", {"reason": "x"}, 400, "M_INVALID_PARAM"),
        ("users/" + _q("@a:"), {"reason": "x"}, 400, "M_INVALID_PARAM"),
        ("users/" + _q("@a:bad host"), {"reason": "x"}, 400, "M_INVALID_PARAM"),
        ("users/" + _q("@" + "a" * 300 + ":localhost"), {"reason": "x"}, 400, "M_INVALID_PARAM"),
        ("rooms/" + _q("#alias:localhost"), {"reason": "x"}, 400, "M_INVALID_PARAM"),
        ("rooms/" + _q("!short"), {"reason": "x"}, 400, "M_INVALID_PARAM"),
        ("rooms/" + _q("!unknown:localhost"), {"reason": "x"}, 404, "M_NOT_FOUND"),
        ("users/" + _q("@alice:localhost"), {}, 400, "M_MISSING_PARAM"),
        ("users/" + _q("@alice:localhost"), {"reason": ""}, 400, "M_MISSING_PARAM"),
        ("users/" + _q("@alice:localhost"), {"reason": 5}, 400, "M_BAD_JSON"),
        ("users/" + _q("@alice:localhost"), {"reason": "x" * 1001}, 400, "M_INVALID_PARAM"),
        ("users/" + _q("@alice:localhost"), [1], 400, "M_BAD_JSON"),
        ("groups/" + _q("@alice:localhost"), {"reason": "x"}, 404, "M_UNRECOGNIZED"),
    ],
)
def test_bad_requests_are_matrix_errors(setup, path, body, status, errcode):
    srv, admin, _, _ = setup
    r = admin.request("PUT", f"{HOLDS}/{path}", body)
    assert (r.status, r.body.get("errcode")) == (status, errcode), r.body
    assert call_on_server(srv, srv.hs.store.list_legal_holds) == []
    assert _records(srv, ACTION_COMPLIANCE_LEGAL_HOLD) == []
