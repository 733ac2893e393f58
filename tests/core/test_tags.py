"""The pure rules of room tags (C-S API "Room Tagging"; bastion.core.tags)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.tags import (
    MAX_TAGS_PER_ROOM,
    check_tag_name,
    tag_info,
    tags_of,
    with_tag,
    without_tag,
)
from bastion.errors import MatrixError


def errcode(fn, *args) -> tuple[int, str]:
    with pytest.raises(MatrixError) as e:
        fn(*args)
    return e.value.status, e.value.errcode


def test_tag_names():
    for ok in ("m.favourite", "m.lowpriority", "u.work", "work", "tld.app.x", "u." + "x" * 253):
        check_tag_name(ok)
    assert errcode(check_tag_name, "") == (400, "M_INVALID_PARAM")
    assert errcode(check_tag_name, "u." + "x" * 254) == (400, "M_INVALID_PARAM")
    assert errcode(check_tag_name, "é" * 128) == (400, "M_INVALID_PARAM")  # 256 bytes
    check_tag_name("é" * 127 + "x")  # 255 bytes
    assert errcode(check_tag_name, "m.server_notice") == (403, "M_FORBIDDEN")
    for reserved in ("m.", "m.work", "m.favourite.x"):
        assert errcode(check_tag_name, reserved) == (400, "M_INVALID_PARAM")


def test_tag_info():
    assert tag_info({}) == {}
    assert tag_info({"order": 0.5, "other": 1}) == {"order": 0.5}
    assert tag_info({"order": 0}) == {"order": 0}
    assert tag_info({"order": 1}) == {"order": 1}
    for bad in ("0.5", True, False, None, [], {}):
        assert errcode(tag_info, {"order": bad}) == (400, "M_BAD_JSON")
    for bad in (-0.001, 1.001, float("nan"), float("inf"), float("-inf"), 2, -1):
        assert errcode(tag_info, {"order": bad}) == (400, "M_INVALID_PARAM")


def test_tags_of_keeps_only_objects():
    assert tags_of(None) == {}
    assert tags_of([]) == {}
    assert tags_of({"tags": ["u.a"]}) == {}
    assert tags_of({"tags": {"u.a": {}, "u.b": "x", "u.c": {"order": 1}}}) == {
        "u.a": {},
        "u.c": {"order": 1},
    }


def test_with_and_without_tag():
    content = with_tag(None, "u.a", {"order": 0.5})
    assert content == {"tags": {"u.a": {"order": 0.5}}}
    content2 = with_tag({**content, "extra": 1}, "u.b", {})
    assert content2 == {"tags": {"u.a": {"order": 0.5}, "u.b": {}}, "extra": 1}
    assert content == {"tags": {"u.a": {"order": 0.5}}}  # the input is not changed
    assert with_tag({"tags": "junk"}, "u.a", {}) == {"tags": {"u.a": {}}}
    assert without_tag(content2, "u.a") == {"tags": {"u.b": {}}, "extra": 1}
    assert without_tag(content2, "u.zzz") is None
    assert without_tag({"tags": "junk"}, "u.a") is None
    assert without_tag(None, "u.a") is None


def test_tag_count_cap():
    full = {"tags": {f"u.{i}": {} for i in range(MAX_TAGS_PER_ROOM)}}
    assert errcode(with_tag, full, "u.new", {}) == (413, "M_TOO_LARGE")
    assert with_tag(full, "u.0", {"order": 1})["tags"]["u.0"] == {"order": 1}


@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from(["u.a", "u.b", "m.favourite", "x"])),
        max_size=30,
    )
)
def test_edits_match_a_dict(ops):
    """Adding and removing tags behaves as a dict of tags."""
    content = None
    model: dict[str, dict] = {}
    for add, name in ops:
        if add:
            content = with_tag(content, name, {})
            model[name] = {}
        else:
            new = without_tag(content, name)
            assert (new is None) == (name not in model)
            content = new if new is not None else content
            model.pop(name, None)
    assert tags_of(content) == model
