"""Queries between two Bastion servers over TLS (S-S API "Querying for information",
"Published Room Directory", "Device Management", "End-to-End Encryption"): served to the other
server with signed requests, and made for local clients (profiles, aliases, keys)."""

from __future__ import annotations

from tests.support import server_pair
from tests.support.e2ee import new_device
from tests.support.harness import Client
from tests.support.server_pair import V3, fed, q

pair = server_pair.pair  # the fixture
V1 = "/_matrix/federation/v1"


def test_profile_and_directory_queries_both_ways(pair, test_ca):
    a, b = pair
    alice = Client(a.base_url).register()
    bob = Client(b.base_url).register()
    r = alice.request("PUT", f"{V3}/profile/{q(alice.user_id)}/displayname", {"displayname": "Al"})
    assert r.status == 200, r.body
    # Served to B (signed request): the whole profile or one field; only our users.
    s, body = fed(test_ca, b, a, "GET", f"{V1}/query/profile?user_id={q(alice.user_id)}")
    assert (s, body["displayname"]) == (200, "Al")
    path = f"{V1}/query/profile?user_id={q(alice.user_id)}&field=displayname"
    assert fed(test_ca, b, a, "GET", path) == (200, {"displayname": "Al"})
    path = f"{V1}/query/profile?user_id={q(alice.user_id)}&field=avatar_url"
    assert fed(test_ca, b, a, "GET", path)[1]["errcode"] == "M_NOT_FOUND"
    for user in (bob.user_id, f"@nobody:{a.hs.server_name}"):
        s, body = fed(test_ca, b, a, "GET", f"{V1}/query/profile?user_id={q(user)}")
        assert (s, body["errcode"]) == (404, "M_NOT_FOUND")
    s, body = fed(test_ca, b, a, "GET", f"{V1}/query/profile")
    assert (s, body["errcode"]) == (400, "M_MISSING_PARAM")
    s, body = fed(test_ca, b, a, "GET", f"{V1}/query/profile?user_id=notauser")
    assert (s, body["errcode"]) == (400, "M_INVALID_PARAM")
    # Unsigned: refused.
    from tests.support.federation import https

    port = a.hs.federation_bound_port
    path = f"{V1}/query/profile?user_id={q(alice.user_id)}"
    assert https(test_ca, port, "GET", path)[0] == 401
    # Bob's client asks B, which asks A.
    r = bob.request("GET", f"{V3}/profile/{q(alice.user_id)}")
    assert (r.status, r.body.get("displayname")) == (200, "Al")
    r = bob.request("GET", f"{V3}/profile/{q(alice.user_id)}/displayname")
    assert (r.status, r.body) == (200, {"displayname": "Al"})
    r = bob.request("GET", f"{V3}/profile/{q('@nobody:' + a.hs.server_name)}")
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")
    r = bob.request("GET", f"{V3}/profile/{q('@x:127.0.0.1:1')}")  # nothing listens there
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")

    # Directory: an alias on A, looked up by B's client and by B directly.
    room_id = alice.request("POST", f"{V3}/createRoom", {}).body["room_id"]
    alias = f"#fed:{a.hs.server_name}"
    r = alice.request("PUT", f"{V3}/directory/room/{q(alias)}", {"room_id": room_id})
    assert r.status == 200, r.body
    s, body = fed(test_ca, b, a, "GET", f"{V1}/query/directory?room_alias={q(alias)}")
    assert (s, body) == (200, {"room_id": room_id, "servers": [a.hs.server_name]})
    r = bob.request("GET", f"{V3}/directory/room/{q(alias)}")
    assert (r.status, r.body["room_id"]) == (200, room_id)
    assert a.hs.server_name in r.body["servers"]
    missing = f"#missing:{a.hs.server_name}"
    r = bob.request("GET", f"{V3}/directory/room/{q(missing)}")
    assert (r.status, r.body["errcode"]) == (404, "M_NOT_FOUND")
    path = f"{V1}/query/directory?room_alias={q('#x:' + b.hs.server_name)}"
    assert fed(test_ca, b, a, "GET", path)[0] == 404
    assert fed(test_ca, b, a, "GET", f"{V1}/query/directory?room_alias=bad")[0] == 400


def test_public_rooms_over_federation(pair, test_ca):
    a, b = pair
    alice = Client(a.base_url).register()
    rooms = []
    for name in ("Alpha", "Beta", "Gamma"):
        r = alice.request("POST", f"{V3}/createRoom", {"name": name, "visibility": "public"})
        rooms.append(r.body["room_id"])
    alice.request("POST", f"{V3}/createRoom", {"name": "Hidden"})
    s, body = fed(test_ca, b, a, "GET", f"{V1}/publicRooms")
    assert s == 200 and sorted(c["room_id"] for c in body["chunk"]) == sorted(rooms)
    assert body["total_room_count_estimate"] == 3
    s, page = fed(test_ca, b, a, "GET", f"{V1}/publicRooms?limit=2")
    assert s == 200 and len(page["chunk"]) == 2 and page["next_batch"] == "o2"
    s, rest = fed(test_ca, b, a, "GET", f"{V1}/publicRooms?limit=2&since=o2")
    assert len(rest["chunk"]) == 1
    s, found = fed(test_ca, b, a, "POST", f"{V1}/publicRooms",
                   {"filter": {"generic_search_term": "gam"}})  # fmt: skip
    assert s == 200 and [c["name"] for c in found["chunk"]] == ["Gamma"]
    for bad in ({"limit": "2"}, {"filter": []}, {"since": 5}):
        s, body = fed(test_ca, b, a, "POST", f"{V1}/publicRooms", bad)
        assert (s, body["errcode"]) == (400, "M_BAD_JSON"), bad
    assert fed(test_ca, b, a, "GET", f"{V1}/publicRooms?since=zz")[0] == 400


