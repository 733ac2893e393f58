"""Erasure on deactivation (issue 10, GDPR Art. 17; services/erasure.py, storage/sqlite/erasure.py):
a user who wrote distinctive strings everywhere the server keeps what users write is erased
through each entry point (Synapse's admin deactivate, the C-S API, the CLI); then no file under
the data directory holds any of those strings (running, and after the server stops), the room
still works for its other members, and ``bastion ledger verify`` is clean and shows the
erasure."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
import urllib.parse
from pathlib import Path

import pytest
from PIL import Image

from bastion.cli import main
from bastion.ledger.records import ACTION_COMPLIANCE_ERASE, ACTION_COMPLIANCE_ERASURE
from tests.api.client.test_room_keys import ALG, Backup
from tests.support.accounts import db_rows, login, make_admin, on_server, password_auth
from tests.support.e2ee import cross_signing_body, cross_signing_set
from tests.support.harness import Client, ServerThread
from tests.support.ledger import wait_covered

V3 = "/_matrix/client/v3"
ADMIN_DEACTIVATE = "/_synapse/admin/v1/deactivate/"
#: Every distinctive string starts with this: a byte scan looks for it.
MARK = "zqxERASEME"
#: The mark as the search index may hold it: case-folded, and without its first letters (an
#: FTS5 leaf stores a term after the prefix it shares with the term before it, so only the
#: word's tail is sure to be stored whole).
FOLDED = MARK.lower()[3:]
ACL = {"allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": False}


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def secret(what: str) -> str:
    return f"{MARK}-{what}-7731"


class World:
    """A running server; alice (to be erased), bob and carol (who stay), an admin; the rooms
    alice wrote in; every distinctive string alice left."""

    def __init__(self, srv: ServerThread) -> None:
        self.srv = srv
        c = Client(srv.base_url)
        self.alice = c.register("alice")
        self.bob = c.register("bob")
        self.admin = c.register("admin")
        make_admin(srv, self.admin.user_id)
        self.strings: list[str] = []  # besides the MARK ones: ciphertexts, keys
        self.room = ""
        self.media_ids: list[str] = []
        self.thumb_media = ""
        self.alice_events: list[str] = []
        self.bob_event = ""
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.srv.stop()
            self.stopped = True

    def ok(self, r):
        assert r.status == 200, (r.status, r.body)
        return r.body

    def populate(self) -> None:
        a, b = self.alice, self.bob
        self.ok(a.request("PUT", f"{V3}/profile/{q(a.user_id)}/displayname",
                          {"displayname": secret("displayname")}))  # fmt: skip
        self.room = self.ok(a.request("POST", f"{V3}/createRoom", {
            "preset": "public_chat", "name": secret("roomname"), "topic": secret("topic"),
            "initial_state": [{"type": "m.room.encryption", "state_key": "",
                               "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}))["room_id"]  # fmt: skip
        self.ok(a.request("PUT", f"{V3}/rooms/{q(self.room)}/state/m.room.server_acl/",
                          ACL))  # fmt: skip
        self.ok(b.request("POST", f"{V3}/join/{q(self.room)}", {}))
        for i in range(3):
            r = a.request("PUT", f"{V3}/rooms/{q(self.room)}/send/m.room.message/t{i}",
                          {"msgtype": "m.text", "body": secret(f"message{i}")})  # fmt: skip
            self.alice_events.append(self.ok(r)["event_id"])
        self.bob_event = self.ok(b.request(
            "PUT", f"{V3}/rooms/{q(self.room)}/send/m.room.message/b1",
            {"msgtype": "m.text", "body": "bob was here"}))["event_id"]  # fmt: skip
        # Bob invites alice to another room: the invite carries her display name.
        room2 = self.ok(b.request("POST", f"{V3}/createRoom", {"preset": "private_chat"}))
        self.ok(b.request("POST", f"{V3}/rooms/{q(room2['room_id'])}/invite",
                          {"user_id": a.user_id}))  # fmt: skip
        self.ok(a.request("PUT", f"{V3}/user/{q(a.user_id)}/account_data/org.example.notes",
                          {"note": secret("accountdata")}))  # fmt: skip
        self.ok(a.request("PUT", f"{V3}/user/{q(a.user_id)}/rooms/{q(self.room)}/account_data/"
                          "org.example.tag", {"t": secret("roomaccountdata")}))  # fmt: skip
        backup = Backup()
        version = self.ok(a.request("POST", f"{V3}/room_keys/version",
                                    {"algorithm": ALG, "auth_data": backup.auth_data()}))["version"]  # fmt: skip
        key = backup.key(secret("sessionkey"))
        self.ok(a.request("PUT", f"{V3}/room_keys/keys/{q(self.room)}/sess1",
                          key, query={"version": version}))  # fmt: skip
        self.strings += [key["session_data"]["ciphertext"], backup.auth_data()["public_key"]]
        up = self.ok(a.request("POST", "/_matrix/media/v3/upload", raw=secret("filebytes").encode(),
                               headers={"Content-Type": "text/plain"},
                               query={"filename": secret("filename") + ".txt"}))  # fmt: skip
        self.media_ids.append(up["content_uri"].rsplit("/", 1)[1])
        buf = io.BytesIO()
        Image.new("RGB", (300, 200), (10, 200, 30)).save(buf, format="PNG")
        up = self.ok(a.request("POST", "/_matrix/media/v3/upload", raw=buf.getvalue(),
                               headers={"Content-Type": "image/png"}))  # fmt: skip
        self.thumb_media = up["content_uri"].rsplit("/", 1)[1]
        self.media_ids.append(self.thumb_media)
        r = a.request("GET", f"/_matrix/client/v1/media/thumbnail/localhost/{self.thumb_media}",
                      query={"width": 32, "height": 32, "method": "scale"})  # fmt: skip
        assert r.status == 200
        self.ok(a.request("POST", f"{V3}/rooms/{q(self.room)}/report/{q(self.bob_event)}",
                          {"reason": secret("reportreason")}))  # fmt: skip
        self.ok(a.request("PUT", f"{V3}/presence/{q(a.user_id)}/status",
                          {"presence": "online", "status_msg": secret("statusmsg")}))  # fmt: skip
        self.ok(a.request("PUT", f"{V3}/pushrules/global/content/kw",
                          {"pattern": secret("pushkeyword"), "actions": ["notify"]}))  # fmt: skip
        self.ok(a.request("POST", f"{V3}/user/{q(a.user_id)}/filter",
                          {"event_fields": [secret("filter")]}))  # fmt: skip
        self.ok(a.request("PUT", f"{V3}/devices/{q(a.device_id)}",
                          {"display_name": secret("devicename")}))  # fmt: skip
        self.ok(a.request("PUT", f"{V3}/sendToDevice/m.example/td1",
                          {"messages": {b.user_id: {b.device_id: {"x": secret("todevice")}}}}))  # fmt: skip
        msk, ssk, usk = cross_signing_set(a.user_id)
        self.ok(a.request("POST", f"{V3}/keys/device_signing/upload",
                          cross_signing_body(msk, ssk, usk)))  # fmt: skip
        self._guard_rows()
        # A login from a new device: the server's notice to alice names its display name.
        login(Client(self.srv.base_url), "alice", device_id="PHONE",
              initial_device_display_name=secret("logindevice"))  # fmt: skip
        deadline = time.monotonic() + 15
        while not _records(self.srv, "login.notice"):
            assert time.monotonic() < deadline, "no new-login notice"
            time.sleep(0.05)
        # A search moves the staged index rows into the full-text index.
        self.ok(b.request("POST", f"{V3}/search", {"search_categories": {"room_events": {
            "search_term": "bob"}}}))  # fmt: skip
        found = self.scan()
        assert found, "the distinctive strings are on disk before the erasure"
        # (the search index holds alice's words, case-folded: they must go too)
        assert any(FOLDED in hits for hits in found.values())

    def _guard_rows(self) -> None:
        """A decision holding one of alice's events (the guard keeps its content for a
        moderator), with evidence naming her words."""
        store = self.srv.hs.store

        def fn(conn):
            store.insert_guard_decision_in(
                conn, ts=1, source="classifier", outcome="hold", status="held", reason="held",
                subject=self.alice.user_id, room_id=self.room, event_id=None, origin="localhost",
                score=0.9, actions=[], held={"room_id": self.room, "type": "m.room.message",
                "content": {"body": secret("heldevent")}},
                signals=[{"source": "classifier", "evidence": {"reasons": [secret("evidence")]}}],
                details={},
            )  # fmt: skip

        on_server(self.srv, store.transaction(fn))

    def scan(self) -> dict[str, list[str]]:
        """Every file under the data directory that holds a distinctive string: {file: [what]}.
        The mark is looked for case-folded too: the search index keeps words case-folded."""
        needles = [MARK.encode(), FOLDED.encode(), *(s.encode() for s in self.strings)]
        found: dict[str, list[str]] = {}
        for path in sorted(Path(self.srv.config.data_dir).rglob("*")):
            if not path.is_file():
                continue
            data = path.read_bytes()
            hits = [n.decode() for n in needles if n in data]
            if hits:
                found[str(path)] = hits
        return found

    def check_room_still_works(self) -> None:
        b = self.bob
        eid = self.ok(b.request("PUT", f"{V3}/rooms/{q(self.room)}/send/m.room.message/b2",
                                {"msgtype": "m.text", "body": "still here"}))["event_id"]  # fmt: skip
        sync = self.ok(b.request("GET", f"{V3}/sync"))
        timeline = sync["rooms"]["join"][self.room]["timeline"]["events"]
        assert eid in [e["event_id"] for e in timeline]
        msgs = self.ok(b.request("GET", f"{V3}/rooms/{q(self.room)}/messages",
                                 query={"dir": "b", "limit": 100}))["chunk"]  # fmt: skip
        by_id = {e["event_id"]: e for e in msgs}
        for alice_eid in self.alice_events:
            assert by_id[alice_eid]["content"] == {}
        assert by_id[self.bob_event]["content"]["body"] == "bob was here"
        state = self.ok(b.request("GET", f"{V3}/rooms/{q(self.room)}/state"))
        assert MARK not in json.dumps(state)
        # The room's settings that alice set are not emptied: still encrypted, still an ACL.
        settings = {e["type"]: e["content"] for e in state if e["state_key"] == ""}
        assert settings["m.room.encryption"] == {"algorithm": "m.megolm.v1.aes-sha2"}
        assert settings["m.room.server_acl"] == ACL
        assert settings["m.room.topic"] == {} and settings["m.room.name"] == {}
        assert MARK not in json.dumps(sync)


def db_rows_at(data: Path, sql: str, args: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(str(data / "homeserver.db"))
    try:
        return [tuple(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def _verify(data: Path, capsys) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["ledger", "verify", "--data-dir", str(data), "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def world(tmp_path):
    # (plaintext storage: the byte scan first finds the strings, then finds them gone; with
    # encryption at rest nothing is found either way, tests/storage/sqlite/test_at_rest.py)
    srv = ServerThread(tmp_path / "data", ledger_checkpoint_interval=0.2, at_rest_key="").start()
    w = World(srv)
    try:
        w.populate()
        yield w
    finally:
        w.stop()


def _records(srv: ServerThread, action: str) -> list[dict]:
    rows = db_rows(srv, "SELECT entry FROM ledger_entries WHERE action = ?", (action,))
    return [json.loads(r[0]) for r in rows]


def _check_erased(w: World, capsys, actor: str) -> None:
    srv = w.srv
    alice = w.alice.user_id
    assert w.scan() == {}
    w.check_room_still_works()
    assert w.scan() == {}
    media = Path(srv.config.media_path)
    assert not any(m in str(p) for p in media.rglob("*") for m in w.media_ids)
    assert db_rows(srv, "SELECT 1 FROM erased_users WHERE user_id = ?", (alice,))
    assert db_rows(srv, "SELECT deactivated FROM users WHERE user_id = ?", (alice,))[0][0] == 1
    (summary,) = _records(srv, ACTION_COMPLIANCE_ERASURE)
    assert (summary["actor"], summary["subject"]) == (actor, alice)
    counts = summary["details"]["counts"]
    assert counts["events_stripped"] >= 5 and counts["media"] == 2 and counts["media_files"] == 2
    assert counts["key_backup_versions"] == 1 and counts["key_backup_sessions"] == 1
    assert counts["content_reports"] == 1 and counts["guard_held_events"] == 1
    assert counts["cross_signing_keys"] == 3
    keys = w.ok(w.bob.request("POST", f"{V3}/keys/query", {"device_keys": {alice: []}}))
    assert alice not in keys.get("master_keys", {}) and keys["device_keys"].get(alice, {}) == {}
    assert MARK not in json.dumps(summary)
    listed = [e for r in _records(srv, ACTION_COMPLIANCE_ERASE) for e in r["details"]["events"]]
    assert set(w.alice_events) <= set(listed)
    # The held event is closed, its content gone; the report is kept without its reason.
    (held,) = db_rows(srv, "SELECT status, held FROM guard_decisions WHERE subject = ?", (alice,))
    assert tuple(held) == ("rejected", None)
    assert db_rows(srv, "SELECT reason FROM content_reports")[0][0] is None
    # The user ID stays taken; the account cannot log in.
    r = Client(srv.base_url).request("POST", f"{V3}/register", {
        "username": "alice", "password": "x" * 12, "auth": {"type": "m.login.dummy"}}, token=None)  # fmt: skip
    assert r.status == 400 and r.body["errcode"] == "M_USER_IN_USE"
    wait_covered(srv)
    w.stop()
    assert w.scan() == {}
    code, report = _verify(Path(srv.config.data_dir), capsys)
    assert (code, report["findings"]) == (0, [])
    assert report["stats"]["events_stripped_by_records"] >= len(w.alice_events)
    assert [e["subject"] for e in report["stats"]["erasures"]] == [alice]


def test_admin_deactivate_with_erase_leaves_nothing_on_disk(world, capsys):
    w = world
    r = w.admin.request("POST", ADMIN_DEACTIVATE + q(w.alice.user_id),
                        {"erase": True, "reason": "data subject request 42"})  # fmt: skip
    assert (r.status, r.body) == (200, {"id_server_unbind_result": "success"})
    (req,) = [x for x in _records(w.srv, "admin.request")
              if x["details"].get("route", "").startswith("POST /_synapse/admin/v1/deactivate")]  # fmt: skip
    assert req["subject"] == w.alice.user_id
    _check_erased(w, capsys, w.admin.user_id)


def test_client_deactivate_with_erase(world, capsys):
    w = world
    a = w.alice
    r = a.request("POST", f"{V3}/account/deactivate", {"erase": True})
    assert r.status == 401
    r = a.request("POST", f"{V3}/account/deactivate", {
        "erase": True, "auth": password_auth(a.user_id, r.body["session"])})  # fmt: skip
    assert r.status == 200, r.body
    _check_erased(w, capsys, a.user_id)


def test_cli_erase_user(world, capsys):
    w = world
    srv = w.srv
    w.stop()
    capsys.readouterr()
    data = str(srv.config.data_dir)
    assert main(["admin", "erase-user", "alice", "--data-dir", data, "--reason", "DSR"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["user_id"] == w.alice.user_id and out["counts"]["events_stripped"] >= 5
    assert out["disk"]["vacuum_s"] >= 0
    assert w.scan() == {}
    srv2 = ServerThread(Path(data), ledger_checkpoint_interval=0.2).start()
    w.srv, w.stopped = srv2, False
    try:
        w.bob = login(Client(srv2.base_url), "bob")
        w.check_room_still_works()
        assert _records(srv2, ACTION_COMPLIANCE_ERASURE)[0]["actor"] == "cli"
        wait_covered(srv2)
    finally:
        w.stop()
    assert w.scan() == {}
    code, report = _verify(Path(data), capsys)
    assert (code, report["findings"]) == (0, [])
    assert [e["subject"] for e in report["stats"]["erasures"]] == [w.alice.user_id]
    # An unknown user: refused, nothing written.
    assert main(["admin", "erase-user", "nobody", "--data-dir", data]) == 1
    # A server with the database open (its lock file held): refused, nothing written.
    from bastion.storage.sqlite.at_rest import shared_lock

    fd = shared_lock(Path(data) / "homeserver.db")
    try:
        capsys.readouterr()
        assert main(["admin", "erase-user", "bob", "--data-dir", data]) == 1
        assert "stop it first" in capsys.readouterr().err
    finally:
        os.close(fd)
    assert db_rows_at(Path(data), "SELECT deactivated FROM users WHERE user_id = ?",
                      ("@bob:localhost",)) == [(0,)]  # fmt: skip


def test_deactivate_without_erase_keeps_content(world):
    w = world
    r = w.admin.request("POST", ADMIN_DEACTIVATE + q(w.alice.user_id), {"erase": False})
    assert (r.status, r.body) == (200, {"id_server_unbind_result": "success"})
    msgs = w.ok(w.bob.request("GET", f"{V3}/rooms/{q(w.room)}/messages",
                              query={"dir": "b", "limit": 100}))["chunk"]  # fmt: skip
    bodies = {e["event_id"]: e["content"].get("body") for e in msgs}
    assert bodies[w.alice_events[0]] == secret("message0")
    assert not db_rows(w.srv, "SELECT 1 FROM erased_users")
    assert _records(w.srv, ACTION_COMPLIANCE_ERASURE) == []
    assert w.scan()  # still there: deactivation alone erases nothing it did not before


def test_admin_endpoint_refuses(world):
    w = world
    path = ADMIN_DEACTIVATE + q(w.alice.user_id)
    r = w.bob.request("POST", path, {"erase": True})
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")
    r = Client(w.srv.base_url).request("POST", path, {"erase": True}, token=None)
    assert r.status == 401
    for body, code in (({"erase": "yes"}, "M_BAD_JSON"), ({"redact_federated": 1}, "M_BAD_JSON")):
        r = w.admin.request("POST", path, body)
        assert (r.status, r.body["errcode"]) == (400, code)
    r = w.admin.request("POST", ADMIN_DEACTIVATE + q("@nobody:localhost"), {"erase": True})
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")
    r = w.admin.request("POST", ADMIN_DEACTIVATE + q("@alice:elsewhere.example"), {})
    assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM")
    r = w.admin.request("POST", ADMIN_DEACTIVATE + q("not a user"), {})
    assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM")
    # Nothing happened to alice.
    assert w.ok(w.alice.request("GET", f"{V3}/account/whoami"))["user_id"] == w.alice.user_id
    assert w.scan()


def test_erasing_again_changes_nothing_more(world):
    """An account already erased (or deactivated) may be erased again: what is left goes, the
    rest stays as it is (a crash between the erasure's transactions is finished this way)."""
    w = world
    path = ADMIN_DEACTIVATE + q(w.alice.user_id)
    assert w.admin.request("POST", path, {"erase": False}).status == 200
    assert w.scan()  # deactivated, not erased
    for _ in range(2):
        r = w.admin.request("POST", path, {"erase": True})
        assert (r.status, r.body) == (200, {"id_server_unbind_result": "success"})
        assert w.scan() == {}
    first, second = _records(w.srv, ACTION_COMPLIANCE_ERASURE)
    assert first["details"]["counts"]["events_stripped"] >= 5
    assert "devices" not in first["details"]["counts"]  # the deactivation had removed them
    assert second["details"]["counts"] == {"events_stripped": 0, "media_files": 0}
    assert len(_records(w.srv, "account.deactivate")) == 1
    w.check_room_still_works()


def test_no_erasure_under_a_legal_hold(world, capsys):
    """GDPR Art. 17(3)(e): an account under a legal hold is not erased — by an admin or by the
    user — and is not deactivated either; once the hold is lifted the erasure goes ahead."""
    w = world
    hold = f"/_bastion/admin/v1/legal_holds/users/{q(w.alice.user_id)}"
    assert w.admin.request("PUT", hold, {"reason": "litigation"}).status == 200
    r = w.admin.request("POST", ADMIN_DEACTIVATE + q(w.alice.user_id), {"erase": True})
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")
    assert "legal hold" in r.body["error"]
    a = w.alice
    r = a.request("POST", f"{V3}/account/deactivate", {"erase": True})
    r = a.request("POST", f"{V3}/account/deactivate", {
        "erase": True, "auth": password_auth(a.user_id, r.body["session"])})  # fmt: skip
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")
    assert w.ok(a.request("GET", f"{V3}/account/whoami"))["user_id"] == a.user_id
    assert w.scan()  # everything still there
    assert w.admin.request("DELETE", hold, {}).status == 200
    r = w.admin.request("POST", ADMIN_DEACTIVATE + q(w.alice.user_id), {"erase": True})
    assert r.status == 200, r.body
    _check_erased(w, capsys, w.admin.user_id)
