"""Filters: the pure validation/matching functions and the filter endpoints (C-S API "Filtering")."""

from __future__ import annotations

import json

import pytest

from bastion.errors import MatrixError
from bastion.services.filtering import (
    MAX_LIMIT,
    apply_event_fields,
    event_filter_allows,
    matches_glob,
    parse_filter,
    room_allowed,
    split_field_path,
)
from tests.support.accounts import call_on_server, make_user

# -- pure functions -------------------------------------------------------------------------


def test_parse_empty_filter_is_fully_normalised():
    f = parse_filter({})
    assert f["event_format"] == "client"
    assert f["event_fields"] is None
    assert f["presence"] == {
        "limit": None, "types": None, "not_types": [], "senders": None, "not_senders": []
    }  # fmt: skip
    assert f["room"]["rooms"] is None and f["room"]["not_rooms"] == []
    assert f["room"]["include_leave"] is False
    tl = f["room"]["timeline"]
    assert tl["contains_url"] is None and tl["lazy_load_members"] is False
    assert tl["rooms"] is None and tl["limit"] is None


def test_parse_spec_example():
    f = parse_filter(
        {
            "room": {
                "state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
                "timeline": {"limit": 10, "types": ["m.room.message"],
                             "not_senders": ["@spam:example.com"]},
                "ephemeral": {"types": ["m.receipt", "m.typing"]},
                "include_leave": True,
            },
            "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
            "event_format": "client",
            "event_fields": ["type", "content", "sender"],
        }
    )  # fmt: skip
    assert f["room"]["timeline"]["limit"] == 10
    assert f["room"]["include_leave"] is True
    assert f["room"]["state"]["not_rooms"] == ["!726s6s6q:example.com"]
    assert f["event_fields"] == ["type", "content", "sender"]


def test_limit_is_capped():
    assert (
        parse_filter({"room": {"timeline": {"limit": 10**9}}})["room"]["timeline"]["limit"]
        == MAX_LIMIT
    )


@pytest.mark.parametrize(
    ("obj", "errcode", "field"),
    [
        ([], "M_BAD_JSON", "object"),
        ({"room": []}, "M_BAD_JSON", "room"),
        ({"room": {"timeline": {"limit": "10"}}}, "M_BAD_JSON", "room.timeline.limit"),
        ({"room": {"timeline": {"limit": True}}}, "M_BAD_JSON", "room.timeline.limit"),
        ({"room": {"timeline": {"limit": 0}}}, "M_INVALID_PARAM", "room.timeline.limit"),
        ({"room": {"timeline": {"limit": -5}}}, "M_INVALID_PARAM", "room.timeline.limit"),
        ({"room": {"state": {"types": "m.room.*"}}}, "M_BAD_JSON", "room.state.types"),
        ({"room": {"state": {"types": [1]}}}, "M_BAD_JSON", "room.state.types"),
        ({"room": {"rooms": ["#alias:x"]}}, "M_INVALID_PARAM", "room.rooms"),
        ({"room": {"include_leave": "yes"}}, "M_BAD_JSON", "room.include_leave"),
        ({"room": {"timeline": {"contains_url": 1}}}, "M_BAD_JSON", "contains_url"),
        ({"room": {"timeline": {"lazy_load_members": "true"}}}, "M_BAD_JSON", "lazy_load"),
        ({"presence": {"senders": ["alice"]}}, "M_INVALID_PARAM", "presence.senders"),
        ({"presence": 3}, "M_BAD_JSON", "presence"),
        ({"event_format": "xml"}, "M_INVALID_PARAM", "event_format"),
        ({"event_format": 1}, "M_BAD_JSON", "event_format"),
        ({"event_fields": "content"}, "M_BAD_JSON", "event_fields"),
        ({"account_data": {"not_types": [None]}}, "M_BAD_JSON", "account_data.not_types"),
    ],
)
def test_parse_rejects_bad_fields(obj, errcode, field):
    with pytest.raises(MatrixError) as ei:
        parse_filter(obj)
    assert ei.value.errcode == errcode
    assert ei.value.status == 400
    assert field in ei.value.message


def test_glob():
    assert matches_glob("m.room.message", "m.room.*")
    assert matches_glob("m.room.message", "*")
    assert matches_glob("m.room.message", "m.*.message")
    assert not matches_glob("m.roomxmessage", "m.room.message")
    assert not matches_glob("m.room.message", "m.room")
    assert matches_glob("a.b", "a.b")
    assert not matches_glob("xa.b", "a.b*") and matches_glob("a.bc", "a.b*")


def test_event_filter_allows():
    f = parse_filter(
        {"room": {"timeline": {"types": ["m.room.*"], "not_types": ["m.room.member"],
                               "senders": ["@a:x", "@b:x"], "not_senders": ["@b:x"],
                               "rooms": ["!r:x", "!s:x"], "not_rooms": ["!s:x"]}}}
    )["room"]["timeline"]  # fmt: skip
    ev = {"type": "m.room.message", "sender": "@a:x", "room_id": "!r:x", "content": {}}
    assert event_filter_allows(f, ev)
    assert not event_filter_allows(f, {**ev, "type": "m.room.member"})
    assert not event_filter_allows(f, {**ev, "type": "org.custom"})
    assert not event_filter_allows(f, {**ev, "sender": "@b:x"})
    assert not event_filter_allows(f, {**ev, "sender": "@c:x"})
    assert not event_filter_allows(f, {**ev, "room_id": "!s:x"})
    assert not event_filter_allows(f, {**ev, "room_id": "!t:x"})
    # room_id given explicitly overrides (sync events carry none)
    no_room = {k: v for k, v in ev.items() if k != "room_id"}
    assert event_filter_allows(f, no_room, room_id="!r:x")
    assert not event_filter_allows(f, no_room, room_id="!t:x")


