"""X-Matrix header grammar and request signatures (S-S API "Request Authentication")."""

import pytest
from nacl.signing import SigningKey

from bastion.core.x_matrix import (
    XMatrixAuth,
    XMatrixError,
    authorization_header,
    format_authorization,
    parse_authorization,
    signable_request,
    verify_request,
)

KEY = SigningKey(b"\x01" * 32)


def test_spec_example_form():
    h = 'X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF"'
    a = parse_authorization(h)
    assert a == XMatrixAuth(
        "origin.hs.example.com", "ed25519:key1", "ABCDEF", "destination.hs.example.com"
    )


def test_unquoted_values_with_colons_case_and_spaces():
    h = "x-matrix  Origin=example.org:8448 , KEY = ed25519:k1,\tSig=abc+def ,destination=d.org:443"
    a = parse_authorization(h)
    assert (a.origin, a.key, a.sig, a.destination) == (
        "example.org:8448",
        "ed25519:k1",
        "abc+def",
        "d.org:443",
    )


def test_backslash_escapes_unknown_params_and_signature_name():
    h = r'X-Matrix foo="a\"b,c=d",origin="ex\ample.org",key="ed25519:k",signature="s\\ig",zzz=1'
    a = parse_authorization(h)
    assert a.origin == "example.org"
    assert a.sig == "s\\ig"  # 'signature' accepted like 'sig'
    assert a.destination is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer abc",
        "X-Matrix",
        "X-Matrixorigin=a",
        'X-Matrix origin="a.org",key="ed25519:k"',  # no sig
        'X-Matrix key="ed25519:k",sig="s"',  # no origin
        'X-Matrix origin="a.org",key="ed25519:k",sig="s",origin="b.org"',  # repeated
        'X-Matrix origin="a.org",key="ed25519:k",sig="s",sig="t"',
        'X-Matrix origin="a.org",key="ed25519:k",sig="s",signature="t"',  # disagreeing names
        'X-Matrix origin="a.org,key="ed25519:k",sig="s"',  # unterminated quote
        'X-Matrix origin="a.org" key="ed25519:k",sig="s"',  # missing comma
        'X-Matrix origin=,key="ed25519:k",sig="s"',  # empty token
        'X-Matrix origin="a.org",key="ed25519:k",sig="s\\',
        'X-Matrix origin="bad_name!",key="ed25519:k",sig="s"',  # not a server name
        'X-Matrix origin="a.org",destination="no good",key="ed25519:k",sig="s"',
        'X-Matrix origin="a\x01.org",key="ed25519:k",sig="s"',
    ],
)
def test_malformed_headers_are_401(header):
    with pytest.raises(XMatrixError) as e:
        parse_authorization(header)
    assert e.value.status == 401 and e.value.errcode == "M_UNAUTHORIZED"


def test_sent_format_matches_the_spec_recommendation():
    h = format_authorization(XMatrixAuth("o.org", "ed25519:k", "SIG", "d.org"))
    assert h == 'X-Matrix origin="o.org",destination="d.org",key="ed25519:k",sig="SIG"'


def test_sign_and_verify_round_trip_and_every_mismatch():
    uri = "/_matrix/federation/v1/send/1?x=1"
    body = {"pdus": [], "edus": []}
    h = authorization_header("PUT", uri, "o.org", "d.org:8448", "ed25519:k", KEY, body)
    auth = parse_authorization(h)
    verify_request(auth, "PUT", uri, "d.org:8448", body, KEY.verify_key)
    for method, u, dest, content in [
        ("POST", uri, "d.org:8448", body),
        ("PUT", uri + "&y=2", "d.org:8448", body),
        ("PUT", uri, "d.org:8448", {"pdus": [1], "edus": []}),
        ("PUT", uri, "d.org:8448", None),
        ("PUT", uri, "d.org", body),  # we are someone else (port-less name) → destination mismatch
    ]:
        with pytest.raises(XMatrixError):
            verify_request(auth, method, u, dest, content, KEY.verify_key)
    with pytest.raises(XMatrixError):
        verify_request(auth, "PUT", uri, "d.org:8448", body, SigningKey(b"\x02" * 32).verify_key)


def test_missing_destination_is_accepted_and_means_us():
    obj = signable_request("GET", "/_matrix/x", "o.org", "d.org")
    assert "content" not in obj
    h = authorization_header("GET", "/_matrix/x", "o.org", "d.org", "ed25519:k", KEY)
    a = parse_authorization(h)
    stripped = XMatrixAuth(a.origin, a.key, a.sig, None)
    verify_request(stripped, "GET", "/_matrix/x", "d.org", None, KEY.verify_key)
    with pytest.raises(XMatrixError):
        verify_request(stripped, "GET", "/_matrix/x", "other.org", None, KEY.verify_key)


def test_signature_not_base64():
    a = XMatrixAuth("o.org", "ed25519:k", "!!!", "d.org")
    with pytest.raises(XMatrixError):
        verify_request(a, "GET", "/_matrix/x", "d.org", None, KEY.verify_key)


def test_unquoted_value_outside_token_grammar_is_refused():
    # '/' is not a tchar: a base64 value with '/' must be quoted (RFC 9110 §5.6.2).
    with pytest.raises(XMatrixError):
        parse_authorization("X-Matrix origin=o.org,key=ed25519:k,sig=ab/c")
