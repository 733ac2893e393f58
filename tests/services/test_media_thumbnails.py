"""Thumbnails come in a fixed, configured set of sizes, each generated once (C-S API "Thumbnails":
the server may return a different size than asked for). Asking for a new size must never cost a
new decode: every request maps to a configured size, the generated file is stored beside the
media, and concurrent requests for it share one generation."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

import bastion.services.media as media_service
from bastion.core.media import DEFAULT_THUMBNAIL_SIZES
from tests.api.client.test_media import animated_gif, as_image, png_bytes, split_mxc, thumb, upload
from tests.support.harness import Client, ServerThread


@pytest.fixture
def server(tmp_path):
    srv = ServerThread(tmp_path / "data").start()  # the default thumbnail sizes
    yield srv
    srv.stop()


@pytest.fixture
def alice(server):
    return Client(server.base_url).register()


@pytest.fixture
def image_work(monkeypatch):
    """Counts every decode-and-resize the media service runs."""
    calls: list[tuple] = []
    real = media_service.make_thumbnail

    def counting(*args):
        calls.append(args[1:])
        return real(*args)

    monkeypatch.setattr(media_service, "make_thumbnail", counting)
    return calls


def _fits_a_default_size(size: tuple[int, int], method: str) -> bool:
    w, h = size
    for s in DEFAULT_THUMBNAIL_SIZES:
        if s.method != method:
            continue
        if method == "crop" and (w, h) == (s.width, s.height):
            return True
        if method == "scale" and w <= s.width and h <= s.height and (w == s.width or h == s.height):
            return True
    return False


def test_any_requested_size_is_served_at_a_configured_size(alice):
    mid = split_mxc(upload(alice, png_bytes((1200, 900)), "image/png").body["content_uri"])[1]
    for w, h, method in [(1, 1, "crop"), (37, 41, "crop"), (97, 300, "crop"), (999, 999, "crop"),
                         (1, 1, "scale"), (123, 77, "scale"), (333, 333, "scale"),
                         (801, 601, "scale"), (10_000, 10_000, "scale")]:  # fmt: skip
        im = as_image(thumb(alice, mid, width=w, height=h, method=method))
        assert _fits_a_default_size(im.size, method), ((w, h, method), im.size)


def test_each_size_is_generated_once(server, alice, image_work):
    mid = split_mxc(upload(alice, png_bytes((1200, 900)), "image/png").body["content_uri"])[1]
    first = thumb(alice, mid, width=96, height=96, method="crop")
    assert as_image(first).size == (96, 96)
    assert len(image_work) == 1
    # The same size again, and other requests that map to it: no image work at all.
    for w, h in [(96, 96), (90, 90), (50, 60), (96, 96)]:
        r = thumb(alice, mid, width=w, height=h, method="crop")
        assert r.status == 200 and r.body["_raw"] == first.body["_raw"]
    assert len(image_work) == 1
    # Stored beside the media, as a file.
    names = [p.name for p in server.hs.media._thumb_dir(mid).iterdir()]  # noqa: SLF001
    assert names == ["96x96-crop.png"]


def test_an_animated_gif_costs_one_decode_per_configured_size(alice, image_work):
    mid = split_mxc(upload(alice, animated_gif(), "image/gif").body["content_uri"])[1]
    requests = [(n, n) for n in range(20, 120, 5)]
    for w, h in requests:
        r = thumb(alice, mid, width=w, height=h, method="crop", animated="true")
        assert r.status == 200 and r.headers["Content-Type"] == "image/webp", r.body
    # 20 different requests, two configured crop sizes: two generations.
    assert len(image_work) == 2


def test_concurrent_requests_share_one_generation(server, alice, image_work):
    mid = split_mxc(upload(alice, png_bytes((2000, 1500)), "image/png").body["content_uri"])[1]
    gate = threading.Barrier(8)
    results: list = []

    def fetch(i: int) -> None:
        gate.wait()
        results.append(thumb(alice, mid, width=600 + i, height=450 + i, method="scale"))

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 8
    bodies = {r.body["_raw"] for r in results if r.status == 200}
    assert len(bodies) == 1 and all(r.status == 200 for r in results)
    assert Image.open(io.BytesIO(bodies.pop())).size == (640, 480)
    assert len(image_work) == 1


def test_small_original_and_undecodable_content_are_decided_once(alice, image_work):
    small = png_bytes((20, 20))
    mid = split_mxc(upload(alice, small, "image/png").body["content_uri"])[1]
    for _ in range(3):
        r = thumb(alice, mid, width=32, height=32, method="crop")
        assert r.status == 200 and r.body["_raw"] == small
    assert len(image_work) == 1
    bad = split_mxc(upload(alice, b"not a png at all", "image/png").body["content_uri"])[1]
    for _ in range(3):
        r = thumb(alice, bad, width=320, height=240)
        assert r.status == 400 and r.body["errcode"] == "M_UNKNOWN"
    assert len(image_work) == 2


@pytest.mark.parametrize(
    "width",
    ["99999999999", str(2**63), str(2**64 + 1), "1" * 400, "NaN", "inf", "-0", "0x20", "32.0",
     "+32", " 32", "３２", "32 ", "1e9", ""],
)  # fmt: skip
def test_unknown_and_huge_dimensions_are_matrix_errors(alice, width):
    mid = split_mxc(upload(alice, png_bytes(), "image/png").body["content_uri"])[1]
    for query in ({"width": width, "height": "32"}, {"width": "32", "height": width}):
        r = thumb(alice, mid, **query)
        assert r.status == 400, (query, r.status, r.body)
        assert r.body["errcode"] in ("M_INVALID_PARAM", "M_MISSING_PARAM"), r.body


def test_large_valid_dimensions_get_the_largest_size(alice):
    mid = split_mxc(upload(alice, png_bytes((1600, 1200)), "image/png").body["content_uri"])[1]
    r = thumb(alice, mid, width=999999999, height=999999999, method="scale")
    assert as_image(r).size == (800, 600)


def test_thumbnail_sizes_config(tmp_path):
    from bastion.config import Config, ConfigError, load_config

    path = tmp_path / "bastion.toml"
    path.write_text(
        'thumbnail_sizes = [{width = 64, height = 64, method = "crop"},\n'
        '                   {width = 1024, height = 768, method = "scale"}]\n'
    )
    sizes = load_config(path).validate().thumbnail_size_set
    assert [(s.width, s.height, s.method) for s in sizes] == [
        (64, 64, "crop"),
        (1024, 768, "scale"),
    ]
    for bad in ([], [{"width": 64, "height": 64, "method": "stretch"}], [{"width": 64}]):
        with pytest.raises(ConfigError):
            Config(thumbnail_sizes=bad).validate()
