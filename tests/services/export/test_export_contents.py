"""The export archive holds every item of the user's data, checked item by item against the
database and the Client-Server API, and nothing of another user's beyond what the user could
see (issue 10 "Export"; GDPR Art. 15 and 20)."""

from __future__ import annotations

import hashlib
import html
import json
import re

import orjson
import pytest

from tests.services.export.scenario import (
    HOSTILE_BODY,
    HOSTILE_NAME,
    Archive,
    World,
    build_world,
    request_export,
)
from tests.support.accounts import db_rows
from tests.support.rooms import V3, send


@pytest.fixture
def exported(server, client) -> tuple[World, Archive]:
    w = build_world(client)
    r = request_export(w.alice)
    assert r.status == 200, r.body
    assert r.headers["Content-Type"] == "application/zip"
    assert r.headers["Content-Disposition"].startswith('attachment; filename="bastion-export-')
    return w, Archive(r.body["_raw"])


def _messages(c, room_id: str) -> list[dict]:
    """Every event of the room the client can page through with /messages, oldest first."""
    out: list[dict] = []
    query = {"dir": "f", "limit": "5"}
    while True:
        r = c.request("GET", f"{V3}/rooms/{room_id}/messages", query=query)
        assert r.status == 200, r.body
        out += r.body["chunk"]
        if "end" not in r.body or not r.body["chunk"]:
            return out
        query = {"dir": "f", "limit": "5", "from": r.body["end"]}


def _comparable(ev: dict) -> dict:
    unsigned = {k: v for k, v in ev.get("unsigned", {}).items()
                if k not in ("age", "transaction_id")}  # fmt: skip
    return {**ev, "unsigned": unsigned}


def test_manifest_lists_every_kind_with_its_count(exported):
    _, a = exported
    assert a.manifest["schema_version"] == 1
    assert a.manifest["user_id"] == "@alice:localhost"
    for name, info in a.manifest["kinds"].items():
        data = a.json(info["path"])
        expected = len(data) if isinstance(data, (list, dict)) else int(data is not None)
        assert info["count"] == expected, name
    assert {"manifest.json", "schema.md", "index.html"} <= set(a.names())
    assert "events_visible" in a.read("schema.md").decode()


def test_profile_account_devices_against_the_database_and_api(server, exported):
    w, a = exported
    assert a.kind("profile") == {"displayname": HOSTILE_NAME}
    account = a.kind("account")
    assert account["user_id"] == w.alice.user_id and account["deactivated"] is False
    assert "password_hash" not in account
    rows = db_rows(
        server,
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices"
        " WHERE user_id = ? ORDER BY device_id",
        (w.alice.user_id,),
    )
    devices = a.kind("devices")
    assert [{k: d[k] for k in ("device_id", "display_name", "last_seen_ts", "last_seen_ip")}
            for d in devices] == [dict(r) for r in rows]  # fmt: skip
    api = w.alice.request("GET", f"{V3}/devices").body["devices"]
    assert sorted(d["device_id"] for d in api) == [d["device_id"] for d in devices]
    assert {w.alice.device_id, w.alice2.device_id} == {d["device_id"] for d in devices}
    everything = a.all_bytes()
    for token in (w.alice.access_token, w.alice2.access_token, w.bob.access_token):
        assert token.encode() not in everything
    assert w.bob.device_id.encode() not in everything


