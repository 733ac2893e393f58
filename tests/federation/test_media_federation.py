"""Federated media (S-S API "Content Repository", C-S API "Content repository"): our media
served to other servers as ``multipart/mixed``, and remote media fetched, checked and cached
for our users."""

from __future__ import annotations

import email.parser
import email.policy
import io

from PIL import Image

from tests.support import server_pair
from tests.support.federation import https, run
from tests.support.harness import Client
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


def q(s: str) -> str:
    import urllib.parse

    return urllib.parse.quote(s, safe="")
