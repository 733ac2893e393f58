"""Profiles: displayname, avatar_url, m.tz and custom fields (v1.16), size and key rules,
access control."""

from __future__ import annotations

import pytest

from tests.support.accounts import assert_error, on_server

P = "/_matrix/client/v3/profile"


def test_default_and_set_fields(client):
    a = client.register("alice")
    r = client.request("GET", f"{P}/{a.user_id}", token=None)
    assert r.status == 200 and r.body == {"displayname": "alice"}
    assert (
        a.request("PUT", f"{P}/{a.user_id}/displayname", {"displayname": "Alice A."}).status == 200
    )
    url = "mxc://localhost/AbCdEf123"
    assert a.request("PUT", f"{P}/{a.user_id}/avatar_url", {"avatar_url": url}).status == 200
    assert a.request("PUT", f"{P}/{a.user_id}/m.tz", {"m.tz": "Europe/Paris"}).status == 200
    value = {"title": "Engineer", "n": [1, 2]}
    assert (
        a.request("PUT", f"{P}/{a.user_id}/org.example.job", {"org.example.job": value}).status
        == 200
    )
    r = a.request("GET", f"{P}/{a.user_id}")
    assert r.body == {"displayname": "Alice A.", "avatar_url": url, "m.tz": "Europe/Paris",
                      "org.example.job": value}  # fmt: skip
    r = client.request("GET", f"{P}/{a.user_id}/displayname", token=None)
    assert r.status == 200 and r.body == {"displayname": "Alice A."}
    assert a.request("DELETE", f"{P}/{a.user_id}/org.example.job").status == 200
    assert_error(a.request("GET", f"{P}/{a.user_id}/org.example.job"), 404, "M_NOT_FOUND")
    assert a.request("DELETE", f"{P}/{a.user_id}/org.example.job").status == 200  # idempotent


def test_only_own_profile_is_writable(client):
    a = client.register("bob")
    b = client.register("carol")
    r = a.request("PUT", f"{P}/{b.user_id}/displayname", {"displayname": "Hacked"})
    assert_error(r, 403, "M_FORBIDDEN")
    assert_error(a.request("DELETE", f"{P}/{b.user_id}/displayname"), 403, "M_FORBIDDEN")
    assert client.request("GET", f"{P}/{b.user_id}/displayname", token=None).body == {
        "displayname": "carol"}  # fmt: skip
    r = client.request("PUT", f"{P}/{b.user_id}/displayname", {"displayname": "x"}, token=None)
    assert_error(r, 401, "M_MISSING_TOKEN")


def test_unknown_users(client):
    assert_error(client.request("GET", f"{P}/@nobody:localhost", token=None), 404, "M_NOT_FOUND")
    assert_error(client.request("GET", f"{P}/@nobody:localhost/displayname", token=None), 404,
                 "M_NOT_FOUND")  # fmt: skip
    assert_error(client.request("GET", f"{P}/@someone:remote.example", token=None), 404,
                 "M_NOT_FOUND")  # fmt: skip
    assert_error(client.request("GET", f"{P}/not-a-user", token=None), 400, "M_INVALID_PARAM")


@pytest.mark.parametrize(
    "key,body,status,errcode",
    [
        ("displayname", {"displayname": 5}, 400, "M_BAD_JSON"),
        ("displayname", {"displayname": None}, 400, "M_BAD_JSON"),
        ("displayname", {"displayname": "x" * 300}, 400, "M_INVALID_PARAM"),
        ("displayname", {}, 400, "M_MISSING_PARAM"),
        ("displayname", {"avatar_url": "mxc://a/b"}, 400, "M_MISSING_PARAM"),
        ("displayname", {"displayname": "a", "extra": 1}, 400, "M_BAD_JSON"),
        ("avatar_url", {"avatar_url": "https://example.org/a.png"}, 400, "M_INVALID_PARAM"),
        ("avatar_url", {"avatar_url": "mxc://bad host/x"}, 400, "M_INVALID_PARAM"),
        ("avatar_url", {"avatar_url": "mxc://localhost/../etc"}, 400, "M_INVALID_PARAM"),
        ("avatar_url", {"avatar_url": 7}, 400, "M_BAD_JSON"),
        ("m.tz", {"m.tz": 1}, 400, "M_BAD_JSON"),
        ("Bad.Key", {"Bad.Key": 1}, 400, "M_INVALID_PARAM"),
        ("nodot", {"nodot": 1}, 400, "M_INVALID_PARAM"),
        ("a." + "b" * 300, {"a." + "b" * 300: 1}, 400, "M_KEY_TOO_LARGE"),
    ],
)
def test_bad_input(client, key, body, status, errcode):
    a = client.register("dave")
    assert_error(a.request("PUT", f"{P}/{a.user_id}/{key}", body), status, errcode)


