"""Federated media (S-S API "Content Repository", C-S API "Content repository"): our media
served to other servers as ``multipart/mixed``, and remote media fetched, checked and cached
for our users."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiohttp import web
from PIL import Image

from tests.support import server_pair
from tests.support.accounts import make_admin
from tests.support.federation import https, run, start_fed_server
from tests.support.harness import Client
from tests.support.peer import FakePeer
from tests.support.server_pair import fed

pair = server_pair.pair  # the fixture
V1 = "/_matrix/federation/v1"
MEDIA = "/_matrix/client/v1/media"


def _png(w: int = 640, h: int = 480) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 90)).save(buf, format="PNG")
    return buf.getvalue()


def upload(c: Client, data: bytes, ctype: str = "image/png", name: str = "cat.png") -> str:
    r = c.request("POST", "/_matrix/media/v3/upload", raw=data, query={"filename": name},
                  headers={"Content-Type": ctype})  # fmt: skip
    assert r.status == 200, r.body
    return r.body["content_uri"]


def multipart(raw: bytes, ctype: str) -> list:
    """The parts of a multipart/mixed body (email's MIME parser, independent of the server's)."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw
    )
    assert msg.is_multipart()
    return list(msg.iter_parts())


def fed_raw(ca, src, dst, path: str):
    """(status, headers, body bytes) of a signed federation GET."""
    import http.client

    from bastion.core.x_matrix import authorization_header

    key = src.hs.signing_key
    auth = authorization_header(
        "GET", path, src.hs.server_name, dst.hs.server_name, key.key_id, key.key, None
    )
    conn = http.client.HTTPSConnection(
        "127.0.0.1", dst.hs.federation_bound_port, context=ca.client_context(), timeout=30
    )
    try:
        conn.request("GET", path, headers={"Authorization": auth})
        resp = conn.getresponse()
        return resp.status, dict(resp.headers), resp.read()
    finally:
        conn.close()


def test_media_served_to_another_server(pair, test_ca):
    a, b = pair
    alice = Client(a.base_url).register()
    data = _png()
    media_id = upload(alice, data).rsplit("/", 1)[1]
    # Download: the metadata part, then the file with its type and name.
    status, headers, raw = fed_raw(test_ca, b, a, f"{V1}/media/download/{media_id}")
    assert status == 200, raw[:200]
    assert headers["Content-Type"].startswith("multipart/mixed; boundary=")
    meta, content = multipart(raw, headers["Content-Type"])
    assert meta.get_content_type() == "application/json"
    assert meta.get_payload(decode=True).strip() == b"{}"
    assert content.get_content_type() == "image/png"
    assert 'filename="cat.png"' in content["Content-Disposition"]
    assert content.get_payload(decode=True) == data  # decrypted when encrypted at rest
    # Thumbnail: a smaller PNG from the thumbnailer.
    path = f"{V1}/media/thumbnail/{media_id}?width=32&height=32&method=scale"
    status, headers, raw = fed_raw(test_ca, b, a, path)
    assert status == 200, raw[:200]
    _, thumb = multipart(raw, headers["Content-Type"])
    im = Image.open(io.BytesIO(thumb.get_payload(decode=True)))
    assert max(im.size) < 640
    # Bad parameters, unknown media, unsigned requests: Matrix errors.
    s, body = fed(test_ca, b, a, "GET", f"{V1}/media/thumbnail/{media_id}?width=x&height=1")
    assert (s, body["errcode"]) == (400, "M_INVALID_PARAM")
    s, body = fed(test_ca, b, a, "GET", f"{V1}/media/download/nosuchmedia")
    assert (s, body["errcode"]) == (404, "M_NOT_FOUND")
    s, body = fed(test_ca, b, a, "GET", f"{V1}/media/download/..%2F..%2Fetc")
    assert s == 404 and body["errcode"] == "M_NOT_FOUND"
    s, body = https(test_ca, a.hs.federation_bound_port, "GET", f"{V1}/media/download/{media_id}")
    assert s == 401
    # Quarantined media is not served to other servers either.

    async def quarantine():
        def fn(conn):
            a.hs.store.quarantine_media_in(conn, media_id, None, "test", a.hs.now_ms())

        await a.hs.store.transaction(fn)

    run(a, quarantine())
    s, body = fed(test_ca, b, a, "GET", f"{V1}/media/download/{media_id}")
    assert (s, body["errcode"]) == (404, "M_NOT_FOUND")


