"""The Synapse admin API's "Media Admin API" for other servers' media, over HTTP against a
Bastion that fetches from a scripted remote: a media's details (cached, quarantined, unknown),
quarantine and release by ID (cached or not: never served, never fetched, the cached file and
thumbnails deleted), a fetch quarantined while it runs, a room's quarantine covering its remote
media, delete refused as Synapse refuses it, and hostile input answered with Matrix errors."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import threading
import time
import urllib.parse
from types import SimpleNamespace

import pytest
from aiohttp import web
from PIL import Image

from tests.support.accounts import assert_error, make_admin
from tests.support.federation import start_fed_server
from tests.support.harness import Client
from tests.support.peer import FakePeer, on_server

A = "/_synapse/admin/v1"
MEDIA = "/_matrix/client/v1/media"
BOUNDARY = "adminmediaboundary"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (320, 200), (20, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


DATA = _png()


@pytest.fixture
def remote(tmp_path, test_ca):
    """The server under test (``srv``), a scripted remote (``peer``) serving ``DATA`` for any
    media ID but ``missing`` (404; ``slow`` only once ``released`` is set), an admin and a
    user."""
    srv = start_fed_server(tmp_path, test_ca, "bastion", registration="open")
    peer = FakePeer(test_ca, "peer").start()
    released = threading.Event()

    async def handler(req: web.Request) -> web.StreamResponse:
        media_id = req.path.rsplit("/", 1)[-1]
        if media_id == "missing" or not req.path.startswith("/_matrix/federation/v1/media/"):
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)
        if media_id == "slow":
            while not released.is_set():
                await asyncio.sleep(0.02)
        png = b'Content-Type: image/png\r\nContent-Disposition: inline; filename="p.png"\r\n'
        body = (f"--{BOUNDARY}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n".encode()
                + f"--{BOUNDARY}\r\n".encode() + png + b"\r\n" + DATA
                + f"\r\n--{BOUNDARY}--\r\n".encode())  # fmt: skip
        return web.Response(
            body=body, headers={"Content-Type": f"multipart/mixed; boundary={BOUNDARY}"}
        )

    peer.media_handler = handler
    bob = Client(srv.base_url).register()
    admin = Client(srv.base_url).register()
    make_admin(srv, admin.user_id)
    yield SimpleNamespace(srv=srv, peer=peer, admin=admin, bob=bob, released=released)
    released.set()
    peer.stop()
    srv.stop()


def _asked(peer: FakePeer, media_id: str) -> int:
    return sum(1 for _m, p in peer.requests if p.endswith("/" + media_id))


def _records(srv, route: str) -> list[dict]:
    rows = on_server(srv, lambda: srv.hs.store.db.read(
        "SELECT entry FROM ledger_entries WHERE action = 'admin.request'"))  # fmt: skip
    recs = [json.loads(r[0]) for r in rows]
    return [r for r in recs if r.get("details", {}).get("route") == route]


def test_quarantine_a_cached_remote_media(remote):
    srv, peer, admin, bob = remote.srv, remote.peer, remote.admin, remote.bob
    origin = peer.server_name
    download = f"{MEDIA}/download/{q(origin)}/cat"
    thumbnail = f"{MEDIA}/thumbnail/{q(origin)}/cat"
    small = {"width": "32", "height": "32", "method": "crop"}
    assert bob.request("GET", download).body["_raw"] == DATA
    assert bob.request("GET", thumbnail, query=small).status == 200
    row = srv.hs.store.get_remote_media(origin, "cat")
    file = srv.hs.config.media_path / row["file_path"]
    thumbs = srv.hs.config.media_path / "remote_thumbnails" / row["file_path"][len("remote/") :]
    assert file.is_file() and any(thumbs.iterdir())

    # Its details, in Synapse's shape.
    r = admin.request("GET", f"{A}/media/{q(origin)}/cat")
    assert r.status == 200, r.body
    info = r.body["media_info"]
    assert {k: info[k] for k in ("media_origin", "user_id", "media_id", "media_type",
                                 "media_length", "upload_name", "quarantined_by",
                                 "safe_from_quarantine", "sha256")} == {
        "media_origin": origin, "user_id": None, "media_id": "cat", "media_type": "image/png",
        "media_length": len(DATA), "upload_name": "p.png", "quarantined_by": None,
        "safe_from_quarantine": False, "sha256": hashlib.sha256(DATA).hexdigest(),
    }  # fmt: skip
    assert isinstance(info["created_ts"], int) and info["last_access_ts"] >= info["created_ts"]

    # Quarantined (the server name percent-encoded, the media ID too): not served, not
    # fetched again, the cached file and its thumbnails gone from disk.
    r = admin.request("POST", f"{A}/media/quarantine/{q(origin)}/c%61t", {})
    assert (r.status, r.body) == (200, {})
    assert_error(bob.request("GET", download), 404, "M_NOT_FOUND")
    assert_error(bob.request("GET", thumbnail, query=small), 404, "M_NOT_FOUND")
    assert_error(admin.request("GET", download), 404, "M_NOT_FOUND")
    assert _asked(peer, "cat") == 1
    assert not file.exists() and not thumbs.exists()
    assert srv.hs.store.get_remote_media(origin, "cat") is None
    # Its details stay visible, with who quarantined it; recorded like a local quarantine.
    info = admin.request("GET", f"{A}/media/{q(origin)}/cat").body["media_info"]
    assert admin.user_id in info["quarantined_by"] and info["media_length"] == len(DATA)
    assert info["sha256"] == hashlib.sha256(DATA).hexdigest()
    recs = _records(srv, "POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}")
    assert [(x["actor"], x["target"]) for x in recs] == [(admin.user_id, f"mxc://{origin}/cat")]
    # Quarantining it again changes nothing.
    assert admin.request("POST", f"{A}/media/quarantine/{q(origin)}/cat", {}).status == 200

    # Released: fetched again on the next request.
    r = admin.request("POST", f"{A}/media/unquarantine/{q(origin)}/cat", {})
    assert (r.status, r.body) == (200, {})
    assert bob.request("GET", download).body["_raw"] == DATA
    assert _asked(peer, "cat") == 2
    info = admin.request("GET", f"{A}/media/{q(origin)}/cat").body["media_info"]
    assert info["quarantined_by"] is None
    # Deleting another server's media is refused, as Synapse refuses it.
    r = admin.request("DELETE", f"{A}/media/{q(origin)}/cat", {})
    assert_error(r, 400, "M_INVALID_PARAM")
    assert r.body["error"] == "Can only delete local media"
    assert srv.hs.store.get_remote_media(origin, "cat") is not None


def test_quarantine_remote_media_never_fetched(remote):
    peer, admin, bob = remote.peer, remote.admin, remote.bob
    origin = peer.server_name
    r = admin.request("POST", f"{A}/media/quarantine/{origin}/dog", {})
    assert (r.status, r.body) == (200, {})
    assert_error(bob.request("GET", f"{MEDIA}/download/{q(origin)}/dog"), 404, "M_NOT_FOUND")
    r = bob.request("GET", f"{MEDIA}/thumbnail/{q(origin)}/dog", query={"width": "8",
                                                                         "height": "8"})  # fmt: skip
    assert_error(r, 404, "M_NOT_FOUND")
    assert _asked(peer, "dog") == 0
    info = admin.request("GET", f"{A}/media/{q(origin)}/dog").body["media_info"]
    assert info["quarantined_by"] and info["media_length"] is None and info["user_id"] is None
    # A server never contacted: the quarantine is recorded all the same.
    assert admin.request("POST", f"{A}/media/quarantine/unknown.example/abc", {}).status == 200
    info = admin.request("GET", f"{A}/media/unknown.example/abc").body["media_info"]
    assert info["media_origin"] == "unknown.example" and info["quarantined_by"]
    assert admin.request("POST", f"{A}/media/unquarantine/{origin}/dog", {}).status == 200
    assert bob.request("GET", f"{MEDIA}/download/{q(origin)}/dog").body["_raw"] == DATA
    assert _asked(peer, "dog") == 1


def test_a_fetch_quarantined_while_it_runs_is_thrown_away(remote):
    srv, peer, admin, bob = remote.srv, remote.peer, remote.admin, remote.bob
    origin = peer.server_name
    got: dict = {}
    t = threading.Thread(
        target=lambda: got.update(r=bob.request("GET", f"{MEDIA}/download/{q(origin)}/slow"))
    )
    t.start()
    deadline = time.monotonic() + 10
    while _asked(peer, "slow") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _asked(peer, "slow") == 1
    assert admin.request("POST", f"{A}/media/quarantine/{origin}/slow", {}).status == 200
    remote.released.set()
    t.join(30)
    assert_error(got["r"], 404, "M_NOT_FOUND")
    assert srv.hs.store.get_remote_media(origin, "slow") is None
    media = srv.hs.config.media_path
    assert not [p for p in (media / "remote").rglob("*") if p.is_file()]
    assert list((media / "tmp").glob("*")) == []


def test_room_quarantine_covers_remote_media(remote):
    srv, peer, admin, bob = remote.srv, remote.peer, remote.admin, remote.bob
    origin = peer.server_name
    room_id = bob.request("POST", "/_matrix/client/v3/createRoom", {}).body["room_id"]
    up = bob.request("POST", "/_matrix/media/v3/upload", raw=b"mine",
                     headers={"Content-Type": "text/plain"}).body["content_uri"]  # fmt: skip
    cat, thumb = f"mxc://{origin}/cat", f"mxc://{origin}/catthumb"
    contents = [
        {"msgtype": "m.text", "body": "hello"},  # (the guard holds a new account's first media)
        {"msgtype": "m.image", "body": "cat", "url": cat, "info": {"thumbnail_url": thumb}},
        {"msgtype": "m.file", "body": "mine", "url": up},
        {"msgtype": "m.image", "body": "odd", "url": "mxc://bad server/abc"},
        {"msgtype": "m.image", "body": "again", "url": cat},
    ]
    for i, content in enumerate(contents):
        path = f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t{i}"
        assert bob.request("PUT", path, content).status == 200
    assert bob.request("GET", f"{MEDIA}/download/{q(origin)}/cat").status == 200
    r = admin.request("GET", f"{A}/room/{q(room_id)}/media")
    assert r.body == {"local": [up], "remote": [cat, thumb, "mxc://bad server/abc"]}
    r = admin.request("POST", f"{A}/room/{q(room_id)}/media/quarantine", {})
    assert r.body == {"num_quarantined": 3}  # the upload, cat, catthumb (not the malformed one)
    for media_id in ("cat", "catthumb"):
        r = bob.request("GET", f"{MEDIA}/download/{q(origin)}/{media_id}")
        assert_error(r, 404, "M_NOT_FOUND")
    assert _asked(peer, "cat") == 1 and _asked(peer, "catthumb") == 0
    assert srv.hs.store.get_remote_media(origin, "cat") is None
    assert admin.request("POST", f"{A}/room/{q(room_id)}/media/quarantine", {}).body == {
        "num_quarantined": 0
    }


def test_hostile_input_gets_matrix_errors(remote):
    srv, peer, admin, bob = remote.srv, remote.peer, remote.admin, remote.bob
    origin = q(peer.server_name)
    for method, path, status, errcode in [
        ("POST", f"{A}/media/quarantine/bad%20server/abc", 400, "M_INVALID_PARAM"),
        ("POST", f"{A}/media/quarantine/{origin}/bad%2Fid", 404, "M_NOT_FOUND"),
        ("POST", f"{A}/media/quarantine/{origin}/..%2F..%2Fetc", 404, "M_NOT_FOUND"),
        ("POST", f"{A}/media/quarantine/%5B%3A%3A1/abc", 400, "M_INVALID_PARAM"),
        ("POST", f"{A}/media/quarantine/{'a' * 300}.example/abc", 400, "M_INVALID_PARAM"),
        ("POST", f"{A}/media/unquarantine/bad%00server/abc", 400, "M_INVALID_PARAM"),
        ("POST", f"{A}/media/unquarantine/{origin}/never", 404, "M_NOT_FOUND"),
        ("GET", f"{A}/media/{origin}/never", 404, "M_NOT_FOUND"),
        ("GET", f"{A}/media/unknown.example/abc", 404, "M_NOT_FOUND"),
        ("GET", f"{A}/media/bad%2Fserver/abc", 400, "M_INVALID_PARAM"),
        ("GET", f"{A}/media/{origin}/%E2%80%AE", 404, "M_NOT_FOUND"),
        ("DELETE", f"{A}/media/unknown.example/abc", 400, "M_INVALID_PARAM"),
        ("DELETE", f"{A}/media/bad%20server/abc", 400, "M_INVALID_PARAM"),
    ]:
        r = admin.request(method, path, {} if method != "GET" else None)
        assert (r.status, r.body.get("errcode")) == (status, errcode), (path, r.body)
    # Nothing was recorded as quarantined by the refused calls; only admins may call.
    rows = on_server(srv, lambda: srv.hs.store.db.read("SELECT * FROM quarantined_remote_media"))
    assert rows == []
    for method, path in [("POST", f"{A}/media/quarantine/{origin}/cat"),
                         ("POST", f"{A}/media/unquarantine/{origin}/cat"),
                         ("GET", f"{A}/media/{origin}/cat")]:  # fmt: skip
        assert_error(bob.request(method, path, {} if method == "POST" else None), 403,
                     "M_FORBIDDEN")  # fmt: skip
