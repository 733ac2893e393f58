"""Rooms in common with another user (MSC2666: ``GET /_matrix/client/v1/mutual_rooms`` and
its unstable path), advertised in ``/versions``."""

from __future__ import annotations

import urllib.parse

from tests.support.harness import Client

V3 = "/_matrix/client/v3"
STABLE = "/_matrix/client/v1/mutual_rooms"
UNSTABLE = "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def room(c: Client, *joiners: Client, public: bool = True) -> str:
    r = c.request(
        "POST", f"{V3}/createRoom", {"preset": "public_chat" if public else "private_chat"}
    )
    assert r.status == 200, r.body
    room_id = r.body["room_id"]
    for other in joiners:
        if not public:
            assert c.request("POST", f"{V3}/rooms/{q(room_id)}/invite",
                             {"user_id": other.user_id}).status == 200  # fmt: skip
        r = other.request("POST", f"{V3}/join/{q(room_id)}", {})
        assert r.status == 200, r.body
    return room_id


def test_only_rooms_both_are_joined_to(server):
    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    carol = Client(server.base_url).register()
    shared = {room(alice, bob), room(bob, alice, public=False)}
    room(alice, carol)  # alice and carol only
    left = room(alice, bob)
    assert bob.request("POST", f"{V3}/rooms/{q(left)}/leave", {}).status == 200
    for path in (STABLE, UNSTABLE):
        r = alice.request("GET", path, query={"user_id": bob.user_id})
        assert r.status == 200, r.body
        assert r.body == {"joined": sorted(shared)}
    r = bob.request("GET", STABLE, query={"user_id": carol.user_id})
    assert r.body == {"joined": []}


def test_pages_follow_the_batch_token(server, monkeypatch):
    import bastion.api.client.mutual_rooms as module
    from bastion.core import mutual_rooms as core

    alice = Client(server.base_url).register()
    bob = Client(server.base_url).register()
    rooms = sorted(room(alice, bob) for _ in range(5))
    monkeypatch.setattr(core.mutual_rooms_page, "__defaults__", (2,))
    assert module.mutual_rooms_page is core.mutual_rooms_page
    seen: list[str] = []
    token_query: dict[str, str] = {}
    for path, token_name in ((STABLE, "from"), (UNSTABLE, "batch_token")):
        seen, token_query = [], {}
        while True:
            r = alice.request("GET", path, query={"user_id": bob.user_id, **token_query})
            assert r.status == 200, r.body
            assert len(r.body["joined"]) <= 2
            seen += r.body["joined"]
            if "next_batch_token" not in r.body:
                break
            token_query = {token_name: r.body["next_batch_token"]}
        assert seen == rooms


def test_bad_requests(server):
    alice = Client(server.base_url).register()
    for query, errcode in (
        ({}, "M_MISSING_PARAM"),
        ({"user_id": "not-a-user"}, "M_INVALID_PARAM"),
        ({"user_id": alice.user_id}, "M_INVALID_PARAM"),
        ({"user_id": "@bob:localhost", "from": "junk"}, "M_INVALID_PARAM"),
    ):
        r = alice.request("GET", STABLE, query=query)
        assert (r.status, r.body["errcode"]) == (400, errcode), (query, r.body)
    assert Client(server.base_url).request("GET", STABLE, query={"user_id": "@b:x"}).status == 401


def test_versions_advertises_exactly_what_is_served(server):
    r = Client(server.base_url).request("GET", "/_matrix/client/versions")
    assert r.body["unstable_features"] == {
        "uk.half-shot.msc2666.query_mutual_rooms": True,
        "uk.half-shot.msc2666.query_mutual_rooms.stable": True,
        "org.matrix.simplified_msc3575": True,
    }
