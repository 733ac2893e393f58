"""Room tags (C-S API "Room Tagging") over HTTP: the three endpoints, the ``m.tag`` room account
data they keep, /sync, access control and hostile input."""

from __future__ import annotations

import threading
from urllib.parse import quote

from bastion.core.tags import MAX_TAGS_PER_ROOM
from tests.support.accounts import assert_error, db_rows, make_user
from tests.support.rooms import V3, create_room, sync


def tags_path(user_id: str, room_id: str, tag: str | None = None) -> str:
    path = f"{V3}/user/{quote(user_id, safe='')}/rooms/{quote(room_id, safe='')}/tags"
    return path if tag is None else f"{path}/{quote(tag, safe='')}"


def room_tag_events(resp: dict, room_id: str) -> list[dict]:
    room = resp.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e for e in room.get("account_data", {}).get("events", []) if e["type"] == "m.tag"]


def test_add_list_order_delete(server):
    alice = make_user(server)
    room = create_room(alice)
    r = alice.request("GET", tags_path(alice.user_id, room))
    assert r.status == 200 and r.body == {"tags": {}}
    r = alice.request("PUT", tags_path(alice.user_id, room, "m.favourite"), {"order": 0.25})
    assert r.status == 200 and r.body == {}
    r = alice.request("PUT", tags_path(alice.user_id, room, "u.work"), {})
    assert r.status == 200
    # order at both ends of [0, 1], as an integer too
    assert (
        alice.request("PUT", tags_path(alice.user_id, room, "u.first"), {"order": 0}).status == 200
    )
    assert (
        alice.request("PUT", tags_path(alice.user_id, room, "u.last"), {"order": 1}).status == 200
    )
    tags = alice.request("GET", tags_path(alice.user_id, room)).body["tags"]
    assert tags == {
        "m.favourite": {"order": 0.25},
        "u.work": {},
        "u.first": {"order": 0},
        "u.last": {"order": 1},
    }
    # Replacing a tag's order; keys other than the spec's "order" are not kept.
    r = alice.request(
        "PUT", tags_path(alice.user_id, room, "m.favourite"), {"order": 0.75, "colour": "red"}
    )
    assert r.status == 200
    tags = alice.request("GET", tags_path(alice.user_id, room)).body["tags"]
    assert tags["m.favourite"] == {"order": 0.75}
    # The generic account-data endpoint reads the same entry.
    r = alice.request("GET", f"{V3}/user/{alice.user_id}/rooms/{room}/account_data/m.tag")
    assert r.status == 200 and r.body == {"tags": tags}
    # Deleting: the tag goes, the others stay; deleting it again (or an unknown tag) is fine.
    r = alice.request("DELETE", tags_path(alice.user_id, room, "m.favourite"))
    assert r.status == 200 and r.body == {}
    tags = alice.request("GET", tags_path(alice.user_id, room)).body["tags"]
    assert set(tags) == {"u.work", "u.first", "u.last"}
    for tag in ("m.favourite", "u.never"):
        assert alice.request("DELETE", tags_path(alice.user_id, room, tag)).status == 200
    # Another room has its own tags; a room the user never tagged has none.
    other = create_room(alice)
    assert alice.request("GET", tags_path(alice.user_id, other)).body == {"tags": {}}
    assert alice.request("DELETE", tags_path(alice.user_id, other, "u.work")).status == 200
    assert alice.request("GET", tags_path(alice.user_id, other)).body == {"tags": {}}


