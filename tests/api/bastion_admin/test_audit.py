"""``GET /_bastion/admin/v1/audit``, ``bastion admin audit`` and ``bastion ledger verify-audit``
(issue 10, "Audit"): admin reads are recorded with their reason, the trail of a time range lists
them with proofs that verify offline against the log's key, the call itself is recorded, and
hostile input gets Matrix errors (never a 500)."""

from __future__ import annotations

import csv
import json
import time
import urllib.parse

import pytest
from aiohttp.test_utils import make_mocked_request

from bastion.api.admin_access import query_reason, request_reason
from bastion.api.http import Request
from bastion.cli import main
from bastion.errors import MatrixError
from bastion.ledger.audit_trail import verify_pages, verify_trail
from bastion.ledger.note import parse_vkey
from tests.support.accounts import make_user
from tests.support.harness import Client, ServerThread

AUDIT = "/_bastion/admin/v1/audit"
V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"
GUARD = "/_bastion/admin/v1/guard"
HOSTILE = "=cmd|' /C calc'!A0"


def wait_covered(srv: ServerThread) -> int:
    """Wait until a checkpoint covers every leaf written so far; its size."""
    size = srv.hs.store.ledger_size()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        cp = srv.hs.ledger.latest
        if cp is not None and cp.size >= size:
            return cp.size
        time.sleep(0.05)
    pytest.fail("no checkpoint")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = ServerThread(tmp_path_factory.mktemp("audit") / "d", ledger_checkpoint_interval=0.2)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def world(srv):
    """An admin who read alice's data with and without reasons, then a checkpoint."""
    t0 = srv.hs.now_ms() - 1
    admin = make_user(srv, "root", admin=True)
    alice = make_user(srv, "alice")
    a = alice.user_id
    reads = [
        ("GET", f"{V3}/admin/whois/{a}", {"reason": "ticket 7: account takeover"}),
        ("GET", f"{V3}/admin/whois/{a}", None),
        ("GET", f"{V1}/admin/lock/{a}", {"reason": HOSTILE}),
        ("GET", f"{GUARD}/users/{a}/rate_limits", {"reason": "bridge limits check"}),
        ("GET", f"{GUARD}/decisions", {"reason": "weekly review"}),
        ("GET", f"{GUARD}/throttles", {"reason": "login storm"}),
        ("GET", f"{GUARD}/policy_lists", {"reason": "list check"}),
    ]
    for method, path, query in reads:
        r = admin.request(method, path, query=query)
        assert r.status == 200, (path, r.body)
    r = admin.request("PUT", f"{V1}/admin/lock/{a}", {"locked": False, "reason": "body reason"})
    assert r.status == 200, r.body
    wait_covered(srv)
    keys = Client(srv.base_url).request("GET", "/_bastion/ledger/v1/keys").body
    return {"t0": t0, "admin": admin, "alice": alice, "vkey": keys["keys"][0]["vkey"]}


def audit(world, **query):
    return world["admin"].request("GET", AUDIT, query={"since": str(world["t0"]), **query})


def verify(world, doc, previous=None):
    return verify_trail(doc, [parse_vkey(world["vkey"])], previous)


def reads_of(doc, route_part: str) -> list[dict]:
    return [
        r["record"]
        for r in doc["records"]
        if r["record"]["action"] == "admin.request"
        and route_part in r["record"]["details"]["route"]
    ]


def test_admin_reads_are_recorded_with_their_reason(world):
    r = audit(world)
    assert r.status == 200, r.body
    doc = r.body
    alice = world["alice"].user_id
    whois = reads_of(doc, "/admin/whois/")
    assert [w.get("reason") for w in whois] == ["ticket 7: account takeover", None]
    assert all(w["subject"] == alice and w["actor"] == "@root:localhost" for w in whois)
    assert reads_of(doc, "GET /_matrix/client/v1/admin/lock/")[0]["reason"] == HOSTILE
    assert reads_of(doc, "rate_limits")[0]["reason"] == "bridge limits check"
    assert reads_of(doc, "GET /_bastion/admin/v1/guard/decisions")[0]["reason"] == "weekly review"
    assert reads_of(doc, "guard/throttles")[0]["reason"] == "login storm"
    assert reads_of(doc, "guard/policy_lists")[0]["reason"] == "list check"
    assert reads_of(doc, "PUT /_matrix/client/v1/admin/lock/")[0]["reason"] == "body reason"
    assert any(r["record"]["action"] == "account.unlock" for r in doc["records"])
    check = verify(world, doc)
    assert check.ok, check.problems


