"""Security-action records (issue 8, "What goes in"): each action, driven through the real HTTP
API or the CLI, leaves exactly one ledger record with the right fields, written in the same
transaction as the change it records (a failed write leaves neither), and only what the
contract lists (no one-time or fallback keys)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from bastion.cli import main
from bastion.core.signing import encode_verify_key
from bastion.services.security_records import key_sha256
from bastion.signing_key import load_or_create_signing_key
from tests.support.accounts import (
    PASSWORD,
    add_registration_token,
    assert_error,
    call_on_server,
    login,
    make_admin,
    password_auth,
)
from tests.support.e2ee import V3, Device, cross_signing_body, cross_signing_set
from tests.support.harness import Client, ServerThread

LOGIN = f"{V3}/login"
CS_UPLOAD = f"{V3}/keys/device_signing/upload"
SIG_UPLOAD = f"{V3}/keys/signatures/upload"
ADMIN = "/_matrix/client/v1/admin"
IP = "127.0.0.1"


# -- reading the ledger -----------------------------------------------------------------------
def action_records(server) -> list[dict]:
    """Every action record in the ledger, in order (read on the server's loop)."""

    def read() -> list[dict]:
        return [
            json.loads(row.entry)
            for row in server.hs.store.ledger_iter_entries()
            if row.kind == "action"
        ]

    return call_on_server(server, read)


class Ledger:
    """The action records appended since a mark."""

    def __init__(self, server) -> None:
        self.server = server
        self.mark()

    def mark(self) -> None:
        self.start = len(action_records(self.server))

    def new(self, action: str | None = None) -> list[dict]:
        recs = action_records(self.server)[self.start :]
        return [r for r in recs if action is None or r["action"] == action]

    def one(self, action: str) -> dict:
        """The only record appended since the mark, which must be ``action``."""
        recs = self.new()
        assert [r["action"] for r in recs] == [action], recs
        return recs[0]


def check_personal(rec: dict, user_id: str, *, actor: str | None = None) -> None:
    """The common fields of a record of a user's own action on their own data."""
    assert rec["v"] == 1 and rec["kind"] == "action"
    assert rec["actor"] == (actor or user_id)
    assert rec["target"] == user_id and rec["subject"] == user_id
    assert rec["origin"] == IP
    assert isinstance(rec["ts"], int) and rec["ts"] > 0
    assert isinstance(rec["nonce"], str) and len(rec["nonce"]) >= 16


@pytest.fixture
def server(tmp_path):
    """These tests count the records of one action. A login from a new device would also post a
    new-login notice in the background (its own ``login.notice`` record and the notices room's
    events; tested in tests/guard), so notices are off here."""
    srv = ServerThread(tmp_path / "data", guard={"login": {"new_login_notices": False}}).start()
    yield srv
    srv.stop()


@pytest.fixture
def ledger(server):
    return Ledger(server)


def register(client: Client, username: str) -> Client:
    return client.register(username, PASSWORD)


def uia_body(user: Client, session: str, **extra) -> dict:
    return {"auth": password_auth(user.user_id, session), **extra}


def with_uia(user: Client, method: str, path: str, body: dict):
    """Make a request that needs the password stage: first the 401, then with the password."""
    r = user.request(method, path, body)
    assert r.status == 401, r.body
    return user.request(method, path, {**body, **uia_body(user, r.body["session"])})


# -- accounts ---------------------------------------------------------------------------------
def test_registration_is_one_account_create(client, server, ledger):
    alice = register(client, "alice")
    rec = ledger.one("account.create")
    check_personal(rec, alice.user_id)
    assert rec["details"] == {"device_id": alice.device_id}


def test_registration_with_inhibit_login_has_no_device(client, server, ledger):
    r = client.request("POST", f"{V3}/register", {
        "username": "nodev", "password": PASSWORD, "auth": {"type": "m.login.dummy"},
        "inhibit_login": True}, token=None)  # fmt: skip
    assert r.status == 200, r.body
    assert ledger.one("account.create")["details"] == {"device_id": None}


def test_registration_with_a_token_names_its_prefix(tmp_path):
    srv = ServerThread(tmp_path / "tokens", registration="token").start()
    try:
        add_registration_token(srv, "tok-123")
        c = Client(srv.base_url)
        body = {"username": "mia", "password": PASSWORD}
        r = c.request("POST", f"{V3}/register", body, token=None)
        session = r.body["session"]
        for auth in ({"type": "m.login.registration_token", "token": "tok-123"},
                     {"type": "m.login.dummy"}):  # fmt: skip
            r = c.request("POST", f"{V3}/register", {**body, "auth": {**auth, "session": session}},
                          token=None)  # fmt: skip
        assert r.status == 200, r.body
        (rec,) = action_records(srv)
        check_personal(rec, "@mia:localhost")
        assert rec["details"] == {"device_id": r.body["device_id"], "registration_token": "tok-…"}
    finally:
        srv.stop()


def test_registration_that_fails_leaves_no_record(client, server, ledger):
    register(client, "taken")
    ledger.mark()
    r = client.request("POST", f"{V3}/register", {
        "username": "taken", "password": PASSWORD, "auth": {"type": "m.login.dummy"}},
        token=None)  # fmt: skip
    assert_error(r, 400, "M_USER_IN_USE")
    assert ledger.new() == []


def test_deactivation(client, server, ledger):
    alice = register(client, "alice")
    dev = Device(alice)
    assert dev.upload(device_keys=dev.device_keys()).status == 200
    second = login(client, "alice")
    ledger.mark()
    r = with_uia(alice, "POST", f"{V3}/account/deactivate", {})
    assert r.status == 200, r.body
    recs = ledger.new()
    assert [r["action"] for r in recs] == ["device.delete", "device.delete", "account.deactivate"]
    for rec in recs:
        check_personal(rec, alice.user_id)
    by_device = {r["details"]["device_id"]: r["details"] for r in recs[:2]}
    assert by_device == {
        alice.device_id: {"device_id": alice.device_id, "cause": "deactivate",
                          "device_keys": True},
        second.device_id: {"device_id": second.device_id, "cause": "deactivate",
                           "device_keys": False},
    }  # fmt: skip
    assert "details" not in recs[2]


# -- logins -----------------------------------------------------------------------------------
def test_login_success_new_and_existing_device(client, server, ledger):
    alice = register(client, "alice")
    ledger.mark()
    c = login(client, "alice", device_id="PHONE")
    rec = ledger.one("login.success")
    check_personal(rec, alice.user_id)
    assert rec["details"] == {"device_id": "PHONE", "new_device": True}
    # Logging in again with the same device ID revokes the device's earlier token.
    ledger.mark()
    login(client, "alice", device_id="PHONE")
    revoke, success = ledger.new()
    assert (revoke["action"], success["action"]) == ("token.revoke", "login.success")
    check_personal(revoke, alice.user_id)
    assert revoke["details"] == {"device_id": "PHONE", "cause": "login"}
    assert success["details"] == {"device_id": "PHONE", "new_device": False}
    assert_error(c.request("GET", f"{V3}/account/whoami"), 401, "M_UNKNOWN_TOKEN")


def _bad_login(client, user: str, password: str = "wrong password!"):
    return client.request("POST", LOGIN, {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
        "password": password, "device_id": "DEV"}, token=None)  # fmt: skip


def test_login_failures_wrong_password_and_unknown_user_look_alike(client, server, ledger):
    alice = register(client, "alice")
    ledger.mark()
    wrong = _bad_login(client, "alice")
    rec = ledger.one("login.failure")
    check_personal(rec, alice.user_id)
    assert rec["details"] == {"device_id": "DEV"}
    # A local user that does not exist: the attempted ID is target and subject, and the answer
    # is the same.
    ledger.mark()
    unknown = _bad_login(client, "@Ghost:localhost")
    rec = ledger.one("login.failure")
    check_personal(rec, "@ghost:localhost")
    assert rec["details"] == {"device_id": "DEV"}
    assert (wrong.status, wrong.body) == (unknown.status, unknown.body) == (
        403, {"errcode": "M_FORBIDDEN", "error": "invalid username or password"})  # fmt: skip
    # Not a local user: the attempted identifier (clipped) is the target, no subject.
    ledger.mark()
    assert _bad_login(client, "@x:elsewhere.example").status == 403
    assert _bad_login(client, "bad name " + "y" * 1000).status == 403
    assert _bad_login(client, "").status == 403
    first, second, third = ledger.new("login.failure")
    assert first["target"] == first["actor"] == "@x:elsewhere.example"
    assert "subject" not in first and "nonce" not in first
    assert second["target"] == ("bad name " + "y" * 1000)[:255]
    assert third["actor"] == "anonymous" and "target" not in third
    assert server.hs.store.get_user("@ghost:localhost") is None


def test_login_of_a_locked_account_is_a_failure(client, server, ledger):
    admin = register(client, "admin")
    make_admin(server, admin.user_id)
    alice = register(client, "alice")
    assert admin.request("PUT", f"{ADMIN}/lock/{alice.user_id}", {"locked": True}).status == 200
    ledger.mark()
    r = client.request("POST", LOGIN, {"type": "m.login.password", "user": "alice",
                                       "password": PASSWORD}, token=None)  # fmt: skip
    assert_error(r, 401, "M_USER_LOCKED")
    rec = ledger.one("login.failure")
    check_personal(rec, alice.user_id)
    assert rec["details"] == {"device_id": None, "locked": True}


def test_uia_password_stage_failure(client, server, ledger):
    alice = register(client, "alice")
    r = alice.request("POST", f"{V3}/account/deactivate", {})
    ledger.mark()
    auth = password_auth(alice.user_id, r.body["session"], "not the password")
    r = alice.request("POST", f"{V3}/account/deactivate", {"auth": auth})
    assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN"
    rec = ledger.one("login.failure")
    check_personal(rec, alice.user_id)
    assert rec["details"] == {"uia": "account/deactivate"}


# -- passwords, logouts and devices -----------------------------------------------------------
def test_password_change_deletes_other_devices(client, server, ledger):
    alice = register(client, "alice")
    other = login(client, "alice")
    ledger.mark()
    r = with_uia(alice, "POST", f"{V3}/account/password", {"new_password": "a new password"})
    assert r.status == 200, r.body
    change, delete = ledger.new()
    check_personal(change, alice.user_id)
    assert change["action"] == "password.change"
    assert change["details"] == {"device_id": alice.device_id, "logout_devices": True}
    check_personal(delete, alice.user_id)
    assert delete["action"] == "device.delete"
    assert delete["details"] == {"device_id": other.device_id, "cause": "password_change",
                                 "device_keys": False}  # fmt: skip


def test_logout_and_logout_all(client, server, ledger):
    alice = register(client, "alice")
    dev = Device(alice)
    assert dev.upload(device_keys=dev.device_keys()).status == 200
    ledger.mark()
    assert alice.request("POST", f"{V3}/logout", {}).status == 200
    rec = ledger.one("device.delete")
    check_personal(rec, alice.user_id)
    assert rec["details"] == {"device_id": alice.device_id, "cause": "logout",
                              "device_keys": True}  # fmt: skip
    a, b = login(client, "alice"), login(client, "alice")
    ledger.mark()
    assert a.request("POST", f"{V3}/logout/all", {}).status == 200
    recs = ledger.new()
    assert [r["action"] for r in recs] == ["device.delete", "device.delete"]
    assert {r["details"]["device_id"] for r in recs} == {a.device_id, b.device_id}
    assert {r["details"]["cause"] for r in recs} == {"logout_all"}


def test_device_deletion(client, server, ledger):
    alice = register(client, "alice")
    other = login(client, "alice")
    ledger.mark()
    r = with_uia(alice, "DELETE", f"{V3}/devices/{other.device_id}", {})
    assert r.status == 200, r.body
    rec = ledger.one("device.delete")
    check_personal(rec, alice.user_id)
    assert rec["details"] == {"device_id": other.device_id, "cause": "delete",
                              "device_keys": False}  # fmt: skip
    # Deleting a device that does not exist changes nothing and records nothing.
    ledger.mark()
    r = with_uia(alice, "POST", f"{V3}/delete_devices", {"devices": ["NOSUCH"]})
    assert r.status == 200 and ledger.new() == []


# -- keys -------------------------------------------------------------------------------------
def test_device_keys_upload_is_recorded_once_with_the_stored_keys_hash(client, server, ledger):
    dev = Device(register(client, "alice"))
    keys = dev.device_keys()
    r = dev.upload(device_keys=keys, one_time_keys=dev.one_time_keys(5),
                   fallback_keys=dev.fallback_keys())  # fmt: skip
    assert r.status == 200, r.body
    rec = ledger.new("device_keys.upload")
    assert len(rec) == 1
    check_personal(rec[0], dev.user_id)
    stored = call_on_server(server, server.hs.store.get_device_keys_one, dev.user_id,
                            dev.device_id)  # fmt: skip
    assert rec[0]["details"] == {"device_id": dev.device_id, "keys_sha256": key_sha256(stored)}
    assert rec[0]["details"]["keys_sha256"] == key_sha256(keys)
    # One-time keys, fallback keys and an identical re-upload of the device keys: no record.
    ledger.mark()
    assert dev.upload(one_time_keys=dev.one_time_keys(3)).status == 200
    assert dev.upload(fallback_keys=dev.fallback_keys()).status == 200
    assert dev.upload(device_keys=keys).status == 200
    assert ledger.new() == []
    # Different keys for the device are refused: no record.
    other = Device(Client(dev.client.base_url))
    other.user_id, other.device_id = dev.user_id, dev.device_id
    r = dev.upload(device_keys=other.device_keys())
    assert_error(r, 400, "M_INVALID_PARAM")
    assert ledger.new() == []


def test_key_upload_that_fails_in_its_transaction_leaves_no_record(client, server, ledger):
    dev = Device(register(client, "alice"))
    assert dev.upload(one_time_keys={"curve25519:K1": "first"}).status == 200
    # The same one-time key ID with another key: the whole upload fails inside the write, after
    # the device keys (and their record) were written in it.
    ledger.mark()
    r = dev.upload(device_keys=dev.device_keys(), one_time_keys={"curve25519:K1": "second"})
    assert_error(r, 400, "M_INVALID_PARAM")
    assert ledger.new() == []
    stored = call_on_server(server, server.hs.store.get_device_keys_one, dev.user_id, dev.device_id)
    assert stored is None


def test_cross_signing_uploads(client, server, ledger):
    alice = Device(register(client, "alice"))
    msk, ssk, usk = cross_signing_set(alice.user_id)
    body = cross_signing_body(msk, ssk, usk)
    ledger.mark()
    assert alice.request("POST", CS_UPLOAD, body).status == 200
    rec = ledger.one("cross_signing.upload")
    check_personal(rec, alice.user_id)
    stored = call_on_server(server, server.hs.store.get_cross_signing_keys, alice.user_id)
    assert rec["details"] == {
        "keys": {"master": msk.pub, "self_signing": ssk.pub, "user_signing": usk.pub},
        "sha256": {usage: key_sha256(stored[usage]) for usage in stored},
    }
    # An identical re-upload changes nothing: no record.
    ledger.mark()
    assert alice.request("POST", CS_UPLOAD, body).status == 200
    assert ledger.new() == []
    # A new self-signing key (after UIA) replaces the old one.
    ssk2 = cross_signing_set(alice.user_id)[1]
    r = with_uia(alice.client, "POST", CS_UPLOAD, {"self_signing_key": msk.sign(ssk2.public())})
    assert r.status == 200, r.body
    recs = ledger.new()
    assert [r["action"] for r in recs] == ["cross_signing.upload"]
    stored = call_on_server(server, server.hs.store.get_cross_signing_keys, alice.user_id)
    assert recs[0]["details"] == {
        "keys": {"self_signing": ssk2.pub},
        "sha256": {"self_signing": key_sha256(stored["self_signing"])},
        "replaced": {"self_signing": ssk.pub},
    }
    # A refused upload (a self-signing key not signed by the master key): no record.
    ledger.mark()
    bad = cross_signing_set(alice.user_id)[1]
    assert alice.request("POST", CS_UPLOAD, {"self_signing_key": bad.public()}).status == 400
    assert ledger.new() == []


def test_signature_uploads(client, server, ledger):
    alice = Device(register(client, "alice"))
    assert alice.upload(device_keys=alice.device_keys()).status == 200
    msk, ssk, usk = cross_signing_set(alice.user_id)
    assert alice.request("POST", CS_UPLOAD, cross_signing_body(msk, ssk, usk)).status == 200
    device = alice.request("POST", f"{V3}/keys/query", {"device_keys": {alice.user_id: []}})
    keys = device.body["device_keys"][alice.user_id][alice.device_id]
    keys.pop("unsigned")
    signed = ssk.sign(keys)
    ledger.mark()
    r = alice.request("POST", SIG_UPLOAD, {alice.user_id: {alice.device_id: signed}})
    assert r.status == 200 and r.body["failures"] == {}, r.body
    rec = ledger.one("signatures.upload")
    check_personal(rec, alice.user_id)
    sig = signed["signatures"][alice.user_id][ssk.key_id]
    assert rec["details"] == {"signatures": [[alice.user_id, alice.device_id, ssk.key_id, sig]]}
    # Only refused signatures: nothing stored, nothing recorded.
    ledger.mark()
    forged = dict(signed, signatures={alice.user_id: {ssk.key_id: "A" * 86}})
    r = alice.request("POST", SIG_UPLOAD, {alice.user_id: {alice.device_id: forged}})
    assert r.body["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    assert ledger.new() == []


# -- admin API --------------------------------------------------------------------------------
def test_admin_calls(client, server, ledger):
    admin = register(client, "admin")
    make_admin(server, admin.user_id)
    alice = register(client, "alice")
    path = f"{ADMIN}/lock/{alice.user_id}"
    ledger.mark()
    r = admin.request("PUT", path, {"locked": True, "reason": "spam"})
    assert r.status == 200
    request, lock = ledger.new()
    assert request == {
        "v": 1, "kind": "action", "action": "admin.request", "actor": admin.user_id,
        "target": alice.user_id, "subject": alice.user_id, "reason": "spam", "origin": IP,
        "ts": request["ts"], "nonce": request["nonce"],
        "details": {"route": "PUT /_matrix/client/v1/admin/lock/{userId}"},
    }  # fmt: skip
    assert lock["action"] == "account.lock"
    check_personal(lock, alice.user_id, actor=admin.user_id)
    assert lock["reason"] == "spam" and lock["details"] == {"locked": True}
    ledger.mark()
    assert admin.request("PUT", f"{ADMIN}/suspend/{alice.user_id}", {"suspended": False}).status \
        == 200  # fmt: skip
    request, unsuspend = ledger.new()
    assert request["details"] == {"route": "PUT /_matrix/client/v1/admin/suspend/{userId}"}
    assert "reason" not in request and unsuspend["action"] == "account.unsuspend"
    # Reads: one admin.request each, no change.
    ledger.mark()
    assert admin.request("GET", path).body == {"locked": True}
    rec = ledger.one("admin.request")
    assert rec["details"] == {"route": "GET /_matrix/client/v1/admin/lock/{userId}"}
    assert (rec["actor"], rec["target"], rec["subject"]) == (admin.user_id, alice.user_id,
                                                             alice.user_id)  # fmt: skip
    ledger.mark()
    assert admin.request("GET", f"{V3}/admin/whois/{alice.user_id}").status == 200
    assert ledger.one("admin.request")["details"] == {
        "route": "GET /_matrix/client/v3/admin/whois/{userId}"}  # fmt: skip
    # Not admin calls, or refused ones: no record.
    ledger.mark()
    assert admin.request("GET", f"{V3}/admin/whois/{admin.user_id}").status == 200
    bob = register(client, "bob")
    ledger.mark()
    assert_error(bob.request("PUT", path, {"locked": False}), 403, "M_FORBIDDEN")
    assert_error(bob.request("GET", path), 403, "M_FORBIDDEN")
    assert_error(admin.request("PUT", path, {"locked": False, "reason": 5}), 400, "M_BAD_JSON")
    assert_error(admin.request("PUT", path, {"locked": False, "reason": "x" * 1001}), 400,
                 "M_INVALID_PARAM")  # fmt: skip
    assert_error(admin.request("PUT", f"{ADMIN}/lock/@ghost:localhost", {"locked": True}), 404,
                 "M_NOT_FOUND")  # fmt: skip
    assert ledger.new() == []


# -- atomicity --------------------------------------------------------------------------------
def test_record_and_change_commit_together(client, server, ledger, monkeypatch):
    """A write that fails after its record was appended leaves neither the change nor the
    record; a record that cannot be appended leaves no change."""
    store = server.hs.store
    dev = Device(register(client, "alice"))

    def boom(*_a, **_k):
        raise RuntimeError("injected failure")

    # After the record: the device-list change that follows the new keys fails.
    monkeypatch.setattr(store, "add_device_list_change_in", boom)
    ledger.mark()
    assert dev.upload(device_keys=dev.device_keys()).status == 500
    monkeypatch.undo()
    assert ledger.new() == []
    assert call_on_server(server, store.get_device_keys_one, dev.user_id, dev.device_id) is None
    # After the password.change record: deleting the other devices fails.
    other = login(client, "alice")
    monkeypatch.setattr(store, "delete_device_in", boom)
    ledger.mark()
    r = with_uia(dev.client, "POST", f"{V3}/account/password", {"new_password": "changed pw!"})
    assert r.status == 500
    monkeypatch.undo()
    assert ledger.new() == []
    assert other.request("GET", f"{V3}/account/whoami").status == 200
    login(client, "alice")  # the old password still works
    # The record itself cannot be appended: no login, no token, no device.
    devices = len(call_on_server(server, store.get_devices, dev.user_id))
    monkeypatch.setattr(store, "ledger_append_in", boom)
    ledger.mark()
    r = client.request("POST", LOGIN, {"type": "m.login.password", "user": "alice",
                                       "password": PASSWORD}, token=None)  # fmt: skip
    assert r.status == 500
    monkeypatch.undo()
    assert ledger.new() == []
    assert len(call_on_server(server, store.get_devices, dev.user_id)) == devices


def test_a_login_adds_one_ledger_entry(client, server):
    """The hot paths add one INSERT: one leaf per login and per device-key upload."""
    register(client, "alice")
    size = call_on_server(server, server.hs.store.ledger_size)
    dev = Device(login(client, "alice"))
    assert call_on_server(server, server.hs.store.ledger_size) == size + 1
    assert dev.upload(device_keys=dev.device_keys()).status == 200
    assert call_on_server(server, server.hs.store.ledger_size) == size + 2


# -- the command line -------------------------------------------------------------------------
@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "bastion.toml").write_text(
        'server_name = "example.org"\nargon2_time_cost = 1\nargon2_memory_cost = 8192\n'
    )
    return d


def cli_records(data_dir: Path) -> list[dict]:
    conn = sqlite3.connect(str(data_dir / "homeserver.db"))
    try:
        rows = conn.execute(
            "SELECT entry FROM ledger_entries WHERE kind = 'action' ORDER BY idx"
        ).fetchall()
    finally:
        conn.close()
    return [json.loads(r[0]) for r in rows]


def cli(data_dir: Path, *args: str) -> int:
    return main(["admin", *args, "--data-dir", str(data_dir)])


def test_cli_commands(data_dir, capsys):
    assert cli(data_dir, "create-user", "Alice", "--password", "long enough pw", "--admin") == 0
    (rec,) = cli_records(data_dir)
    assert rec == {
        "v": 1, "kind": "action", "action": "account.create", "actor": "cli", "origin": "cli",
        "target": "@alice:example.org", "subject": "@alice:example.org", "ts": rec["ts"],
        "nonce": rec["nonce"], "details": {"admin": True},
    }  # fmt: skip
    assert cli(data_dir, "create-user", "alice", "--password", "long enough pw") == 1
    assert cli(data_dir, "registration-token", "create", "--token", "secret-token",
               "--uses", "3") == 0  # fmt: skip
    assert cli(data_dir, "registration-token", "create", "--token", "secret-token") == 1
    assert cli(data_dir, "registration-token", "revoke", "secret-token") == 0
    assert cli(data_dir, "registration-token", "revoke", "secret-token-2") == 1
    create, delete = cli_records(data_dir)[1:]
    assert (create["action"], create["actor"], create["origin"], create["target"]) == (
        "registration_token.create", "cli", "cli", "secr…")  # fmt: skip
    assert create["details"] == {"uses": 3, "expiry_ts": None}
    assert (delete["action"], delete["target"], delete["details"]) == (
        "registration_token.delete", "secr…", {"revoked": True})  # fmt: skip
    assert b"secret-token" not in (data_dir / "homeserver.db").read_bytes()
    capsys.readouterr()


def test_cli_signing_key_rotation(data_dir, capsys):
    key_path = data_dir / "signing.key"
    assert cli(data_dir, "registration-token", "list") == 0  # creates the database only
    old = load_or_create_signing_key(key_path)
    assert cli(data_dir, "rotate-signing-key") == 0
    new = load_or_create_signing_key(key_path)
    out = json.loads(capsys.readouterr().out.splitlines()[0])
    (rec,) = cli_records(data_dir)
    assert (rec["action"], rec["actor"], rec["origin"], rec["target"]) == (
        "signing_key.rotate", "cli", "cli", old.key_id)  # fmt: skip
    assert rec["details"] == {
        "old_key_id": old.key_id, "new_key_id": new.key_id,
        "new_public_key": encode_verify_key(new.key), "expired_ts": out["expired_ts"],
    }  # fmt: skip
    assert "subject" not in rec


def test_directory_changes_by_the_admin_privilege(client, server, ledger):
    """A room-directory change that only the admin privilege allows is an admin call."""
    admin = register(client, "admin")
    make_admin(server, admin.user_id)
    alice = register(client, "alice")
    r = alice.request("POST", f"{V3}/createRoom", {"room_alias_name": "one"})
    assert r.status == 200, r.body
    room_id = r.body["room_id"]
    assert alice.request("PUT", f"{V3}/directory/room/%23two:localhost",
                         {"room_id": room_id}).status == 200  # fmt: skip
    # The creator and a member with the power: no admin call, no record.
    ledger.mark()
    assert alice.request("DELETE", f"{V3}/directory/room/%23two:localhost").status == 200
    assert alice.request("PUT", f"{V3}/directory/list/room/{room_id}",
                         {"visibility": "public"}).status == 200  # fmt: skip
    assert ledger.new() == []
    # The admin, not in the room: recorded with the change.
    assert admin.request("DELETE", f"{V3}/directory/room/%23one:localhost").status == 200
    assert admin.request("PUT", f"{V3}/directory/list/room/{room_id}",
                         {"visibility": "private"}).status == 200  # fmt: skip
    delete, visibility = ledger.new()
    assert (delete["action"], delete["actor"], delete["target"], delete["origin"]) == (
        "admin.request", admin.user_id, "#one:localhost", IP)  # fmt: skip
    assert delete["details"] == {"route": "DELETE /_matrix/client/v3/directory/room/{roomAlias}"}
    assert (visibility["target"], visibility["details"]) == (
        room_id, {"route": "PUT /_matrix/client/v3/directory/list/room/{roomId}"})  # fmt: skip
    assert "subject" not in delete and "subject" not in visibility
    assert alice.request("GET", f"{V3}/directory/list/room/{room_id}").body == {
        "visibility": "private"}  # fmt: skip
    assert_error(client.request("GET", f"{V3}/directory/room/%23one:localhost", token=None),
                 404, "M_NOT_FOUND")  # fmt: skip