def test_bad_keys_on_get_and_delete(client):
    a = client.register("erin")
    assert_error(a.request("GET", f"{P}/{a.user_id}/Bad.Key"), 400, "M_INVALID_PARAM")
    assert_error(a.request("DELETE", f"{P}/{a.user_id}/nodot"), 400, "M_INVALID_PARAM")
    assert_error(a.request("PUT", f"{P}/{a.user_id}/displayname", raw=b"[]"), 400, "M_BAD_JSON")


def test_profile_size_limit(client):
    a = client.register("frank")
    big = "x" * 40000
    assert a.request("PUT", f"{P}/{a.user_id}/org.example.a", {"org.example.a": big}).status == 200
    r = a.request("PUT", f"{P}/{a.user_id}/org.example.b", {"org.example.b": big})
    assert_error(r, 400, "M_PROFILE_TOO_LARGE")
    # Replacing a field counts its new size, not both.
    assert a.request("PUT", f"{P}/{a.user_id}/org.example.a", {"org.example.a": big}).status == 200
    assert "org.example.b" not in a.request("GET", f"{P}/{a.user_id}").body


def test_suspended_user_cannot_change_profile(client, server):
    a = client.register("gina")
    hs = server.hs
    on_server(server, hs.store.db.write(
        lambda conn: hs.store.set_user_flag_in(conn, a.user_id, "suspended", True)))  # fmt: skip
    r = a.request("PUT", f"{P}/{a.user_id}/displayname", {"displayname": "new"})
    assert_error(r, 403, "M_USER_SUSPENDED")
    assert a.request("GET", f"{P}/{a.user_id}").status == 200


def member_event(c, room_id, user_id):
    r = c.request("GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{user_id}")
    assert r.status == 200, r.body
    return r.body


def test_profile_change_updates_member_events(client):
    a = client.register("henry")
    b = client.register("iris")
    room_id = a.request("POST", "/_matrix/client/v3/createRoom", {"invite": [b.user_id]}).body[
        "room_id"
    ]
    assert b.request("POST", f"/_matrix/client/v3/join/{room_id}", {}).status == 200
    assert member_event(b, room_id, a.user_id)["displayname"] == "henry"
    url = "mxc://localhost/avatar1"
    assert (
        a.request("PUT", f"{P}/{a.user_id}/displayname", {"displayname": "Henry H"}).status == 200
    )
    assert a.request("PUT", f"{P}/{a.user_id}/avatar_url", {"avatar_url": url}).status == 200
    content = member_event(b, room_id, a.user_id)
    assert content == {"membership": "join", "displayname": "Henry H", "avatar_url": url}
    assert a.request("DELETE", f"{P}/{a.user_id}/avatar_url").status == 200
    assert member_event(b, room_id, a.user_id) == {"membership": "join", "displayname": "Henry H"}
    # Custom fields do not touch member events.
    r = a.request("GET", f"/_matrix/client/v3/rooms/{room_id}/messages", query={"dir": "b"})
    before = len(r.body["chunk"])
    assert a.request("PUT", f"{P}/{a.user_id}/org.example.x", {"org.example.x": 1}).status == 200
    r = a.request("GET", f"/_matrix/client/v3/rooms/{room_id}/messages", query={"dir": "b"})
    assert len(r.body["chunk"]) == before