def test_tags_in_sync(server):
    alice = make_user(server)
    room = create_room(alice)
    since = sync(alice)["next_batch"]
    alice.request("PUT", tags_path(alice.user_id, room, "m.favourite"), {"order": 0.5})
    resp = sync(alice, since)
    assert room_tag_events(resp, room) == [
        {"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 0.5}}}}
    ]
    # not in the global account data
    assert all(e["type"] != "m.tag" for e in resp.get("account_data", {}).get("events", []))
    # nothing changed: no m.tag in the next incremental sync
    assert room_tag_events(sync(alice, resp["next_batch"]), room) == []
    # a second tag, then a removal: each incremental sync carries the whole new content
    alice.request("PUT", tags_path(alice.user_id, room, "u.work"), {"order": 0.1})
    resp2 = sync(alice, resp["next_batch"])
    assert room_tag_events(resp2, room) == [
        {
            "type": "m.tag",
            "content": {"tags": {"m.favourite": {"order": 0.5}, "u.work": {"order": 0.1}}},
        }
    ]
    alice.request("DELETE", tags_path(alice.user_id, room, "m.favourite"))
    resp3 = sync(alice, resp2["next_batch"])
    assert room_tag_events(resp3, room) == [
        {"type": "m.tag", "content": {"tags": {"u.work": {"order": 0.1}}}}
    ]
    # Setting a tag to what it already is, or deleting a missing one, changes nothing.
    alice.request("PUT", tags_path(alice.user_id, room, "u.work"), {"order": 0.1})
    alice.request("DELETE", tags_path(alice.user_id, room, "m.lowpriority"))
    assert room_tag_events(sync(alice, resp3["next_batch"]), room) == []
    # An initial sync has the current tags.
    assert room_tag_events(sync(alice), room) == [
        {"type": "m.tag", "content": {"tags": {"u.work": {"order": 0.1}}}}
    ]
    # Removing the last tag leaves an empty m.tag, so other devices learn of the removal.
    alice.request("DELETE", tags_path(alice.user_id, room, "u.work"))
    assert room_tag_events(sync(alice, resp3["next_batch"]), room) == [
        {"type": "m.tag", "content": {"tags": {}}}
    ]


def test_tag_wakes_other_device_long_poll(server, client):
    """A second session of the same user waiting in /sync learns of a new favourite."""
    alice = make_user(server)
    room = create_room(alice)
    since = sync(alice)["next_batch"]
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("r", sync(alice, since, timeout=10000)))
    t.start()
    r = alice.request("PUT", tags_path(alice.user_id, room, "m.favourite"), {"order": 0.5})
    assert r.status == 200
    t.join(15)
    assert not t.is_alive()
    assert room_tag_events(box["r"], room) == [
        {"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 0.5}}}}
    ]


def test_concurrent_tags_are_all_kept(server):
    """Each change is one read-modify-write transaction: concurrent PUTs lose nothing."""
    alice = make_user(server)
    room = create_room(alice)
    names = [f"u.t{i}" for i in range(12)]
    statuses: list[int] = []
    threads = [
        threading.Thread(
            target=lambda n=n: statuses.append(
                alice.request("PUT", tags_path(alice.user_id, room, n), {"order": 0.5}).status
            )
        )
        for n in names
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * len(names)
    assert set(alice.request("GET", tags_path(alice.user_id, room)).body["tags"]) == set(names)


def test_other_users_tags_refused(server, client):
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    alice.request("PUT", tags_path(alice.user_id, room, "u.secret"), {"order": 0.5})
    for method, body in (
        ("GET", None),
        ("PUT", {"order": 0.1}),
        ("DELETE", None),
    ):
        path = tags_path(alice.user_id, room, None if method == "GET" else "u.secret")
        assert_error(bob.request(method, path, body), 403, "M_FORBIDDEN")
    # alice's user ID, percent-encoded, is still alice's
    r = bob.request("GET", f"{V3}/user/{quote(alice.user_id)}/rooms/{room}/tags")
    assert_error(r, 403, "M_FORBIDDEN")
    # no access token
    r = client.request("GET", tags_path(alice.user_id, room), token=None)
    assert_error(r, 401, "M_MISSING_TOKEN")
    # alice's tags are untouched, bob's own tags on the room are separate
    assert alice.request("GET", tags_path(alice.user_id, room)).body == {
        "tags": {"u.secret": {"order": 0.5}}
    }
    assert bob.request("GET", tags_path(bob.user_id, room)).body == {"tags": {}}


def test_room_id_rules(server):
    """As for room account data: the room ID must be valid (400), the user need not be in it."""
    alice = make_user(server)
    for bad_room in ("not-a-room", "#alias:localhost", "!", "!nocolon"):
        for method, tag, body in (
            ("GET", None, None),
            ("PUT", "u.x", {}),
            ("DELETE", "u.x", None),
        ):
            r = alice.request(method, tags_path(alice.user_id, bad_room, tag), body)
            assert_error(r, 400, "M_INVALID_PARAM")
    unknown = "!unknownroom:localhost"
    assert alice.request("PUT", tags_path(alice.user_id, unknown, "u.x"), {}).status == 200
    assert alice.request("GET", tags_path(alice.user_id, unknown)).body == {"tags": {"u.x": {}}}


def test_bad_bodies_refused(server):
    alice = make_user(server)
    room = create_room(alice)
    path = tags_path(alice.user_id, room, "u.work")
    assert_error(alice.request("PUT", path, raw=b"not json"), 400, "M_NOT_JSON")
    assert_error(alice.request("PUT", path, raw=b""), 400, "M_NOT_JSON")
    assert_error(alice.request("PUT", path, raw=b"[0.5]"), 400, "M_BAD_JSON")
    assert_error(alice.request("PUT", path, raw=b'"u.work"'), 400, "M_BAD_JSON")
    for order in ("0.5", True, None, [0.5], {"n": 0.5}):
        assert_error(alice.request("PUT", path, {"order": order}), 400, "M_BAD_JSON")
    for order in (-0.1, 1.5, 2, -1, 1e300):
        assert_error(alice.request("PUT", path, {"order": order}), 400, "M_INVALID_PARAM")
    for raw in (b'{"order": NaN}', b'{"order": Infinity}', b'{"order": 1e400}'):
        assert_error(alice.request("PUT", path, raw=raw), 400, "M_NOT_JSON")
    assert_error(alice.request("PUT", path, {"order": 0.5, "pad": "x" * 5000}), 413, "M_TOO_LARGE")
    # nothing was stored
    assert alice.request("GET", tags_path(alice.user_id, room)).body == {"tags": {}}


def test_tag_names(server):
    alice = make_user(server)
    room = create_room(alice)
    # 255 bytes is the limit, counted in UTF-8 bytes (é is two)
    ok = "u." + "x" * 253
    assert alice.request("PUT", tags_path(alice.user_id, room, ok), {}).status == 200
    r = alice.request("PUT", tags_path(alice.user_id, room, ok + "x"), {})
    assert_error(r, 400, "M_INVALID_PARAM")
    r = alice.request("PUT", tags_path(alice.user_id, room, "u." + "é" * 127), {})
    assert_error(r, 400, "M_INVALID_PARAM")
    assert alice.request("PUT", tags_path(alice.user_id, room, "u." + "é" * 126), {}).status == 200
    # m.* is the spec's: its client tags are fine, others are refused, m.server_notice is the
    # server's.
    for tag in ("m.favourite", "m.lowpriority"):
        assert alice.request("PUT", tags_path(alice.user_id, room, tag), {}).status == 200
    for tag in ("m.work", "m.", "m.favourites"):
        assert_error(
            alice.request("PUT", tags_path(alice.user_id, room, tag), {}), 400, "M_INVALID_PARAM"
        )
    r = alice.request("PUT", tags_path(alice.user_id, room, "m.server_notice"), {})
    assert_error(r, 403, "M_FORBIDDEN")
    # Non-namespaced and reverse-DNS tags are kept as they are ("historical reasons").
    for tag in ("work", "org.example.client.pinned"):
        assert alice.request("PUT", tags_path(alice.user_id, room, tag), {}).status == 200
    # An empty tag name (a trailing slash) is refused.
    r = alice.request("PUT", tags_path(alice.user_id, room) + "/", {})
    assert_error(r, 400, "M_INVALID_PARAM")
    tags = alice.request("GET", tags_path(alice.user_id, room)).body["tags"]
    assert set(tags) == {
        ok,
        "u." + "é" * 126,
        "m.favourite",
        "m.lowpriority",
        "work",
        "org.example.client.pinned",
    }


def test_percent_encoded_names(server):
    """Tag names are the route's decoded ``{tag}`` parameter: spaces, slashes and encoded
    letters all arrive as one tag."""
    alice = make_user(server)
    room = create_room(alice)
    base = tags_path(alice.user_id, room)
    assert alice.request("PUT", base + "/u.my%20tag", {"order": 0.5}).status == 200
    assert alice.request("PUT", base + "/%6D%2E%66avourite", {}).status == 200
    assert alice.request("PUT", base + "/u.a%2Fb", {}).status == 200
    assert alice.request("PUT", base + "/u.%E2%9C%93", {}).status == 200
    tags = alice.request("GET", base).body["tags"]
    assert tags == {"u.my tag": {"order": 0.5}, "m.favourite": {}, "u.a/b": {}, "u.✓": {}}
    # an encoded reserved name is still reserved
    assert_error(alice.request("PUT", base + "/m%2Eserver_notice", {}), 403, "M_FORBIDDEN")
    assert_error(alice.request("PUT", base + "/%6D.work", {}), 400, "M_INVALID_PARAM")
    # deleting through another encoding of the same name
    assert alice.request("DELETE", base + "/u.my tag".replace(" ", "%20")).status == 200
    assert alice.request("DELETE", base + "/m.favourit%65").status == 200
    assert alice.request("DELETE", base + "/u.a%2fb").status == 200
    assert alice.request("GET", base).body["tags"] == {"u.✓": {}}
    # room ID and user ID encoded in the path work too
    r = alice.request(
        "GET", f"{V3}/user/{quote(alice.user_id, safe='')}/rooms/{quote(room, safe='')}/tags"
    )
    assert r.body == {"tags": {"u.✓": {}}}


def test_tag_count_capped(server):
    alice = make_user(server)
    room = create_room(alice)
    for i in range(MAX_TAGS_PER_ROOM):
        assert alice.request("PUT", tags_path(alice.user_id, room, f"u.{i}"), {}).status == 200
    r = alice.request("PUT", tags_path(alice.user_id, room, "u.one-too-many"), {})
    assert_error(r, 413, "M_TOO_LARGE")
    # changing an existing tag is still possible, and removing one makes room for another
    r = alice.request("PUT", tags_path(alice.user_id, room, "u.0"), {"order": 0.5})
    assert r.status == 200
    assert alice.request("DELETE", tags_path(alice.user_id, room, "u.1")).status == 200
    assert alice.request("PUT", tags_path(alice.user_id, room, "u.one-too-many"), {}).status == 200
    assert (
        len(alice.request("GET", tags_path(alice.user_id, room)).body["tags"]) == MAX_TAGS_PER_ROOM
    )


def test_tags_over_hostile_account_data(server):
    """m.tag content written through the generic account-data endpoint may be anything: the tag
    endpoints read what is usable and never fail on it."""
    alice = make_user(server)
    room = create_room(alice)
    ad = f"{V3}/user/{alice.user_id}/rooms/{room}/account_data/m.tag"
    assert alice.request("PUT", ad, {"tags": ["u.work"], "other": 1}).status == 200
    assert alice.request("GET", tags_path(alice.user_id, room)).body == {"tags": {}}
    assert alice.request("DELETE", tags_path(alice.user_id, room, "u.work")).status == 200
    assert (
        alice.request("PUT", tags_path(alice.user_id, room, "u.work"), {"order": 0.5}).status == 200
    )
    assert alice.request("GET", ad).body == {"tags": {"u.work": {"order": 0.5}}, "other": 1}
    assert alice.request("PUT", ad, {"tags": {"u.a": "junk", "u.b": {"order": 1}}}).status == 200
    assert alice.request("GET", tags_path(alice.user_id, room)).body == {
        "tags": {"u.b": {"order": 1}}
    }
    assert alice.request("DELETE", tags_path(alice.user_id, room, "u.a")).status == 200
    assert alice.request("GET", ad).body == {"tags": {"u.b": {"order": 1}}}


def test_suspended_user_may_still_tag(server):
    """Tags are private account data, which a suspended account may still write."""
    from tests.api.test_http_account_restrictions import set_flag

    alice = make_user(server)
    room = create_room(alice)
    set_flag(server, alice.user_id, "suspended")
    assert alice.request("PUT", tags_path(alice.user_id, room, "m.favourite"), {}).status == 200
    assert alice.request("DELETE", tags_path(alice.user_id, room, "m.favourite")).status == 200
    rows = db_rows(
        server,
        "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = 'm.tag'",
        (alice.user_id, room),
    )
    assert [r[0] for r in rows] == ['{"tags":{}}']
