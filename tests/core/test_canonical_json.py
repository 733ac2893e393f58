"""Canonical JSON: differential against the `canonicaljson` reference library, and refusals."""

import json

import canonicaljson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core import MatrixError, canonical_json, parse_json
from tests.support.strategies import any_json, json_values


@settings(max_examples=1000)
@given(json_values)
def test_matches_reference_library(value):
    assert canonical_json(value) == canonicaljson.encode_canonical_json(value)


@settings(max_examples=300)
@given(json_values)
def test_round_trip(value):
    assert parse_json(canonical_json(value)) == value


@settings(max_examples=500)
@given(any_json)
def test_any_value_encodes_or_refuses_cleanly(value):
    try:
        out = canonical_json(value)
    except MatrixError as e:
        assert e.errcode == "M_BAD_JSON"
    else:
        assert json.loads(out) is not None or out == b"null"


@pytest.mark.parametrize("value", [2**53, -(2**53), 1.5, float("nan"), float("inf"), 1e300])
def test_out_of_range_numbers_are_refused(value):
    with pytest.raises(MatrixError) as e:
        canonical_json({"a": value})
    assert e.value.errcode == "M_BAD_JSON"


def test_limits_are_inclusive():
    assert canonical_json([2**53 - 1, -(2**53) + 1]) == b"[9007199254740991,-9007199254740991]"


def test_integral_float_becomes_integer():
    assert canonical_json({"b": 1e10, "a": -0.0}) == b'{"a":0,"b":10000000000}'


@pytest.mark.parametrize(
    "value", [{1: "x"}, {"a": object()}, {"a": b"bytes"}, {"a": {"\ud800": 1}}]
)
def test_unencodable_values_are_refused(value):
    with pytest.raises(MatrixError):
        canonical_json(value)


def test_control_characters_use_short_escapes():
    assert (
        canonical_json('\b\t\n\f\r"\\\x00\x1f\x7f') == b'"\\b\\t\\n\\f\\r\\"\\\\\\u0000\\u001f\x7f"'
    )


@pytest.mark.parametrize("text", ["{", "[1,]", "nul", "", '{"a":1.5}', "1e400"])
def test_parse_refuses_non_canonical_input(text):
    with pytest.raises(MatrixError):
        parse_json(text)


@given(st.binary(max_size=40))
def test_parse_arbitrary_bytes_never_crashes(data):
    try:
        parse_json(data)
    except MatrixError as e:
        assert e.errcode in ("M_NOT_JSON", "M_BAD_JSON")
