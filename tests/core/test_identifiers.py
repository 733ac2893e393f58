"""Identifier grammar (appendices, "Identifier Grammar")."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core import MatrixError
from bastion.core.identifiers import (
    UserID,
    UserId,
    is_valid_namespaced_identifier,
    is_valid_server_name,
    is_valid_user_id,
    parse_event_id,
    parse_room_alias,
    parse_room_id,
    parse_server_name,
    parse_user_id,
    server_name_of,
)


@pytest.mark.parametrize(
    ("name", "host", "port"),
    [
        ("matrix.org", "matrix.org", None),
        ("matrix.org:8888", "matrix.org", 8888),
        ("1.2.3.4", "1.2.3.4", None),
        ("1.2.3.4:1234", "1.2.3.4", 1234),
        ("[1234:5678::abcd]", "[1234:5678::abcd]", None),
        ("[1234:5678::abcd]:5678", "[1234:5678::abcd]", 5678),
        ("localhost", "localhost", None),
        ("127.0.0.1:8448", "127.0.0.1", 8448),
    ],
)
def test_server_name_examples(name, host, port):
    parsed = parse_server_name(name)
    assert (parsed.host, parsed.port) == (host, port)
    assert str(parsed) == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "non-empty"),
        ("a_b.org", "DNS name"),
        ("256.0.0.1", "0 to 255"),
        ("[::1", "closing"),
        ("[zz::1]", "IPv6"),
        ("[::1]x", "':port'"),
        ("x.org:", "port"),
        ("x.org:123456", "port"),
        ("x.org:0", "port"),
        ("x.org:ab", "port"),
        ("ex ample.org", "DNS name"),
        ("a" * 256, "DNS name"),
    ],
)
def test_invalid_server_names_name_the_rule(name, rule):
    with pytest.raises(MatrixError) as e:
        parse_server_name(name)
    assert e.value.errcode == "M_INVALID_PARAM"
    assert rule in e.value.message


def test_user_id_current_grammar():
    uid = parse_user_id("@alice.b=c-d/e+f_g:example.org:8448")
    assert (uid.localpart, uid.domain) == ("alice.b=c-d/e+f_g", "example.org:8448")
    for bad in [
        "alice:example.org",
        "@Alice:example.org",
        "@:example.org",
        "@alice",
        "@al ice:x.org",
    ]:
        assert not is_valid_user_id(bad), bad


def test_user_id_historical_grammar_only_when_allowed():
    for historical in [
        "@Alice:example.org",
        "@:example.org",
        "@al ice!:example.org",
        "@日本:x.org",
    ]:
        assert not is_valid_user_id(historical)
        assert is_valid_user_id(historical, historical=True)
    assert not is_valid_user_id("@a\x00b:x.org", historical=True)


def test_user_id_length_limit():
    assert is_valid_user_id("@" + "a" * 200 + ":example.org")
    with pytest.raises(MatrixError, match="255 bytes"):
        parse_user_id("@" + "a" * 250 + ":example.org")


def test_room_ids():
    assert parse_room_id("!abc:example.org").domain == "example.org"
    v12 = "!" + "A" * 42 + "_"
    assert parse_room_id(v12, "12").domain is None
    assert parse_room_id(v12).domain is None
    with pytest.raises(MatrixError, match="43-character"):
        parse_room_id("!abc:example.org", "12")
    with pytest.raises(MatrixError, match="opaque_id:domain"):
        parse_room_id(v12, "11")
    with pytest.raises(MatrixError, match="'!'"):
        parse_room_id("#abc:example.org")


def test_room_aliases():
    assert parse_room_alias("#room:example.org").localpart == "room"
    for bad in ["room:example.org", "#room", "#room:bad_name", "#a\x00:x.org"]:
        with pytest.raises(MatrixError):
            parse_room_alias(bad)


def test_event_ids_per_version():
    h = "A" * 42 + "+"
    assert parse_event_id("$" + h, "3")
    with pytest.raises(MatrixError, match="URL-safe"):
        parse_event_id("$" + h, "4")
    assert parse_event_id("$" + "A" * 42 + "-", "10")
    assert parse_event_id("$abc:example.org", "1")
    with pytest.raises(MatrixError, match="opaque_id:domain"):
        parse_event_id("$abc", "2")
    with pytest.raises(MatrixError):
        parse_event_id("abc")


def test_namespaced_identifiers():
    assert is_valid_namespaced_identifier("m.login.dummy")
    assert not is_valid_namespaced_identifier("M.login")
    assert not is_valid_namespaced_identifier("")
    assert not is_valid_namespaced_identifier("a" * 256)


@given(st.text(max_size=40))
def test_arbitrary_text_never_crashes_parsers(text):
    for parse in (
        parse_server_name,
        parse_user_id,
        parse_room_id,
        parse_room_alias,
        parse_event_id,
    ):
        with contextlib.suppress(MatrixError):
            parse(text)
    assert is_valid_server_name(text) in (True, False)


# --- UserId and server_name_of: the one user-ID vocabulary --------------------------------------


def test_user_id_value_object():
    uid = UserId.parse("@alice:example.org:8448")
    assert isinstance(uid, UserId)
    assert uid.localpart == "alice"
    assert uid.domain == uid.server_name == "example.org:8448"
    assert str(uid) == "@alice:example.org:8448"
    assert uid.is_local_to("example.org:8448")
    assert not uid.is_local_to("example.org")
    assert uid == parse_user_id("@alice:example.org:8448")
    assert hash(uid) == hash(UserId("alice", "example.org:8448"))
    with pytest.raises(AttributeError):
        uid.localpart = "mallory"  # type: ignore[misc]
    # The former name still names the same type.
    assert UserID is UserId


def test_user_id_parse_refuses_like_parse_user_id():
    for bad in ["alice:example.org", "@Alice:example.org", "@alice", "@a:bad host", 5, None]:
        with pytest.raises(MatrixError) as e:
            UserId.parse(bad)
        assert e.value.errcode == "M_INVALID_PARAM"
        assert e.value.status == 400
    assert UserId.parse("@Alice:example.org", historical=True).localpart == "Alice"
    with pytest.raises(MatrixError):
        UserId.parse("@a\x00b:x.org", historical=True)


@given(
    st.from_regex(r"@[a-z0-9._=/+\-]{1,20}:[a-z0-9.\-]{1,30}(:[1-9][0-9]{0,3})?", fullmatch=True)
)
def test_user_id_round_trips(value):
    uid = UserId.parse(value)
    assert str(uid) == value
    assert server_name_of(value) == uid.server_name


@pytest.mark.parametrize(
    ("identifier", "server_name"),
    [
        ("@alice:example.org", "example.org"),
        ("@alice:example.org:8448", "example.org:8448"),
        ("@a:[::1]:8448", "[::1]:8448"),
        ("!room:example.org", "example.org"),
        ("#alias:example.org", "example.org"),
        ("$event:example.org", "example.org"),
        ("@a:", ""),
        ("@alice", None),
        ("", None),
        (None, None),
        (42, None),
        (["@a:b"], None),
    ],
)
def test_server_name_of(identifier, server_name):
    assert server_name_of(identifier) == server_name


def test_server_name_is_after_the_first_colon():
    # A localpart never holds ':', so the server part starts after the first one; a suffix
    # match on ":" + server_name is not the same test.
    assert server_name_of("@evil:x:example.org") == "x:example.org"
    assert server_name_of("@a:example.org.attacker") != "example.org"
    assert not UserId.parse("@evil:example.org.attacker").is_local_to("example.org")
