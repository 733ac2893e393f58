"""Room summaries of rooms on another server (C-S API "Room Summaries", ``via``): a user of A
gets the summary of a public room on B, asked of B over federation (its hierarchy endpoint);
a room B keeps private, and a room never asked about, without ``via`` or with junk ``via``
values, are 404 alike; the answer is cached (a minute)."""

from __future__ import annotations

import urllib.parse

from tests.support import server_pair
from tests.support.harness import Client

pair = server_pair.pair  # the fixture

V3 = "/_matrix/client/v3"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def create(c: Client, **body) -> str:
    r = c.request("POST", f"{V3}/createRoom", body)
    assert r.status == 200, r.body
    return r.body["room_id"]


def summary(c: Client, room: str, via: list[str] | None = None):
    path = f"/_matrix/client/v1/room_summary/{q(room)}"
    if via:
        path += "?" + urllib.parse.urlencode([("via", v) for v in via])
    return c.request("GET", path)


def test_a_room_on_another_server_is_summarised_through_via(pair):
    a, b = pair
    alice = Client(a.base_url).register()
    bob = Client(b.base_url).register()
    b_name = b.hs.server_name
    far = create(bob, preset="public_chat", name="Far room", topic="over the hills",
                 room_alias_name="far")  # fmt: skip
    secret = create(bob, preset="private_chat", name="Far secret")
    other = create(bob, preset="public_chat", name="Never asked")
    r = summary(alice, far, [b_name])
    assert r.status == 200, r.body
    body = r.body
    assert body["room_id"] == far and body["name"] == "Far room"
    assert body["topic"] == "over the hills" and body["join_rule"] == "public"
    assert body["canonical_alias"] == f"#far:{b_name}"
    assert body["num_joined_members"] == 1 and body["membership"] == "leave"
    assert "children_state" not in body
    # Asked again: from the cache, the same.
    assert summary(alice, far, [b_name]).body == body
    # Not without via (a room not asked before); not a room B keeps to its members; junk via
    # values are skipped.
    for room, via in ((other, None), (secret, [b_name]), (other, ["not a server", "@x:y", ""])):
        r = summary(alice, room, via)
        assert (r.status, r.body.get("errcode")) == (404, "M_NOT_FOUND"), (room, via, r.body)
    # Once alice has joined, the summary is this server's own, with her membership.
    assert alice.request("POST", f"{V3}/join/{q(far)}?server_name={q(b_name)}", {}).status == 200
    r = summary(alice, far)
    assert r.status == 200 and r.body["membership"] == "join", r.body
    assert r.body["room_version"]