# -- remote media fetched for our users ----------------------------------------------------------


def test_remote_media_downloaded_thumbnailed_and_cached(pair, test_ca):
    a, b = pair
    alice = Client(a.base_url).register()
    bob = Client(b.base_url).register()
    data = _png()
    mxc = upload(alice, data)
    origin, media_id = mxc[len("mxc://") :].split("/")
    r = bob.request("GET", f"{MEDIA}/download/{q(origin)}/{media_id}")
    assert r.status == 200, r.body
    assert r.body["_raw"] == data
    assert r.headers["Content-Type"] == "image/png"
    assert 'filename="cat.png"' in r.headers["Content-Disposition"]
    r = bob.request("GET", f"{MEDIA}/download/{q(origin)}/{media_id}/other.png")
    assert r.status == 200 and 'filename="other.png"' in r.headers["Content-Disposition"]
    query = {"width": "32", "height": "32", "method": "crop"}
    r = bob.request("GET", f"{MEDIA}/thumbnail/{q(origin)}/{media_id}", query=query)
    assert r.status == 200, r.body
    assert Image.open(io.BytesIO(r.body["_raw"])).size == (32, 32)
    # Cached on B (encrypted at rest when that is on): the origin forgets the media, B still
    # serves it and its thumbnails, without asking the origin again.
    row = b.hs.store.get_remote_media(origin, media_id)
    assert row is not None and row["size"] == len(data)
    assert (row["file_key"] is not None) == b.hs.media.encrypt
    stored = (b.hs.config.media_path / row["file_path"]).read_bytes()
    assert (stored == data) != b.hs.media.encrypt

    async def forget():
        await a.hs.store.transaction(lambda c: a.hs.store.delete_local_media_in(c, [media_id]))
        a.hs.media.delete_files(media_id)

    run(a, forget())
    assert alice.request("GET", f"{MEDIA}/download/{q(origin)}/{media_id}").status == 404
    r = bob.request("GET", f"{MEDIA}/download/{q(origin)}/{media_id}")
    assert (r.status, r.body["_raw"]) == (200, data)
    query = {"width": "96", "height": "96", "method": "scale"}
    r = bob.request("GET", f"{MEDIA}/thumbnail/{q(origin)}/{media_id}", query=query)
    assert r.status == 200 and max(Image.open(io.BytesIO(r.body["_raw"])).size) < 640
    # Unknown remote media is 404, a malformed one 404 or 400, never a 5xx.
    r = bob.request("GET", f"{MEDIA}/download/{q(origin)}/nosuchmedia")
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")
    r = bob.request("GET", f"{MEDIA}/download/{q(origin)}/bad%2Fid")
    assert r.status == 404
    r = bob.request("GET", f"{MEDIA}/download/bad%20server/abc")
    assert (r.status, r.body["errcode"]) == (400, "M_INVALID_PARAM")
    # The Synapse admin API's "Purge Remote Media API" empties the cache: B must ask A again,
    # which no longer has the file.
    make_admin(b, bob.user_id)
    before = str(b.hs.now_ms() + 1000)
    r = bob.request("POST", "/_synapse/admin/v1/purge_media_cache", query={"before_ts": before})
    assert (r.status, r.body) == (200, {"deleted": 1})
    assert b.hs.store.get_remote_media(origin, media_id) is None
    assert not (b.hs.config.media_path / row["file_path"]).exists()
    r = bob.request("GET", f"{MEDIA}/download/{q(origin)}/{media_id}")
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")


def q(s: str) -> str:
    import urllib.parse

    return urllib.parse.quote(s, safe="")


# -- a scripted remote server: caps, hostile answers, one fetch, the legacy fallback -------------

LIMIT = 200_000  # max_upload_size of the server under test
B = "peerboundary42"


