"""Content repository: uploads, asynchronous uploads, downloads, thumbnails, served headers
(C-S API "Content repository", "Serving inline content", "Thumbnails")."""

from __future__ import annotations

import hashlib
import http.client
import io
import re
import secrets
import threading
import time

import pytest
from PIL import Image

from tests.support.harness import Client, ServerThread

UPLOAD = "/_matrix/media/v3/upload"
CREATE = "/_matrix/media/v1/create"
DOWNLOAD = "/_matrix/client/v1/media/download"
THUMB = "/_matrix/client/v1/media/thumbnail"
CONFIG = "/_matrix/client/v1/media/config"


def make_user(server: ServerThread, client: Client) -> Client:
    """A logged-in user: via /register when it is served, else straight into the store."""
    r = client.request("GET", "/_matrix/client/v3/register/available", token=None)
    if r.status != 404 or r.body.get("errcode") != "M_UNRECOGNIZED":
        return client.register()
    from bastion.storage.sqlite.accounts import token_hash

    user_id = f"@u{secrets.token_hex(5)}:{server.config.server_name}"
    token = secrets.token_urlsafe(24)
    now = int(time.time() * 1000)

    def fn(conn):
        conn.execute(
            "INSERT INTO users (user_id, password_hash, created_ts) VALUES (?,?,?)",
            (user_id, None, now),
        )
        conn.execute(
            "INSERT INTO devices (user_id, device_id, last_seen_ts) VALUES (?,?,?)",
            (user_id, "DEV", now),
        )
        conn.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts)"
            " VALUES (?,?,?,?)",
            (token_hash(token), user_id, "DEV", now),
        )

    server.hs.store.db.write_sync(fn)
    c = Client(client.base_url, token)
    c.user_id, c.device_id = user_id, "DEV"
    return c


#: The thumbnail sizes of this module's server: the default set plus the sizes the thumbnail
#: tests below ask for, so each request is served at exactly its size.
TEST_THUMBNAIL_SIZES = (
    {"width": 32, "height": 32, "method": "crop"},
    {"width": 96, "height": 96, "method": "crop"},
    {"width": 320, "height": 100, "method": "crop"},
    {"width": 50, "height": 50, "method": "scale"},
    {"width": 100, "height": 100, "method": "scale"},
    {"width": 320, "height": 240, "method": "scale"},
    {"width": 500, "height": 200, "method": "scale"},
    {"width": 640, "height": 480, "method": "scale"},
    {"width": 800, "height": 600, "method": "scale"},
)


@pytest.fixture
def server(tmp_path):
    srv = ServerThread(tmp_path / "data", thumbnail_sizes=TEST_THUMBNAIL_SIZES).start()
    yield srv
    srv.stop()


@pytest.fixture
def alice(server, client):
    return make_user(server, client)


def upload(c: Client, data: bytes, content_type: str | None = "application/octet-stream",
           filename: str | None = None, **kw):  # fmt: skip
    headers = {"Content-Type": content_type} if content_type else {}
    query = {"filename": filename} if filename is not None else None
    return c.request("POST", UPLOAD, raw=data, headers=headers, query=query, **kw)


def split_mxc(uri: str) -> tuple[str, str]:
    m = re.fullmatch(r"mxc://([^/]+)/([A-Za-z0-9_-]+)", uri)
    assert m, uri
    return m.group(1), m.group(2)


def get_raw(c: Client, path: str, query: dict | None = None, token: str | None = "default"):
    """GET returning (status, bytes, headers) without JSON parsing."""
    r = c.request("GET", path, query=query, token=token)
    body = r.body.get("_raw", b"") if isinstance(r.body, dict) and "_raw" in r.body else None
    return r, body