def test_a_bad_reason_is_refused_and_nothing_is_recorded(srv, world):
    admin, alice = world["admin"], world["alice"].user_id
    before = srv.hs.store.ledger_size()
    for query in ({"reason": "x" * 1001}, [("reason", "a"), ("reason", "b")]):
        path = f"{V3}/admin/whois/{alice}?" + urllib.parse.urlencode(query)
        r = admin.request("GET", path)
        assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM", r.body
    r = admin.request("GET", f"{GUARD}/throttles", query={"reason": "y" * 1001})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    assert srv.hs.store.ledger_size() == before
    r = admin.request("GET", f"{V3}/admin/whois/{alice}", query={"reason": "z" * 1000})
    assert r.status == 200


def test_filters_and_the_call_itself_is_recorded(srv, world):
    alice = world["alice"].user_id
    r = audit(world, actor="@root:localhost", subject=alice, reason="quarterly review")
    assert r.status == 200, r.body
    records = [x["record"] for x in r.body["records"]]
    assert records and all(x["actor"] == "@root:localhost" and x["subject"] == alice
                           for x in records)  # fmt: skip
    assert verify(world, r.body).ok
    wait_covered(srv)
    doc = audit(world, actor="@root:localhost").body
    calls = reads_of(doc, "GET /_bastion/admin/v1/audit")
    assert {(c.get("reason"), c.get("subject")) for c in calls} >= {
        (None, None),  # the first test's call
        ("quarterly review", alice),
    }
    assert audit(world, actor="@nobody:localhost").body["records"] == []


def test_pages_of_at_most_limit_records_chain_and_verify(world, tmp_path, capsys):
    whole = audit(world).body
    docs, query = [], {"limit": "3"}
    for _ in range(50):
        r = audit(world, **query)
        assert r.status == 200, r.body
        assert len(r.body["records"]) <= 3
        docs.append(r.body)
        if "next_batch" not in r.body:
            break
        # The next page from where this one ended, proving the log grew from its checkpoint.
        # (``until`` as the first page had it: its default is "now".)
        query = {"limit": "3", "from": r.body["next_batch"], "until": str(r.body["until"]),
                 "since_checkpoint_size": str(r.body["proof"]["tree_size"])}  # fmt: skip
    assert len(docs) > 1
    check = verify_pages(docs, [parse_vkey(world["vkey"])])
    assert check.ok, check.problems
    seen = [x["index"] for d in docs for x in d["records"]]
    assert seen[: len(whole["records"])] == [x["index"] for x in whole["records"]]
    files = []
    for n, doc in enumerate(docs):
        files.append(tmp_path / f"page{n}.json")
        files[-1].write_text(json.dumps(doc))
    names = [str(f) for f in files]
    assert main(["ledger", "verify-audit", *names, "--key", world["vkey"]]) == 0
    assert main(["ledger", "verify-audit", names[0], *names[2:], "--key", world["vkey"]]) == 1
    assert "does not start where page 1 ended" in capsys.readouterr().out


def test_consistency_from_the_previous_audit(srv, world):
    first = audit(world).body
    old_size = first["proof"]["tree_size"]
    world["admin"].request("GET", f"{V3}/admin/whois/{world['alice'].user_id}")
    wait_covered(srv)
    doc = audit(world, since_checkpoint_size=str(old_size)).body
    assert doc["proof"]["tree_size"] > old_size
    previous = first["proof"]["checkpoint"].encode()
    check = verify(world, doc, previous)
    assert check.ok, check.problems