def _parts(*parts: tuple[dict, bytes], close: bool = True) -> bytes:
    out = b""
    for headers, body in parts:
        out += f"--{B}\r\n".encode()
        out += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
        out += b"\r\n" + body + b"\r\n"
    return out + (f"--{B}--\r\n".encode() if close else b"")


META = ({"Content-Type": "application/json"}, b"{}")


@pytest.fixture
def bastion_peer(tmp_path, test_ca):
    srv = start_fed_server(tmp_path, test_ca, "bastion", registration="open", max_upload_size=LIMIT)
    peer = FakePeer(test_ca, "peer").start()
    yield srv, peer
    peer.stop()
    srv.stop()


def _script(peer: FakePeer, data: bytes) -> dict:
    """Scripted answers by media ID; returns what the huge stream managed to send."""
    sent = {"huge": 0, "done": threading.Event()}
    mp = {"Content-Type": f"multipart/mixed; boundary={B}"}
    png = {"Content-Type": "image/png", "Content-Disposition": 'inline; filename="p.png"'}

    async def handler(req: web.Request) -> web.StreamResponse:
        path = req.path
        media_id = path.rsplit("/", 1)[-1]
        if path.startswith("/_matrix/media/v3/download/"):
            if media_id == "legacy":
                return web.Response(body=data, headers=png)
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)
        if path.startswith("/_matrix/media/x/"):  # the target of a Location
            return web.Response(body=data, headers={"Content-Type": "image/png"})
        if media_id == "slow":
            await asyncio.sleep(0.5)
            return web.Response(body=_parts(META, (png, data)), headers=mp)
        if media_id == "html":
            html = {"Content-Type": "text/html", "Content-Disposition": "inline; filename=x.html"}
            return web.Response(body=_parts(META, (html, b"<script>alert(1)</script>")), headers=mp)
        if media_id == "huge":
            resp = web.StreamResponse(headers=mp)
            await resp.prepare(req)
            await resp.write(f"--{B}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n".encode())
            await resp.write(f"--{B}\r\nContent-Type: image/png\r\n\r\n".encode())
            try:
                for _ in range(800):  # 50 MiB, paced (a lost TLS connection may not say so)
                    if req.transport is None or req.transport.is_closing():
                        break
                    await resp.write(b"\0" * 65536)
                    await asyncio.sleep(0.005)
                    sent["huge"] += 65536
            except (ConnectionError, RuntimeError):
                pass
            finally:
                sent["done"].set()
            return resp
        if media_id == "announcedhuge":
            part = {"Content-Type": "image/png", "Content-Length": str(10**12)}
            return web.Response(body=_parts(META, (part, b"x" * 10)), headers=mp)
        if media_id == "legacy":
            return web.json_response({"errcode": "M_UNRECOGNIZED", "error": "no"}, status=404)
        bodies = {
            "noboundary": ({"Content-Type": "multipart/mixed"}, _parts(META, (png, data))),
            "notmultipart": ({"Content-Type": "image/png"}, data),
            "nothing": (mp, f"--{B}--\r\n".encode()),
            "onlymeta": (mp, _parts(META)),
            "badmeta": (mp, _parts(({"Content-Type": "application/json"}, b"[1,"), (png, data))),
            "unclosed": (mp, _parts(META, (png, data), close=False)[:-40]),
            "private": (mp, _parts(META, ({"Location": "http://10.1.2.3/file"}, b""))),
            "fileurl": (mp, _parts(META, ({"Location": "file:///etc/passwd"}, b""))),
            "redirect": (mp, _parts(META, ({
                "Location": f"https://127.0.0.1:{peer.port}/_matrix/media/x/file"}, b""))),
        }  # fmt: skip
        if media_id in bodies:
            headers, body = bodies[media_id]
            return web.Response(body=body, headers=headers)
        if media_id == "broken":
            return web.json_response({"errcode": "M_UNKNOWN", "error": "oops"}, status=500)
        return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)

    peer.media_handler = handler
    return sent


def _asked(peer: FakePeer, suffix: str) -> int:
    return sum(1 for _m, p in peer.requests if p.endswith("/" + suffix))