def png_bytes(size=(400, 300), mode="RGB", color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


# -- upload and download -----------------------------------------------------------------------


def test_upload_download_roundtrip(server, alice):
    data = b"hello media\n" * 100
    r = upload(alice, data, "text/plain; charset=UTF-8", filename="hello.txt")
    assert r.status == 200, r.body
    server_name, media_id = split_mxc(r.body["content_uri"])
    assert server_name == "localhost"
    assert re.fullmatch(r"[A-Za-z0-9]{24,}", media_id)

    r = alice.request("GET", f"{DOWNLOAD}/localhost/{media_id}")
    assert r.status == 200
    assert r.body["_raw"] == data
    h = {k.lower(): v for k, v in r.headers.items()}
    assert h["content-type"] == "text/plain; charset=utf-8"
    assert h["content-disposition"] == 'inline; filename="hello.txt"'
    assert h["x-content-type-options"] == "nosniff"
    assert h["cross-origin-resource-policy"] == "cross-origin"
    csp = h["content-security-policy"]
    assert csp.startswith("sandbox;") and "default-src 'none'" in csp and "script-src 'none'" in csp

    # The file name in the path overrides the uploaded one; nio's trailing slash means none.
    r = alice.request("GET", f"{DOWNLOAD}/localhost/{media_id}/other%20name.txt")
    assert r.status == 200 and r.body["_raw"] == data
    assert r.headers["Content-Disposition"] == 'inline; filename="other name.txt"'
    r = alice.request("GET", f"{DOWNLOAD}/localhost/{media_id}/")
    assert r.status == 200 and r.headers["Content-Disposition"] == 'inline; filename="hello.txt"'

    row = server.hs.store.get_local_media(media_id)
    assert row["sha256"] == hashlib.sha256(data).hexdigest()
    assert row["size"] == len(data) and row["user_id"] == alice.user_id
    # (as stored: decrypted when the server encrypts media at rest)
    assert b"".join(server.hs.media.content_chunks(row)) == data
    # Nothing left behind in the temporary directory.
    assert list((server.config.media_path / "tmp").iterdir()) == []


def test_upload_without_filename_or_type(alice):
    r = alice.request("POST", UPLOAD, raw=b"\x00\x01binary")
    assert r.status == 200
    _, media_id = split_mxc(r.body["content_uri"])
    r = alice.request("GET", f"{DOWNLOAD}/localhost/{media_id}")
    assert r.status == 200 and r.body["_raw"] == b"\x00\x01binary"
    # No file name given: none in the header. Unknown type: an attachment.
    assert r.headers["Content-Disposition"] == "attachment"
    assert r.headers["Content-Type"].startswith("application/")


def test_empty_upload(alice):
    r = upload(alice, b"", "text/plain")
    assert r.status == 200
    _, media_id = split_mxc(r.body["content_uri"])
    r = alice.request("GET", f"{DOWNLOAD}/localhost/{media_id}")
    assert r.status == 200 and r.body == {}


def test_media_ids_are_unique(alice):
    ids = {split_mxc(upload(alice, b"x").body["content_uri"])[1] for _ in range(20)}
    assert len(ids) == 20


def test_config(alice, server):
    r = alice.request("GET", CONFIG)
    assert r.status == 200 and r.body == {"m.upload.size": server.config.max_upload_size}


def test_auth_required(alice, client):
    media_id = split_mxc(upload(alice, b"secret").body["content_uri"])[1]
    for method, path in [
        ("POST", UPLOAD), ("POST", CREATE), ("GET", CONFIG),
        ("GET", f"{DOWNLOAD}/localhost/{media_id}"),
        ("GET", f"{THUMB}/localhost/{media_id}?width=32&height=32"),
        ("PUT", f"/_matrix/media/v3/upload/localhost/{media_id}"),
    ]:  # fmt: skip
        r = client.request(method, path, raw=b"x" if method != "GET" else None, token=None)
        assert r.status == 401 and r.body["errcode"] == "M_MISSING_TOKEN", (path, r.body)
        r = client.request(method, path, raw=b"x" if method != "GET" else None, token="nope")
        assert r.status == 401 and r.body["errcode"] == "M_UNKNOWN_TOKEN", (path, r.body)


def test_legacy_unauthenticated_endpoints_are_frozen(alice, client):
    media_id = split_mxc(upload(alice, png_bytes()).body["content_uri"])[1]
    for path in (
        f"/_matrix/media/v3/download/localhost/{media_id}",
        f"/_matrix/media/v3/download/localhost/{media_id}/a.png",
        f"/_matrix/media/v3/thumbnail/localhost/{media_id}?width=32&height=32",
    ):
        for c in (client, alice):
            r = c.request("GET", path)
            assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND", path


def test_size_limit(tmp_path):
    srv = ServerThread(tmp_path / "data", max_upload_size=1000).start()
    try:
        alice = make_user(srv, Client(srv.base_url))
        assert alice.request("GET", CONFIG).body == {"m.upload.size": 1000}
        assert upload(alice, b"a" * 1000).status == 200
        r = upload(alice, b"a" * 1001)
        assert r.status == 413 and r.body["errcode"] == "M_TOO_LARGE"
        # Chunked transfer (no Content-Length): counted as it arrives.
        conn = http.client.HTTPConnection("127.0.0.1", srv.hs.bound_port, timeout=10)
        conn.request(
            "POST", UPLOAD, body=iter([b"b" * 600, b"b" * 600]), encode_chunked=True,
            headers={"Authorization": f"Bearer {alice.access_token}",
                     "Content-Type": "text/plain", "Transfer-Encoding": "chunked"},
        )  # fmt: skip
        resp = conn.getresponse()
        assert resp.status == 413 and b"M_TOO_LARGE" in resp.read()
        conn.close()
        # The create/PUT path has the same limit.
        uri = alice.request("POST", CREATE).body["content_uri"]
        r = alice.request("PUT", "/_matrix/media/v3/upload/" + uri[6:], raw=b"c" * 1001)
        assert r.status == 413 and r.body["errcode"] == "M_TOO_LARGE"
        assert list((srv.config.media_path / "tmp").iterdir()) == []
        assert alice.request("GET", "/_matrix/client/versions").status == 200
    finally:
        srv.stop()


# -- asynchronous uploads ----------------------------------------------------------------------


def test_async_upload_flow(server, alice, client):
    before = int(time.time() * 1000)
    r = alice.request("POST", CREATE)
    assert r.status == 200
    server_name, media_id = split_mxc(r.body["content_uri"])
    assert server_name == "localhost"
    assert r.body["unused_expires_at"] >= before + 23 * 3600 * 1000
    path = f"{DOWNLOAD}/localhost/{media_id}"

    r = alice.request("GET", path, query={"timeout_ms": "0"})
    assert r.status == 504 and r.body["errcode"] == "M_NOT_YET_UPLOADED"
    r = alice.request("GET", f"{THUMB}/localhost/{media_id}",
                      query={"width": "8", "height": "8", "timeout_ms": "50"})  # fmt: skip
    assert r.status == 504 and r.body["errcode"] == "M_NOT_YET_UPLOADED"

    # A download waiting on the upload gets the content as soon as it lands.
    got = {}

    def wait_download():
        got["r"] = alice.request("GET", path, query={"timeout_ms": "10000"})

    t = threading.Thread(target=wait_download)
    t.start()
    time.sleep(0.3)
    bob = make_user(server, client)
    put = f"/_matrix/media/v3/upload/localhost/{media_id}"
    r = bob.request("PUT", put, raw=b"late", headers={"Content-Type": "text/plain"})
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    t0 = time.monotonic()
    r = alice.request("PUT", put, raw=b"late content", headers={"Content-Type": "text/plain"},
                      query={"filename": "late.txt"})  # fmt: skip
    assert r.status == 200 and r.body == {}
    t.join(10)
    assert got["r"].status == 200 and got["r"].body["_raw"] == b"late content"
    assert time.monotonic() - t0 < 5
    assert got["r"].headers["Content-Disposition"] == 'inline; filename="late.txt"'

    # Only once.
    r = alice.request("PUT", put, raw=b"again", headers={"Content-Type": "text/plain"})
    assert r.status == 409 and r.body["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
    assert alice.request("GET", path).body["_raw"] == b"late content"


def test_async_upload_errors(server, alice):
    # A media ID that was never created, or that was uploaded directly, or is not ours.
    r = alice.request("PUT", "/_matrix/media/v3/upload/localhost/AAAAAAAAAAAAAAAAAAAAAAAA",
                      raw=b"x")  # fmt: skip
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    mid = split_mxc(upload(alice, b"direct").body["content_uri"])[1]
    r = alice.request("PUT", f"/_matrix/media/v3/upload/localhost/{mid}", raw=b"x")
    assert r.status == 409 and r.body["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
    r = alice.request("PUT", f"/_matrix/media/v3/upload/example.org/{mid}", raw=b"x")
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = alice.request("PUT", "/_matrix/media/v3/upload/localhost/..%2F..%2Fsigning.key", raw=b"x")
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    assert server.config.signing_key_path.read_bytes() != b"x"


def test_async_upload_expired(server, alice):
    uri = alice.request("POST", CREATE).body["content_uri"]
    media_id = split_mxc(uri)[1]
    server.hs.store.db.write_sync(
        lambda conn: conn.execute(
            "UPDATE local_media SET unused_expires_at = 1 WHERE media_id = ?", (media_id,)
        )
    )
    r = alice.request("PUT", f"/_matrix/media/v3/upload/localhost/{media_id}", raw=b"x")
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = alice.request("GET", f"{DOWNLOAD}/localhost/{media_id}", query={"timeout_ms": "0"})
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"


def test_pending_upload_limit(alice):
    from bastion.services.media import MAX_PENDING_UPLOADS

    for _ in range(MAX_PENDING_UPLOADS):
        assert alice.request("POST", CREATE).status == 200
    r = alice.request("POST", CREATE)
    assert r.status == 429 and r.body["errcode"] == "M_LIMIT_EXCEEDED"
    assert isinstance(r.body["retry_after_ms"], int)
    # Direct uploads are not pending uploads.
    assert upload(alice, b"x").status == 200


# -- thumbnails --------------------------------------------------------------------------------


def thumb(c: Client, media_id: str, **query):
    q = {k: str(v) for k, v in query.items()}
    return c.request("GET", f"{THUMB}/localhost/{media_id}", query=q)


def as_image(r) -> Image.Image:
    assert r.status == 200, r.body
    return Image.open(io.BytesIO(r.body["_raw"]))


def test_thumbnail_png(server, alice):
    original = png_bytes((400, 300))
    media_id = split_mxc(upload(alice, original, "image/png").body["content_uri"])[1]

    r = thumb(alice, media_id, width=32, height=32, method="crop")
    im = as_image(r)
    assert im.format == "PNG" and im.size == (32, 32)
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["Content-Disposition"].startswith("inline")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in r.headers["Content-Security-Policy"]

    assert as_image(thumb(alice, media_id, width=100, height=100, method="scale")).size == (100, 75)
    # Default method is scale; crop keeps the requested aspect ratio.
    assert as_image(thumb(alice, media_id, width=100, height=100)).size == (100, 75)
    assert as_image(thumb(alice, media_id, width=320, height=100, method="crop")).size == (320, 100)
    # Never upscale: as large as or larger than the original gives the original.
    r = thumb(alice, media_id, width=800, height=600)
    assert r.status == 200 and r.body["_raw"] == original
    # Larger than the request in one dimension only: still no upscaling.
    assert max(as_image(thumb(alice, media_id, width=500, height=200)).size) <= 400

    # Stored: the second request is served from the stored file.
    stored = sorted(p.name for p in server.hs.media._thumb_dir(media_id).iterdir())  # noqa: SLF001
    assert "32x32-crop.png" in stored
    assert as_image(thumb(alice, media_id, width=32, height=32, method="crop")).size == (32, 32)
    assert sorted(p.name for p in server.hs.media._thumb_dir(media_id).iterdir()) == stored  # noqa: SLF001


def test_thumbnail_jpeg_and_webp(alice):
    buf = io.BytesIO()
    Image.new("RGB", (300, 300), (0, 90, 200)).save(buf, format="JPEG")
    mid = split_mxc(upload(alice, buf.getvalue(), "image/jpeg").body["content_uri"])[1]
    r = thumb(alice, mid, width=96, height=96, method="crop")
    assert r.headers["Content-Type"] == "image/jpeg" and as_image(r).size == (96, 96)

    buf = io.BytesIO()
    Image.new("RGBA", (200, 100), (0, 90, 200, 128)).save(buf, format="WEBP")
    mid = split_mxc(upload(alice, buf.getvalue(), "image/webp").body["content_uri"])[1]
    r = thumb(alice, mid, width=50, height=50, method="scale")
    assert r.headers["Content-Type"] == "image/png" and as_image(r).size == (50, 25)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (120, 120), (i * 60, 0, 0)) for i in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return buf.getvalue()


def test_thumbnail_animated(alice):
    mid = split_mxc(upload(alice, animated_gif(), "image/gif").body["content_uri"])[1]
    r = thumb(alice, mid, width=32, height=32, method="crop", animated="true")
    im = as_image(r)
    assert r.headers["Content-Type"] == "image/webp"
    assert im.size == (32, 32) and getattr(im, "n_frames", 1) == 4
    # Not asked for (or asked not to): a static image.
    for query in ({}, {"animated": "false"}):
        r = thumb(alice, mid, width=32, height=32, method="crop", **query)
        im = as_image(r)
        assert r.headers["Content-Type"] == "image/png" and getattr(im, "n_frames", 1) == 1
    # Small animated original, animated=false: a static frame, not the original GIF.
    r = thumb(alice, mid, width=500, height=500, animated="false")
    assert r.headers["Content-Type"] == "image/png" and as_image(r).size == (120, 120)


def test_thumbnail_refuses_non_images_and_garbage(alice, monkeypatch):
    # Pillow's truncated-image tolerance is one process-wide flag that other libraries in the
    # test process (Synapse, imported by the differential tests) switch on; Bastion never does.
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    for data, ctype in [
        (b"plain text", "text/plain"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        (b"not a png at all", "image/png"),
        (png_bytes()[:60], "image/png"),  # truncated
        (b"GIF89a" + b"\xff" * 50, "image/gif"),
    ]:
        mid = split_mxc(upload(alice, data, ctype).body["content_uri"])[1]
        r = thumb(alice, mid, width=32, height=32)
        assert r.status == 400 and r.body["errcode"] == "M_UNKNOWN", (ctype, r.body)


def test_thumbnail_decompression_bomb(alice):
    # 10000 x 5000 one-bit pixels compress to a few kilobytes but would decode to 50 MP.
    buf = io.BytesIO()
    Image.new("1", (10000, 5000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 100_000
    mid = split_mxc(upload(alice, buf.getvalue(), "image/png").body["content_uri"])[1]
    r = thumb(alice, mid, width=32, height=32)
    assert r.status == 413 and r.body["errcode"] == "M_TOO_LARGE"


def test_thumbnail_bad_parameters(alice):
    mid = split_mxc(upload(alice, png_bytes(), "image/png").body["content_uri"])[1]
    r = thumb(alice, mid, height=32)
    assert r.status == 400 and r.body["errcode"] == "M_MISSING_PARAM"
    for bad in ({"width": "-1", "height": "32"}, {"width": "0", "height": "32"},
                {"width": "abc", "height": "32"}, {"width": "1e3", "height": "32"},
                {"width": "32", "height": "32", "method": "stretch"},
                {"width": "32", "height": "32", "animated": "yes"},
                {"width": "32", "height": "32", "timeout_ms": "soon"}):  # fmt: skip
        r = thumb(alice, mid, **bad)
        assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM", (bad, r.body)
    # Huge dimensions are clamped, not an error (no upscaling: the original).
    r = thumb(alice, mid, width=99999999, height=99999999)
    assert r.status == 200


# -- serving headers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctype", "served", "inline"),
    [
        ("text/html", "application/octet-stream", False),
        ("text/html; charset=utf-8", "application/octet-stream", False),
        ("TEXT/HTML", "application/octet-stream", False),
        ("image/svg+xml", "application/octet-stream", False),
        ("application/javascript", "application/octet-stream", False),
        ("application/xhtml+xml", "application/octet-stream", False),
        ("text/xml", "application/octet-stream", False),
        ("application/pdf", "application/pdf", False),
        ("image/png", "image/png", True),
        ("video/mp4", "video/mp4", True),
        ("application/json", "application/json", True),
        ("not a type", "application/octet-stream", False),
        ('text/plain; charset="utf-8"', "text/plain; charset=utf-8", True),
        ("text/csv; charset=<script>", "text/csv", True),
    ],
)
def test_served_headers(alice, ctype, served, inline):
    payload = b"<html><script>alert(1)</script></html>"
    r = alice.request("POST", UPLOAD, raw=payload, headers={"Content-Type": ctype},
                      query={"filename": "x.html"})  # fmt: skip
    assert r.status == 200, r.body
    mid = split_mxc(r.body["content_uri"])[1]
    r = alice.request("GET", f"{DOWNLOAD}/localhost/{mid}")
    assert r.status == 200 and r.body["_raw"] == payload
    assert r.headers["Content-Type"] == served
    disposition = r.headers["Content-Disposition"]
    assert disposition.startswith("inline" if inline else "attachment"), disposition
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Security-Policy"].startswith("sandbox")


def test_content_disposition_encoding(alice):
    name = 'résumé "final";\\.pdf'
    r = upload(alice, b"%PDF", "application/pdf", filename=name)
    mid = split_mxc(r.body["content_uri"])[1]
    r = alice.request("GET", f"{DOWNLOAD}/localhost/{mid}")
    d = r.headers["Content-Disposition"]
    assert d == "attachment; filename*=utf-8''r%C3%A9sum%C3%A9%20%22final%22%3B%5C.pdf"
    # Control characters are refused in the upload's name.
    r = upload(alice, b"x", "text/plain", filename="a\r\nSet-Cookie: x=y")
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    r = upload(alice, b"x", "text/plain", filename="a" * 256)
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    # A path-supplied override with an encoded CR LF cannot split the header.
    r = alice.request("GET", f"{DOWNLOAD}/localhost/{mid}/a%0d%0aSet-Cookie:%20x.pdf")
    assert r.status == 200 and "Set-Cookie" not in r.headers
    assert "\r" not in r.headers["Content-Disposition"]


# -- bad media IDs and server names ------------------------------------------------------------


@pytest.mark.parametrize(
    "segment",
    [
        "..",
        "..%2F..%2Fhomeserver.db",
        "%2E%2E%2F%2E%2E%2Fsigning.key",
        "a%00b",
        "..%5C..%5Cx",
        "%C0%AE%C0%AE",
        "%E2%80%A4%E2%80%A4",
        "x" * 300,
        "ab%2Fcd",
        "-",
        "AAAAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_path_traversal_media_ids(alice, segment):
    for path in (f"{DOWNLOAD}/localhost/{segment}", f"{DOWNLOAD}/localhost/{segment}/f.txt",
                 f"{THUMB}/localhost/{segment}?width=32&height=32"):  # fmt: skip
        r = alice.request("GET", path)
        assert r.status == 404, (path, r.status, r.body)
        assert r.body["errcode"] in ("M_NOT_FOUND", "M_UNRECOGNIZED"), r.body


def test_bad_and_remote_server_names(alice):
    mid = split_mxc(upload(alice, b"x").body["content_uri"])[1]
    for server_name in ("a%20b", "%2E%2E%2F", "exa_mple.com", "%5B::1", "a%2Fb"):
        r = alice.request("GET", f"{DOWNLOAD}/{server_name}/{mid}")
        assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM", (server_name, r.body)
    # Remote media: no federation, so not found ("." and "-" are valid DNS characters).
    for server_name in ("example.org", "..", "localhost:8448"):
        r = alice.request("GET", f"{DOWNLOAD}/{server_name}/{mid}")
        assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = alice.request("GET", f"{THUMB}/example.org/{mid}", query={"width": "8", "height": "8"})
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"


def test_download_is_not_limited_to_the_uploader(server, alice, client):
    # Media is addressed by an unguessable ID; any local user with the URI may fetch it.
    mid = split_mxc(upload(alice, b"shared", "text/plain").body["content_uri"])[1]
    bob = make_user(server, client)
    r = bob.request("GET", f"{DOWNLOAD}/localhost/{mid}")
    assert r.status == 200 and r.body["_raw"] == b"shared"


def test_concurrent_creates_and_puts(server, alice):
    from concurrent.futures import ThreadPoolExecutor

    from bastion.services.media import MAX_PENDING_UPLOADS

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: alice.request("POST", CREATE), range(25)))
    ok = [r for r in results if r.status == 200]
    assert len(ok) == MAX_PENDING_UPLOADS
    assert all(r.body["errcode"] == "M_LIMIT_EXCEEDED" for r in results if r.status != 200)

    # Many PUTs to one media ID: exactly one is accepted, and its bytes are what is served.
    put = "/_matrix/media/v3/upload/" + ok[0].body["content_uri"][len("mxc://") :]
    with ThreadPoolExecutor(8) as pool:
        puts = list(pool.map(lambda i: (i, alice.request("PUT", put, raw=b"v%d" % i)), range(8)))
    winners = [i for i, r in puts if r.status == 200]
    assert len(winners) == 1
    assert all(r.body["errcode"] == "M_CANNOT_OVERWRITE_MEDIA" for _, r in puts if r.status != 200)
    media_id = put.rsplit("/", 1)[1]
    r = alice.request("GET", f"{DOWNLOAD}/localhost/{media_id}")
    assert r.body["_raw"] == b"v%d" % winners[0]


def test_head_download(alice):
    media_id = split_mxc(upload(alice, b"head me", "text/plain").body["content_uri"])[1]
    r = alice.request("HEAD", f"{DOWNLOAD}/localhost/{media_id}")
    assert r.status == 200 and r.headers["Content-Length"] == "7"
    assert r.headers["Content-Disposition"] == "inline"


def test_partial_uploads_removed_at_start(tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / "media" / "tmp").mkdir(parents=True)
    part = data_dir / "media" / "tmp" / "deadbeef.part"
    part.write_bytes(b"cut off by a crash")
    srv = ServerThread(data_dir).start()
    try:
        assert not part.exists()
    finally:
        srv.stop()