def test_account_data_filters_and_memberships(server, exported):
    w, a = exported
    rows = db_rows(server, "SELECT room_id, type, content FROM account_data WHERE user_id = ?"
                   " ORDER BY room_id, type", (w.alice.user_id,))  # fmt: skip
    assert a.kind("account_data") == [
        {"room_id": r["room_id"] or None, "type": r["type"], "content": json.loads(r["content"])}
        for r in rows
    ]
    markers = [item["content"].get("marker", "") for item in a.kind("account_data")]
    assert any(m.startswith("alice-account-data-") for m in markers)
    assert any(m.startswith("alice-room-data-") for m in markers)
    assert b"bob-account-data-" not in a.all_bytes()
    assert b"bob-room-data-" not in a.all_bytes()
    filters = a.kind("filters")
    assert len(filters) == 1
    r = w.alice.request("GET", f"{V3}/user/{w.alice.user_id}/filter/{filters[0]['filter_id']}")
    assert r.status == 200 and r.body == filters[0]["filter"]
    rows = db_rows(server, "SELECT room_id, membership, event_id, stream_pos, sender"
                   " FROM membership_events WHERE user_id = ? ORDER BY stream_pos",
                   (w.alice.user_id,))  # fmt: skip
    assert a.kind("memberships") == [dict(r) for r in rows]
    # (and the server-notices room where the new login of her second device was announced)
    assert {m["room_id"] for m in a.kind("memberships")} >= {w.plain_room, w.e2e_room}


def test_every_event_sent_with_its_content(server, exported):
    w, a = exported
    rows = db_rows(server, "SELECT room_id, event_id, json FROM events WHERE sender = ?"
                   " ORDER BY stream_pos", (w.alice.user_id,))  # fmt: skip
    sent = a.kind("events_sent")
    assert {e["event_id"] for e in sent} == {r["event_id"] for r in rows}
    by_id = {e["event_id"]: e for e in sent}
    for r in rows:
        assert by_id[r["event_id"]]["event"] == orjson.loads(r["json"])
        assert by_id[r["event_id"]]["room_id"] == r["room_id"]
    bodies = [e["event"]["content"].get("body") for e in sent]
    assert HOSTILE_BODY in bodies and "from the second device" in bodies
    encrypted = [e["event"] for e in sent if e["event"]["type"] == "m.room.encrypted"]
    assert len(encrypted) == 2 and all(e["room_id"] == w.e2e_room for e in encrypted)
    assert all(e["content"]["algorithm"] == "m.megolm.v1.aes-sha2" for e in encrypted)


def test_visible_events_as_the_client_sees_them(exported):
    w, a = exported
    visible = a.kind("events_visible")
    for room_id in (w.plain_room, w.e2e_room):
        api = _messages(w.alice, room_id)
        mine = [e for e in visible if e["room_id"] == room_id]
        assert [e["event_id"] for e in mine] == [e["event_id"] for e in api]
        assert [_comparable(e) for e in mine] == [_comparable(e) for e in api]
    bodies = [e["content"].get("body") for e in visible]
    # Bob's message from before alice joined a "joined"-visibility room is not hers to see.
    assert w.bob_after in bodies and w.bob_before not in bodies
    assert w.bob_before.encode() not in a.all_bytes()
    assert "bob in the encrypted room" in bodies


def test_media_files_are_in_the_archive(server, exported):
    w, a = exported
    rows = db_rows(server, "SELECT media_id, size, sha256, upload_name FROM local_media"
                   " WHERE user_id = ? ORDER BY media_id", (w.alice.user_id,))  # fmt: skip
    media = a.kind("media")
    assert [(m["media_id"], m["size"], m["sha256"], m["upload_name"]) for m in media] == [
        (r["media_id"], r["size"], r["sha256"], r["upload_name"]) for r in rows
    ]
    assert {m["media_id"] for m in media} == set(w.alice_media)
    for media_id, data in w.alice_media.items():
        assert a.read(f"media/files/{media_id}") == data
        assert hashlib.sha256(data).hexdigest() == next(
            m["sha256"] for m in media if m["media_id"] == media_id
        )
    for media_id, data in w.bob_media.items():
        assert f"media/files/{media_id}" not in a.names()
        assert media_id.encode() not in a.all_bytes()
        assert data not in a.all_bytes()
    assert a.manifest["media_files"]["count"] == 2


