"""Pure content-repository decisions (bastion.core.media): thumbnail geometry, served types,
Content-Disposition."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.media import (
    DEFAULT_THUMBNAIL_SIZES,
    ThumbnailSize,
    content_disposition,
    is_valid_media_id,
    normalise_upload_content_type,
    parse_thumbnail_sizes,
    plan_thumbnail,
    select_thumbnail_size,
    served_content_type,
)

dims = st.integers(min_value=1, max_value=5000)


@given(dims, dims, dims, dims, st.sampled_from(["crop", "scale"]))
def test_thumbnail_plan_never_upscales(sw, sh, ww, wh, method):
    plan = plan_thumbnail(sw, sh, ww, wh, method)
    assert 1 <= plan.width <= sw and 1 <= plan.height <= sh
    if sw <= ww and sh <= wh:
        assert plan.original
    if plan.crop_box is not None:
        left, top, right, bottom = plan.crop_box
        assert 0 <= left < right <= sw and 0 <= top < bottom <= sh


@given(dims, dims, dims, dims)
def test_scale_fits_the_box_and_keeps_aspect(sw, sh, ww, wh):
    plan = plan_thumbnail(sw, sh, ww, wh, "scale")
    if plan.original:
        return
    assert plan.crop_box is None
    assert plan.width <= max(ww, 1) or plan.height <= max(wh, 1)
    # Aspect ratio kept to within rounding.
    assert abs(plan.width * sh - plan.height * sw) <= max(sw, sh)


def test_known_thumbnail_sizes():
    assert plan_thumbnail(400, 300, 32, 32, "crop").width == 32
    assert (plan_thumbnail(400, 300, 32, 32, "crop").crop_box) == (50, 0, 350, 300)
    p = plan_thumbnail(400, 300, 100, 100, "scale")
    assert (p.width, p.height) == (100, 75)
    p = plan_thumbnail(100, 1000, 200, 200, "crop")
    assert (p.width, p.height) == (100, 100)
    assert plan_thumbnail(10, 10, 32, 32, "crop").original


def test_served_content_type():
    assert served_content_type("image/png") == ("image/png", True)
    assert served_content_type("text/plain; charset=UTF-8") == ("text/plain; charset=utf-8", True)
    assert served_content_type("text/html") == ("application/octet-stream", False)
    assert served_content_type("image/svg+xml") == ("application/octet-stream", False)
    assert served_content_type("application/vnd.foo+xml") == ("application/octet-stream", False)
    assert served_content_type("multipart/related") == ("application/octet-stream", False)
    assert served_content_type("application/pdf") == ("application/pdf", False)
    assert served_content_type("") == ("application/octet-stream", False)
    assert served_content_type("garbage") == ("application/octet-stream", False)


def test_upload_content_type_normalised():
    assert normalise_upload_content_type(None) == "application/octet-stream"
    assert normalise_upload_content_type("image/png") == "image/png"
    assert normalise_upload_content_type("no slash") == "application/octet-stream"
    assert normalise_upload_content_type("a/" + "b" * 300) == "application/octet-stream"


def test_content_disposition():
    assert content_disposition(True, None) == "inline"
    assert content_disposition(False, "a.txt") == 'attachment; filename="a.txt"'
    assert content_disposition(True, "ü.png") == "inline; filename*=utf-8''%C3%BC.png"
    assert content_disposition(True, 'a"b') == "inline; filename*=utf-8''a%22b"
    assert "\n" not in content_disposition(True, "a\r\nb")


@given(st.text(max_size=300))
def test_content_disposition_is_always_a_safe_header(name):
    value = content_disposition(False, name)
    assert value.isascii() and value.isprintable()


def test_media_ids():
    assert is_valid_media_id("abcXYZ019_-")
    for bad in ("", "..", "a/b", "a.b", "a%2Fb", "é", "a" * 256, "a b"):
        assert not is_valid_media_id(bad)


# -- the fixed set of thumbnail sizes -----------------------------------------------------------


@given(
    st.integers(min_value=1, max_value=10**9),
    st.integers(min_value=1, max_value=10**9),
    st.sampled_from(["crop", "scale"]),
)
def test_any_requested_size_maps_to_a_configured_size(w, h, method):
    size = select_thumbnail_size(DEFAULT_THUMBNAIL_SIZES, w, h, method)
    assert size in DEFAULT_THUMBNAIL_SIZES
    assert size.method == method  # the default set has both methods


@pytest.mark.parametrize(
    ("request_", "chosen"),
    [
        # The defaults are Synapse's: 32x32 crop, 96x96 crop, 320x240/640x480/800x600 scale.
        ((32, 32, "crop"), (32, 32, "crop")),
        ((1, 1, "crop"), (32, 32, "crop")),
        ((33, 33, "crop"), (96, 96, "crop")),  # at least as large as asked
        ((96, 96, "crop"), (96, 96, "crop")),
        ((500, 500, "crop"), (96, 96, "crop")),  # nothing larger: the closest
        ((40, 80, "crop"), (96, 96, "crop")),
        ((100, 100, "scale"), (320, 240, "scale")),
        ((320, 240, "scale"), (320, 240, "scale")),
        ((321, 200, "scale"), (320, 240, "scale")),  # one side as large suffices
        ((400, 300, "scale"), (640, 480, "scale")),
        ((640, 480, "scale"), (640, 480, "scale")),
        ((700, 500, "scale"), (800, 600, "scale")),
        ((10_000, 10_000, "scale"), (800, 600, "scale")),
    ],
)
def test_best_fitting_size(request_, chosen):
    assert select_thumbnail_size(DEFAULT_THUMBNAIL_SIZES, *request_) == ThumbnailSize(*chosen)


def test_method_without_configured_sizes_uses_the_others():
    only_scale = (ThumbnailSize(320, 240, "scale"), ThumbnailSize(800, 600, "scale"))
    assert select_thumbnail_size(only_scale, 32, 32, "crop") == ThumbnailSize(320, 240, "scale")


def test_select_refuses_nonsense():
    with pytest.raises(ValueError):
        select_thumbnail_size((), 32, 32, "crop")
    with pytest.raises(ValueError):
        select_thumbnail_size(DEFAULT_THUMBNAIL_SIZES, 0, 32, "crop")


def test_parse_thumbnail_sizes():
    sizes = parse_thumbnail_sizes(
        [{"width": 32, "height": 32, "method": "crop"}, {"width": 32, "height": 32, "method": "crop"},
         {"width": 640, "height": 480, "method": "scale"}]
    )  # fmt: skip
    assert sizes == (ThumbnailSize(32, 32, "crop"), ThumbnailSize(640, 480, "scale"))
    for bad in (
        [],
        "32x32",
        [{"width": 32, "height": 32}],
        [{"width": 32, "height": 32, "method": "stretch"}],
        [{"width": 0, "height": 32, "method": "crop"}],
        [{"width": True, "height": 32, "method": "crop"}],
        [{"width": 10**6, "height": 32, "method": "crop"}],
        [{"width": 32, "height": 32, "method": "crop", "type": "image/png"}],
        [{"width": n, "height": n, "method": "scale"} for n in range(1, 40)],
    ):
        with pytest.raises(ValueError):
            parse_thumbnail_sizes(bad)