def test_user_devices_and_keys_served_to_servers(pair, test_ca):
    a, b = pair
    dev = new_device(Client(a.base_url), otks=2, fallback=True)
    alice = dev.client
    alice.request("PUT", f"{V3}/devices/{q(alice.device_id)}", {"display_name": "phone"})
    user = alice.user_id
    s, body = fed(test_ca, b, a, "GET", f"{V1}/user/devices/{q(user)}")
    assert s == 200, body
    assert body["user_id"] == user and isinstance(body["stream_id"], int)
    (device,) = body["devices"]
    assert device["device_id"] == alice.device_id
    assert device["keys"] == dev.device_keys()
    assert device["device_display_name"] == "phone"
    for other in (f"@x:{b.hs.server_name}", f"@nobody:{a.hs.server_name}"):
        s, err = fed(test_ca, b, a, "GET", f"{V1}/user/devices/{q(other)}")
        assert (s, err["errcode"]) == (404, "M_NOT_FOUND")
    # keys/query: our users only; no user-signing keys; keys exactly as uploaded (+ unsigned).
    s, body = fed(test_ca, b, a, "POST", f"{V1}/user/keys/query",
                  {"device_keys": {user: [], f"@x:{b.hs.server_name}": []}})  # fmt: skip
    assert s == 200 and set(body["device_keys"]) == {user}
    served = body["device_keys"][user][alice.device_id]
    assert {k: v for k, v in served.items() if k != "unsigned"} == dev.device_keys()
    assert "user_signing_keys" not in body
    s, body = fed(test_ca, b, a, "POST", f"{V1}/user/keys/query", {"device_keys": []})
    assert (s, body["errcode"]) == (400, "M_BAD_JSON")
    # keys/claim: one-time keys in upload order, each once, then the fallback key.
    claim = {"one_time_keys": {user: {alice.device_id: "signed_curve25519"}}}
    got = []
    for _ in range(4):
        s, body = fed(test_ca, b, a, "POST", f"{V1}/user/keys/claim", claim)
        assert s == 200, body
        (key,) = body["one_time_keys"][user][alice.device_id].values()
        got.append(key)
    assert [k.get("fallback", False) for k in got] == [False, False, True, True]
    assert got[0] != got[1]
    s, body = fed(test_ca, b, a, "POST", f"{V1}/user/keys/claim", {"one_time_keys": {user: 1}})
    assert (s, body["errcode"]) == (400, "M_BAD_JSON")


def test_client_keys_for_remote_users(pair, test_ca):
    a, b = pair
    dev = new_device(Client(a.base_url), otks=1)
    bob = Client(b.base_url).register()
    alice = dev.client
    # bob shares no room with alice: B asks A with /user/keys/query each time (no caching).
    body = {"device_keys": {alice.user_id: []}, "timeout": 10000}
    r = bob.request("POST", f"{V3}/keys/query", body)
    assert r.status == 200 and r.body["failures"] == {}, r.body
    served = r.body["device_keys"][alice.user_id][alice.device_id]
    assert {k: v for k, v in served.items() if k != "unsigned"} == dev.device_keys()
    assert b.hs.store.get_remote_device_list(alice.user_id) is None
    # Claim through B: alice's one-time key, then nothing (no fallback key uploaded).
    claim = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    r = bob.request("POST", f"{V3}/keys/claim", claim)
    assert r.status == 200 and r.body["failures"] == {}, r.body
    assert list(r.body["one_time_keys"][alice.user_id][alice.device_id]) != []
    r = bob.request("POST", f"{V3}/keys/claim", claim)
    assert r.body["one_time_keys"] == {}
    # A server that cannot be reached is reported in failures, the rest is answered.
    dead = "127.0.0.1:1"
    r = bob.request("POST", f"{V3}/keys/query",
                    {"device_keys": {f"@x:{dead}": [], bob.user_id: []}})  # fmt: skip
    assert r.status == 200 and set(r.body["failures"]) == {dead}
    assert bob.user_id in r.body["device_keys"]
    r = bob.request("POST", f"{V3}/keys/claim",
                    {"one_time_keys": {f"@x:{dead}": {"D": "signed_curve25519"}}})  # fmt: skip
    assert r.status == 200 and set(r.body["failures"]) == {dead}