def test_remote_fetch_caps_hostile_answers_and_fallback(bastion_peer):
    srv, peer = bastion_peer
    data = _png(64, 64)
    sent = _script(peer, data)
    bob = Client(srv.base_url).register()
    base = f"{MEDIA}/download/{q(peer.server_name)}"

    def get(media_id: str):
        return bob.request("GET", f"{base}/{media_id}")

    # Concurrent requests for one remote file make one fetch; later ones use the cache.
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _i: get("slow"), range(5)))
    assert [(r.status, r.body.get("_raw")) for r in answers] == [(200, data)] * 5
    assert get("slow").status == 200
    assert _asked(peer, "slow") == 1
    # Larger than max_upload_size: refused, the transfer cut off early, nothing cached.
    r = get("huge")
    assert (r.status, r.body["errcode"]) == (502, "M_TOO_LARGE")
    assert sent["huge"] < 10 * 1024 * 1024  # answered long before the remote was done
    assert sent["done"].wait(30)
    assert srv.hs.store.get_remote_media(peer.server_name, "huge") is None
    assert list((srv.hs.config.media_path / "tmp").glob("*")) == []  # the partial file is gone
    r = get("announcedhuge")
    assert (r.status, r.body["errcode"]) == (502, "M_TOO_LARGE")
    # Hostile or broken answers: a clean Matrix error, never a 500, nothing cached.
    for media_id in ("noboundary", "notmultipart", "nothing", "onlymeta", "badmeta",
                     "unclosed", "private", "fileurl", "broken"):  # fmt: skip
        r = get(media_id)
        assert (r.status, r.body.get("errcode")) == (502, "M_UNKNOWN"), (media_id, r.body)
        assert srv.hs.store.get_remote_media(peer.server_name, media_id) is None
    # A Location to an allowed https URL is followed.
    r = get("redirect")
    assert (r.status, r.body["_raw"]) == (200, data)
    # Active content is kept as it came but served as an attachment, like an upload.
    r = get("html")
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Content-Disposition"].startswith("attachment")
    # 404 M_NOT_FOUND is final; only 404 M_UNRECOGNIZED falls back to the legacy endpoint.
    r = get("missing")
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")
    assert not any(p.startswith("/_matrix/media/v3/") and p.endswith("/missing")
                   for _m, p in peer.requests)  # fmt: skip
    r = get("legacy")
    assert (r.status, r.body["_raw"]) == (200, data)
    assert any(p.startswith("/_matrix/media/v3/download/") for _m, p in peer.requests)
    # A thumbnail of remote media is made here from the cached original.
    r = bob.request("GET", f"{MEDIA}/thumbnail/{q(peer.server_name)}/legacy",
                    query={"width": "16", "height": "16", "method": "crop"})  # fmt: skip
    assert r.status == 200 and Image.open(io.BytesIO(r.body["_raw"])).size == (32, 32)
    assert _asked(peer, "legacy") == 2  # the federation endpoint and the legacy one, once


def test_new_remote_fetches_are_limited_per_user(bastion_peer):
    """Each new fetch of another server's media can move up to max_upload_size bytes: one
    user may start only so many (429 ``M_LIMIT_EXCEEDED`` past them); files already cached,
    and other users, are not held back."""
    from bastion.core.rate_limit import TokenBuckets

    srv, peer = bastion_peer
    data = _png(32, 32)
    _script(peer, data)
    srv.hs.media._remote_fetches = TokenBuckets(0.001, 2)  # two fetches, then none for a while
    bob = Client(srv.base_url).register()
    carol = Client(srv.base_url).register()
    base = f"{MEDIA}/download/{q(peer.server_name)}"
    assert bob.request("GET", f"{base}/slow").status == 200
    assert bob.request("GET", f"{base}/legacy").status == 200
    r = bob.request("GET", f"{base}/redirect")
    assert (r.status, r.body["errcode"]) == (429, "M_LIMIT_EXCEEDED"), r.body
    assert r.body["retry_after_ms"] > 0
    assert _asked(peer, "redirect") == 0  # refused before asking the remote
    assert bob.request("GET", f"{base}/slow").status == 200  # cached: no fetch, no token
    assert carol.request("GET", f"{base}/redirect").status == 200
