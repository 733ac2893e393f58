"""``POST /_bastion/client/v1/export`` (UIA, rate limit) and the admin export
``GET /_bastion/admin/v1/users/{userId}/export`` (admins only, recorded)."""

from __future__ import annotations

import io
import zipfile
from urllib.parse import quote

import orjson

from tests.services.export.scenario import EXPORT, request_export
from tests.support.accounts import assert_error, db_rows, make_admin, password_auth
from tests.support.rooms import create_room, send

ADMIN_EXPORT = "/_bastion/admin/v1/users/{}/export"


def _records(server, action: str) -> list[dict]:
    rows = db_rows(server, "SELECT entry FROM ledger_entries WHERE action = ? ORDER BY idx",
                   (action,))  # fmt: skip
    return [orjson.loads(bytes(r["entry"])) for r in rows]


def test_export_needs_an_access_token(client):
    assert_error(client.request("POST", EXPORT, {}), 401, "M_MISSING_TOKEN")


def test_uia_password_required(server, client):
    alice = client.register()
    r = alice.request("POST", EXPORT, {})
    assert r.status == 401
    assert r.body["flows"] == [{"stages": ["m.login.password"]}]
    assert isinstance(r.body["session"], str) and "errcode" not in r.body
    r = alice.request("POST", EXPORT,
                      {"auth": password_auth(alice.user_id, r.body["session"], "wrong password")})  # fmt: skip
    assert_error(r, 401, "M_FORBIDDEN")
    assert r.body["flows"] == [{"stages": ["m.login.password"]}]
    # Someone else's identifier with the right password is refused too.
    bob = client.register()
    r = alice.request("POST", EXPORT, {})
    r = alice.request("POST", EXPORT, {"auth": password_auth(bob.user_id, r.body["session"])})
    assert_error(r, 401, "M_FORBIDDEN")
    r = alice.request("POST", EXPORT, {"auth": "nope"})
    assert_error(r, 400, "M_BAD_JSON")
    assert _records(server, "compliance.export") == []
    # The failed password stage is a login failure of the account's (and in its export).
    assert any(rec["subject"] == alice.user_id and rec["details"] == {"uia": "export"}
               for rec in _records(server, "login.failure"))  # fmt: skip
    r = request_export(alice)
    assert r.status == 200 and r.headers["Content-Type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.body["_raw"]))
    assert z.testzip() is None
    logins = orjson.loads(z.read("logins/logins.json"))
    assert [x["record"]["action"] for x in logins].count("login.failure") == 1
    assert len(_records(server, "compliance.export")) == 1


def test_rate_limited_per_user(server, client):
    alice = client.register()
    bob = client.register()
    assert request_export(alice).status == 200
    # Before any password is asked for.
    r = alice.request("POST", EXPORT, {})
    assert_error(r, 429, "M_LIMIT_EXCEEDED")
    assert 3_500_000 < r.body["retry_after_ms"] <= 3_600_000
    # Per user: bob is not limited by alice's export.
    assert request_export(bob).status == 200
    # An admin's export of alice does not count against her, nor is it limited.
    make_admin(server, bob.user_id)
    assert bob.request("GET", ADMIN_EXPORT.format(quote(alice.user_id))).status == 200
    assert bob.request("GET", ADMIN_EXPORT.format(quote(alice.user_id))).status == 200
    server.hs.export.min_interval_ms = 0
    assert request_export(alice).status == 200


def test_a_restart_does_not_reset_the_limit(tmp_path):
    from tests.support.harness import Client, ServerThread

    srv = ServerThread(tmp_path / "data").start()
    try:
        alice = Client(srv.base_url).register("alice")
        assert request_export(alice).status == 200
    finally:
        srv.stop()
    srv = ServerThread(tmp_path / "data").start()
    try:
        alice.base_url = srv.base_url
        assert_error(alice.request("POST", EXPORT, {}), 429, "M_LIMIT_EXCEEDED")
    finally:
        srv.stop()


def test_admin_export(server, client):
    alice = client.register()
    room = create_room(alice)
    send(alice, room, "alice says hello")
    mallory = client.register()
    path = ADMIN_EXPORT.format(quote(alice.user_id))
    assert_error(mallory.request("GET", path), 403, "M_FORBIDDEN")
    assert_error(client.request("GET", path, token=None), 401, "M_MISSING_TOKEN")
    assert _records(server, "compliance.export") == []
    admin = client.register()
    make_admin(server, admin.user_id)
    r = admin.request("GET", path)
    assert r.status == 200, r.body
    assert r.headers["Content-Type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.body["_raw"]))
    sent = orjson.loads(z.read("events_sent/events.json"))
    assert "alice says hello" in [e["event"]["content"].get("body") for e in sent]
    reads = [
        rec for rec in _records(server, "admin.request") if rec.get("subject") == alice.user_id
    ]
    assert len(reads) == 1 and reads[0]["actor"] == admin.user_id
    assert reads[0]["details"]["route"] == "GET /_bastion/admin/v1/users/{userId}/export"
    (export,) = _records(server, "compliance.export")
    assert export["actor"] == admin.user_id and export["subject"] == alice.user_id
    # Unknown, remote and malformed user IDs.
    assert_error(admin.request("GET", ADMIN_EXPORT.format(quote("@nobody:localhost"))), 404,
                 "M_NOT_FOUND")  # fmt: skip
    assert_error(admin.request("GET", ADMIN_EXPORT.format(quote("@alice:elsewhere.example"))),
                 400, "M_INVALID_PARAM")  # fmt: skip
    assert_error(admin.request("GET", ADMIN_EXPORT.format("not-a-user")), 400, "M_INVALID_PARAM")


def test_nothing_left_in_the_data_directory(server, client):
    alice = client.register()
    assert request_export(alice).status == 200
    tmp = server.config.data_dir / "export-tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


def test_one_export_at_a_time(server, client):
    alice = client.register()
    server.hs.export._running.add(alice.user_id)  # an export of hers is being written
    try:
        r = alice.request("POST", EXPORT, {})
        assert_error(r, 429, "M_LIMIT_EXCEEDED")
        assert r.body["retry_after_ms"] == 10_000
    finally:
        server.hs.export._running.discard(alice.user_id)
    assert request_export(alice).status == 200
    assert server.hs.export._running == set()


def test_a_suspended_user_may_still_export(server, client):
    """The right of access (GDPR Art. 15) does not end with a suspension."""
    alice = client.register()
    admin = client.register()
    make_admin(server, admin.user_id)
    r = admin.request("PUT", f"/_matrix/client/v1/admin/suspend/{quote(alice.user_id)}",
                      {"suspended": True})  # fmt: skip
    assert r.status == 200, r.body
    assert_error(alice.request("POST", "/_matrix/client/v3/createRoom", {}), 403,
                 "M_USER_SUSPENDED")  # fmt: skip
    assert request_export(alice).status == 200
