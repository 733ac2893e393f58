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