def test_key_backups_as_stored(exported):
    w, a = exported
    versions = a.kind("key_backup_versions")
    api = w.alice.request("GET", f"{V3}/room_keys/version/{w.backup_version}").body
    assert versions == [{"version": api["version"], "algorithm": api["algorithm"],
                         "auth_data": api["auth_data"], "etag": api["etag"],
                         "deleted": False}]  # fmt: skip
    keys = w.alice.request("GET", f"{V3}/room_keys/keys",
                           query={"version": w.backup_version}).body  # fmt: skip
    sessions = a.kind("key_backup_sessions")
    assert len(sessions) == 2
    for s in sessions:
        stored = keys["rooms"][s["room_id"]]["sessions"][s["session_id"]]
        assert {k: s[k] for k in stored} == stored  # session_data: the ciphertext as uploaded


def test_logins_ledger_and_the_export_record(server, exported):
    w, a = exported
    logins = a.kind("logins")
    assert any(r["record"]["action"] == "login.success"
               and r["record"]["details"].get("device_id") == w.alice2.device_id
               for r in logins)  # fmt: skip
    rows = db_rows(server, "SELECT idx, action, entry FROM ledger_entries WHERE subject = ?"
                   " ORDER BY idx", (w.alice.user_id,))  # fmt: skip
    export_rows = [r for r in rows if r["action"] == "compliance.export"]
    assert len(export_rows) == 1
    before = [r for r in rows if r["idx"] < export_rows[0]["idx"]]
    assert a.kind("ledger") == [
        {"index": r["idx"], "record": orjson.loads(bytes(r["entry"]))} for r in before
    ]
    assert [r["index"] for r in logins] == [
        r["idx"] for r in before if r["action"] in ("login.success", "login.failure")
    ]
    record = orjson.loads(bytes(export_rows[0]["entry"]))
    assert record["actor"] == w.alice.user_id and record["subject"] == w.alice.user_id
    details = record["details"]
    assert details["sha256"] == hashlib.sha256(a.data).hexdigest()
    assert details["bytes"] == len(a.data)
    assert details["counts"]["events_sent"] == a.manifest["kinds"]["events_sent"]["count"]
    assert HOSTILE_BODY not in json.dumps(record)  # never content


def test_guard_decisions_about_the_user(server, client):
    """A guard decision whose subject is the user is exported; one about another user is not."""
    w = build_world(client)
    hs = server.hs
    from tests.support.accounts import run_on_server

    def insert(conn, subject, reason):
        hs.store.insert_guard_decision_in(
            conn, ts=1, source="report", outcome="open", status="open", reason=reason,
            subject=subject, room_id=w.plain_room, event_id=None, origin=None, score=0.5,
            actions=[], signals=[], held=None, details={"why": reason},
        )  # fmt: skip

    run_on_server(server, hs.store.transaction(lambda c: insert(c, w.alice.user_id, "about-a")))
    run_on_server(server, hs.store.transaction(lambda c: insert(c, w.bob.user_id, "about-b")))
    # A report of alice's message by bob: a decision about alice that names bob as reporter.
    event_id = send(w.alice, w.plain_room, "reported message")
    r = w.bob.request("POST", f"{V3}/rooms/{w.plain_room}/report/{event_id}",
                      {"reason": "report-reason"})  # fmt: skip
    assert r.status == 200, r.body
    (stored,) = db_rows(
        server, "SELECT details FROM guard_decisions WHERE event_id = ?", (event_id,)
    )
    assert json.loads(stored["details"])["reporter"] == w.bob.user_id
    a = Archive(request_export(w.alice).body["_raw"])
    decisions = a.kind("guard_decisions")
    assert [d["reason"] for d in decisions][0] == "about-a"
    assert decisions[0]["details"] == {"why": "about-a"} and "reviewed_by" not in decisions[0]
    assert b"about-b" not in a.all_bytes()
    (report,) = [d for d in decisions if d["event_id"] == event_id]
    assert report["event_id"] == event_id and report["details"]["report_reason"] == "report-reason"
    assert "reporter" not in report["details"]


def test_index_html_escapes_the_users_own_data(exported):
    _, a = exported
    page = a.read("index.html").decode()
    assert html.escape(HOSTILE_NAME) in page
    assert html.escape(HOSTILE_BODY) in page
    assert HOSTILE_NAME not in page and HOSTILE_BODY not in page
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "default-src 'none'" in page
    assert re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) is None