@pytest.mark.parametrize(
    ("query", "errcode"),
    [
        ({}, "M_MISSING_PARAM"),
        ({"since": "yesterday"}, "M_INVALID_PARAM"),
        ({"since": "2026-13-01"}, "M_INVALID_PARAM"),
        ({"since": "-1"}, "M_INVALID_PARAM"),
        ({"since": "2000", "until": "1000"}, "M_INVALID_PARAM"),
        ({"since": "0", "until": "9" * 40}, "M_INVALID_PARAM"),
        ({"since": "0", "limit": "1001"}, "M_INVALID_PARAM"),
        ({"since": "0", "limit": "0"}, "M_INVALID_PARAM"),
        ({"since": "0", "limit": "ten"}, "M_INVALID_PARAM"),
        ({"since": "0", "from": "99999999"}, "M_INVALID_PARAM"),
        ({"since": "0", "from": "-3"}, "M_INVALID_PARAM"),
        ({"since": "0", "since_checkpoint_size": "99999999"}, "M_INVALID_PARAM"),
        ({"since": "0", "since_checkpoint_size": "0"}, "M_INVALID_PARAM"),
        ({"since": "0", "actor": "@" + "a" * 300}, "M_INVALID_PARAM"),
        ({"since": "0", "reason": "r" * 1001}, "M_INVALID_PARAM"),
    ],
)
def test_bad_input_is_a_matrix_error(world, query, errcode):
    r = world["admin"].request("GET", AUDIT, query=query)
    assert r.status == 400 and r.body["errcode"] == errcode, r.body


def test_non_admins_are_refused(srv, world):
    r = world["alice"].request("GET", AUDIT, query={"since": "0"})
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    r = Client(srv.base_url).request("GET", AUDIT, query={"since": "0"})
    assert r.status == 401


def test_the_limit_is_at_most_1000(world):
    r = audit(world, limit="1000")
    assert r.status == 200 and len(r.body["records"]) <= 1000


# -- the command line ---------------------------------------------------------------------------


def test_the_cli_trail_verifies_offline_and_its_csv_is_spreadsheet_safe(srv, world, tmp_path,
                                                                        capsys):  # fmt: skip
    data = str(srv.config.data_dir)
    out = tmp_path / "trail.json"
    since = str(world["t0"])
    assert main(["admin", "audit", "--data-dir", data, "--since", since, "-o", str(out)]) == 0
    capsys.readouterr()
    code = main(["ledger", "verify-audit", str(out), "--key", world["vkey"], "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["ok"], result
    doc = json.loads(out.read_text())
    assert any(r["record"].get("reason") == HOSTILE for r in doc["records"])
    # A record changed in the file fails.
    doc["records"][0]["record"]["actor"] = "@someone-else:localhost"
    out.write_text(json.dumps(doc))
    assert main(["ledger", "verify-audit", str(out), "--key", world["vkey"]]) == 1
    assert "FAILED" in capsys.readouterr().out
    # CSV: the hostile reason is text, not a formula.
    csv_out = tmp_path / "trail.csv"
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(world["t0"] // 1000))
    assert main(["admin", "audit", "--data-dir", data, "--since", iso, "--actor",
                 "@root:localhost", "--format", "csv", "-o", str(csv_out)]) == 0  # fmt: skip
    rows = list(csv.DictReader(csv_out.open(newline="")))
    reasons = [row["reason"] for row in rows]
    assert "'" + HOSTILE in reasons and HOSTILE not in reasons
    assert "ticket 7: account takeover" in reasons
    assert all(row["actor"] == "@root:localhost" for row in rows)


def test_the_cli_refuses_bad_times(srv, capsys):
    data = str(srv.config.data_dir)
    assert main(["admin", "audit", "--data-dir", data, "--since", "soon"]) == 2
    assert main(["admin", "audit", "--data-dir", data, "--since", "5", "--until", "1"]) == 2


# -- the reason helpers -------------------------------------------------------------------------


def request(path: str, body=None) -> Request:
    req = Request(make_mocked_request("GET", path), {}, None)
    req._json = body
    return req


def test_request_reason_takes_the_body_then_the_query():
    assert query_reason(request("/x?reason=why")) == "why"
    assert query_reason(request("/x?reason=")) is None
    assert query_reason(request("/x")) is None
    assert request_reason(request("/x?reason=q", {"reason": "b"})) == "b"
    assert request_reason(request("/x?reason=q", {"other": 1})) == "q"
    with pytest.raises(MatrixError) as e:
        request_reason(request("/x", {"reason": 5}))
    assert e.value.errcode == "M_BAD_JSON"
    with pytest.raises(MatrixError) as e:
        request_reason(request("/x", {"reason": "x" * 1001}))
    assert e.value.errcode == "M_INVALID_PARAM"


def test_without_the_ledger_there_is_no_trail(tmp_path):
    s = ServerThread(tmp_path / "d", ledger_enabled=False).start()
    try:
        admin = make_user(s, "root", admin=True)
        r = admin.request("GET", AUDIT, query={"since": "0"})
        assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    finally:
        s.stop()
