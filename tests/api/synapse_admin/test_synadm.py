"""The real ``synadm`` CLI (PyPI, a Synapse admin tool) against a live Bastion: users, rooms,
media, registration tokens and a server notice, each checked by its effect in the database or
through the Matrix API, not only by synadm's exit code (synadm exits 0 on error answers too)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.accounts import PASSWORD, db_rows, make_user
from tests.support.harness import Client

SYNADM = shutil.which("synadm", path=str(Path(sys.executable).parent)) or shutil.which("synadm")


@pytest.fixture
def synadm(server, tmp_path):
    """``run(*args)``: synadm's JSON output (the last JSON document it printed)."""
    admin = make_user(server, "admin", admin=True)
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "synadm.yaml"
    config.write_text(
        "\n".join([
            f'user: "{admin.user_id}"',
            f'token: "{admin.access_token}"',
            "protocol: http",
            f"base_url: {server.base_url}",
            "admin_path: /_synapse/admin",
            "matrix_path: /_matrix",
            "timeout: 30",
            "server_discovery: well-known",
            "homeserver: localhost",
            "ssl_verify: false",
            "format: json",
        ]) + "\n"
    )  # fmt: skip
    env = {**os.environ, "HOME": str(home)}

    def run(*args: str) -> object:
        assert SYNADM is not None, "synadm is not installed (the test extra)"
        proc = subprocess.run(
            [SYNADM, "-c", str(config), "--batch", "-o", "json", *args],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return _last_json(proc.stdout)

    run.admin = admin  # type: ignore[attr-defined]
    return run


def _last_json(text: str) -> object:
    """The last JSON document in synadm's output (some commands echo lines before it)."""
    decoder = json.JSONDecoder()
    found: object = None
    i = 0
    while i < len(text):
        if text[i] in "{[":
            try:
                found, end = decoder.raw_decode(text, i)
                i = end
                continue
            except ValueError:
                pass
        i += 1
    return found


def _admin_requests(server) -> int:
    return db_rows(server, "SELECT COUNT(*) FROM ledger_entries WHERE action = 'admin.request'")[0][
        0
    ]


def _login(client: Client, user: str, password: str) -> int:
    r = client.request(
        "POST", "/_matrix/client/v3/login",
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
         "password": password},
        token=None,
    )  # fmt: skip
    return r.status


def test_users(server, client, synadm):
    alice = client.register("alice")
    before = _admin_requests(server)
    listed = synadm("user", "list")
    assert {u["name"] for u in listed["users"]} == {"@admin:localhost", alice.user_id}
    details = synadm("user", "details", alice.user_id)
    assert details["name"] == alice.user_id and details["admin"] is False

    # Create a user (PUT v2/users), then modify it.
    synadm("user", "modify", "@bob:localhost", "-P", "bob password 1", "-n", "Bobby")
    row = db_rows(server, "SELECT * FROM users WHERE user_id = '@bob:localhost'")
    assert len(row) == 1 and not row[0]["is_admin"]
    assert _login(client, "bob", "bob password 1") == 200
    assert client.request("GET", "/_matrix/client/v3/profile/@bob:localhost").body == {
        "displayname": "Bobby"
    }
    synadm("user", "modify", "@bob:localhost", "--admin", "-n", "Robert")
    assert db_rows(server, "SELECT is_admin FROM users WHERE user_id = '@bob:localhost'")[0][0]
    assert (
        client.request("GET", "/_matrix/client/v3/profile/@bob:localhost").body["displayname"]
        == "Robert"
    )

    # Reset a password: the new one works, the old one and the old session do not.
    synadm("user", "password", alice.user_id, "-p", "a new password 2")
    assert _login(client, "alice", "a new password 2") == 200
    assert _login(client, "alice", PASSWORD) == 403
    assert alice.request("GET", "/_matrix/client/v3/account/whoami").status == 401

    carl_room = (
        client.register("carl").request("POST", "/_matrix/client/v3/createRoom", {}).body["room_id"]
    )
    assert synadm("user", "membership", "@carl:localhost", "--ids") == {
        "joined_rooms": [carl_room], "total": 1,
    }  # fmt: skip
    whois = synadm("user", "whois", alice.user_id)
    assert whois["user_id"] == alice.user_id and len(whois["devices"]) == 1
    # Every call is an admin.request record.
    assert _admin_requests(server) >= before + 7


def _upload(user: Client, data: bytes) -> str:
    r = user.request(
        "POST", "/_matrix/media/v3/upload", raw=data, headers={"Content-Type": "image/png"}
    )
    assert r.status == 200, r.body
    return r.body["content_uri"]