def test_contains_url():
    with_url = {"type": "m.room.message", "content": {"url": "mxc://x/y"}}
    without = {"type": "m.room.message", "content": {"body": "hi"}}
    bad_url = {"type": "m.room.message", "content": {"url": 5}}
    t = parse_filter({"room": {"timeline": {"contains_url": True}}})["room"]["timeline"]
    f = parse_filter({"room": {"timeline": {"contains_url": False}}})["room"]["timeline"]
    n = parse_filter({})["room"]["timeline"]
    assert event_filter_allows(t, with_url) and not event_filter_allows(t, without)
    assert not event_filter_allows(t, bad_url)
    assert not event_filter_allows(f, with_url) and event_filter_allows(f, without)
    assert event_filter_allows(n, with_url) and event_filter_allows(n, without)


def test_room_allowed():
    f = parse_filter({"room": {"rooms": ["!a:x", "!b:x"], "not_rooms": ["!b:x"]}})
    assert room_allowed(f, "!a:x")
    assert not room_allowed(f, "!b:x")
    assert not room_allowed(f, "!c:x")
    assert room_allowed(parse_filter({}), "!c:x")


def test_event_fields():
    assert split_field_path(r"content.m\.relates_to") == ["content", "m.relates_to"]
    assert split_field_path(r"content.m\\foo") == ["content", "m\\foo"]
    assert split_field_path(r"content.m\x") == ["content", "m\\x"]
    ev = {"type": "t", "sender": "@a:x", "content": {"body": "b", "m.relates_to": {"x": 1}}}
    assert apply_event_fields(ev, ["type", "content.body", "nope.x"]) == {
        "type": "t", "content": {"body": "b"}
    }  # fmt: skip
    assert apply_event_fields(ev, [r"content.m\.relates_to"]) == {
        "content": {"m.relates_to": {"x": 1}}
    }
    assert apply_event_fields(ev, None) is ev


# -- endpoints ------------------------------------------------------------------------------

FILTER = {"room": {"timeline": {"limit": 10, "types": ["m.room.message"]}}}


def test_upload_and_download_filter(server, client):
    alice = make_user(server)
    path = f"/_matrix/client/v3/user/{alice.user_id}/filter"
    r = alice.request("POST", path, FILTER)
    assert r.status == 200, r.body
    fid = r.body["filter_id"]
    assert isinstance(fid, str) and not fid.startswith("{")
    r = alice.request("GET", f"{path}/{fid}")
    assert r.status == 200 and r.body == FILTER
    # the same filter again gets the same ID; a different one gets another
    assert alice.request("POST", path, FILTER).body["filter_id"] == fid
    other = alice.request("POST", path, {"presence": {"limit": 1}}).body["filter_id"]
    assert other != fid
    assert alice.request("GET", f"{path}/{other}").body == {"presence": {"limit": 1}}


def test_filter_bad_input(server, client):
    alice = make_user(server)
    path = f"/_matrix/client/v3/user/{alice.user_id}/filter"
    r = alice.request("POST", path, {"room": {"timeline": {"limit": "ten"}}})
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    assert "room.timeline.limit" in r.body["error"]
    r = alice.request("POST", path, raw=b"not json")
    assert r.status == 400 and r.body["errcode"] == "M_NOT_JSON"
    r = alice.request("POST", path, raw=b"[1]")
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    for fid in ("12345", "abc", "-1", "9" * 40, "{"):
        r = alice.request("GET", f"{path}/{fid}")
        assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND", fid


def test_filter_access_control(server, client):
    alice = make_user(server)
    bob = make_user(server)
    fid = alice.request("POST", f"/_matrix/client/v3/user/{alice.user_id}/filter", FILTER).body[
        "filter_id"
    ]
    r = bob.request("GET", f"/_matrix/client/v3/user/{alice.user_id}/filter/{fid}")
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    r = bob.request("POST", f"/_matrix/client/v3/user/{alice.user_id}/filter", FILTER)
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    # bob's own filter namespace does not see alice's filter
    r = bob.request("GET", f"/_matrix/client/v3/user/{bob.user_id}/filter/{fid}")
    assert r.status == 404
    r = client.request("GET", f"/_matrix/client/v3/user/{alice.user_id}/filter/{fid}", token=None)
    assert r.status == 401 and r.body["errcode"] == "M_MISSING_TOKEN"


def test_resolve(server, client):
    alice = make_user(server)
    hs = server.hs
    fid = alice.request("POST", f"/_matrix/client/v3/user/{alice.user_id}/filter", FILTER).body[
        "filter_id"
    ]

    class Req:
        user_id = alice.user_id

    assert call_on_server(server, hs.filters.resolve, Req, None) == parse_filter({})
    assert call_on_server(server, hs.filters.resolve, Req, fid)["room"]["timeline"]["limit"] == 10
    inline = call_on_server(
        server, hs.filters.resolve, Req, json.dumps({"room": {"timeline": {"limit": 3}}})
    )
    assert inline["room"]["timeline"]["limit"] == 3
    for bad in ("nope", "{not json", '{"room": {"timeline": {"limit": 0}}}'):
        with pytest.raises(MatrixError) as ei:
            call_on_server(server, hs.filters.resolve, Req, bad)
        assert ei.value.status == 400 and ei.value.errcode in ("M_INVALID_PARAM", "M_BAD_JSON")

    class Bob:
        user_id = "@bob:localhost"

    with pytest.raises(MatrixError):
        call_on_server(server, hs.filters.resolve, Bob, fid)