def test_rooms_and_media(server, client, synadm):
    alice, bob = client.register("alice"), client.register("bob")
    room_id = alice.request(
        "POST", "/_matrix/client/v3/createRoom", {"name": "Purge me", "preset": "public_chat"}
    ).body["room_id"]
    assert bob.request("POST", f"/_matrix/client/v3/rooms/{room_id}/join", {}).status == 200
    mxc = _upload(alice, b"\x89PNG not really an image")
    media_id = mxc.rsplit("/", 1)[1]
    # (a first message that is media is held by the guard: a text message first)
    for txn, content in (("t0", {"msgtype": "m.text", "body": "hello"}),
                         ("t1", {"msgtype": "m.image", "body": "pic", "url": mxc})):  # fmt: skip
        r = alice.request(
            "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}", content
        )
        assert r.status == 200, r.body

    rooms = synadm("room", "list")
    assert [r["room_id"] for r in rooms["rooms"]] == [room_id]
    details = synadm("room", "details", room_id)
    assert details["name"] == "Purge me" and details["joined_members"] == 2
    members = synadm("room", "members", room_id)
    assert sorted(members["members"]) == sorted([alice.user_id, bob.user_id])

    # Media: listed per user and per room, quarantined (no longer served), deleted.
    listed = synadm("media", "list", "-u", alice.user_id)
    assert [m["media_id"] for m in listed["media"]] == [media_id]
    assert synadm("media", "list", "-r", room_id) == {"local": [mxc], "remote": []}
    synadm("media", "quarantine", "-i", media_id)
    assert db_rows(server, "SELECT media_id FROM guard_quarantined_media")[0][0] == media_id
    download = f"/_matrix/client/v1/media/download/localhost/{media_id}"
    assert bob.request("GET", download).status == 404
    synadm("media", "unquarantine", "-i", media_id)
    assert db_rows(server, "SELECT * FROM guard_quarantined_media") == []
    assert bob.request("GET", download).status == 200
    # Protected media is passed by when a user's (or a room's) media is quarantined.
    synadm("media", "protect", media_id)
    assert db_rows(server, "SELECT media_id FROM protected_media")[0][0] == media_id
    assert synadm("media", "quarantine", "-u", alice.user_id) == {"num_quarantined": 0}
    assert synadm("media", "list", "-u", alice.user_id)["media"][0]["safe_from_quarantine"]
    assert db_rows(server, "SELECT * FROM guard_quarantined_media") == []
    synadm("media", "delete", "-i", media_id)
    assert db_rows(server, "SELECT * FROM local_media WHERE media_id = ?", (media_id,)) == []
    assert not list((server.config.media_path / "local").rglob(media_id))

    # Delete the room (v2, purge by default): the users left, its rows are gone.
    result = synadm("room", "delete", room_id)
    delete_id = result["delete_id"]
    status = synadm("room", "delete-status", "-d", delete_id)
    assert status["status"] == "complete"
    assert sorted(status["shutdown_room"]["kicked_users"]) == sorted([alice.user_id, bob.user_id])
    for table in ("events", "current_state", "current_membership", "state_groups", "rooms"):
        assert db_rows(server, f"SELECT * FROM {table} WHERE room_id = ?", (room_id,)) == []  # noqa: S608
    assert db_rows(server, "SELECT * FROM ledger_entries WHERE action = 'room.purge'") != []
    assert alice.request("GET", "/_matrix/client/v3/joined_rooms").body["joined_rooms"] == []


def test_registration_tokens(server, client, synadm):
    created = synadm("regtok", "new", "-n", "tok3n.one", "-u", "3")
    assert created["token"] == "tok3n.one" and created["uses_allowed"] == 3
    rows = db_rows(server, "SELECT prefix, uses_allowed FROM registration_tokens")
    assert [tuple(r) for r in rows] == [("tok3", 3)]
    listed = synadm("regtok", "list")["registration_tokens"]
    assert len(listed) == 1 and listed[0]["uses_allowed"] == 3
    handle = listed[0]["token"]
    assert handle.startswith("tok3:") and "tok3n.one" not in json.dumps(listed)
    assert synadm("regtok", "details", handle)["uses_allowed"] == 3
    assert synadm("regtok", "details", "tok3n.one")["completed"] == 0
    synadm("regtok", "update", handle, "-u", "5")
    assert db_rows(server, "SELECT uses_allowed FROM registration_tokens")[0][0] == 5
    synadm("regtok", "update", handle, "-u", "-1")
    assert db_rows(server, "SELECT uses_allowed FROM registration_tokens")[0][0] is None
    synadm("regtok", "delete", handle)
    assert db_rows(server, "SELECT * FROM registration_tokens") == []


def test_server_notice_and_version(server, client, synadm):
    alice = client.register("alice")
    out = synadm("notice", "send", alice.user_id, "Maintenance tonight")
    event_id = out[0]["event_id"]
    rows = db_rows(server, "SELECT room_id, sender, json FROM events WHERE event_id = ?",
                   (event_id,))  # fmt: skip
    assert len(rows) == 1
    content = json.loads(rows[0]["json"])["content"]
    assert content["body"] == "Maintenance tonight" and content["msgtype"] == "m.server_notice"
    invites = alice.request("GET", "/_matrix/client/v3/sync").body["rooms"]["invite"]
    assert rows[0]["room_id"] in invites
    assert synadm("version")["server_version"].startswith("Bastion ")
