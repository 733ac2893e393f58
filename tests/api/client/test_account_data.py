"""Account data (C-S API "Client Config") — endpoints, access control and /sync."""

from __future__ import annotations

from tests.support.accounts import make_user
from tests.support.rooms import V3, create_room, sync


def test_global_account_data(server):
    alice = make_user(server)
    path = f"{V3}/user/{alice.user_id}/account_data/m.direct"
    r = alice.request("GET", path)
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    first = sync(alice)
    content = {"@bob:localhost": ["!r:localhost"]}
    r = alice.request("PUT", path, content)
    assert r.status == 200 and r.body == {}
    assert alice.request("GET", path).body == content
    resp = sync(alice, first["next_batch"])
    assert {"type": "m.direct", "content": content} in resp["account_data"]["events"]
    # initial sync has it, plus m.push_rules
    types = [e["type"] for e in sync(alice)["account_data"]["events"]]
    assert "m.direct" in types and "m.push_rules" in types
    # replacing it
    alice.request("PUT", path, {"@carol:localhost": []})
    assert alice.request("GET", path).body == {"@carol:localhost": []}
    resp2 = sync(alice, resp["next_batch"])
    assert resp2["account_data"]["events"] == [
        {"type": "m.direct", "content": {"@carol:localhost": []}}
    ]
    # nothing changed: no account data, no m.push_rules
    assert "account_data" not in sync(alice, resp2["next_batch"]) or not sync(
        alice, resp2["next_batch"]
    )["account_data"].get("events")


def test_room_account_data(server):
    alice = make_user(server)
    room = create_room(alice)
    path = f"{V3}/user/{alice.user_id}/rooms/{room}/account_data/m.tag"
    since = sync(alice)["next_batch"]
    tags = {"tags": {"u.work": {"order": 1}}}
    r = alice.request("PUT", path, tags)
    assert r.status == 200
    assert alice.request("GET", path).body == tags
    # room data does not fall back to global data and vice versa
    r = alice.request("GET", f"{V3}/user/{alice.user_id}/account_data/m.tag")
    assert r.status == 404
    resp = sync(alice, since)
    assert resp["rooms"]["join"][room]["account_data"]["events"] == [
        {"type": "m.tag", "content": tags}
    ]
    assert all(e["type"] != "m.tag" for e in resp.get("account_data", {}).get("events", []))
    # filters apply
    flt = '{"room": {"account_data": {"not_types": ["m.tag"]}}}'
    room_out = sync(alice, filter=flt)["rooms"]["join"][room]
    assert not room_out.get("account_data", {}).get("events")
    flt = '{"account_data": {"types": ["m.nothing"]}}'
    assert not sync(alice, filter=flt).get("account_data", {}).get("events")


def test_account_data_access_control(server, client):
    alice, bob = make_user(server), make_user(server)
    path = f"{V3}/user/{alice.user_id}/account_data/org.example.secret"
    alice.request("PUT", path, {"s": 1})
    for method, body in (("GET", None), ("PUT", {"s": 2})):
        r = bob.request(method, path, body)
        assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    rpath = f"{V3}/user/{alice.user_id}/rooms/!r:localhost/account_data/m.tag"
    assert bob.request("GET", rpath).status == 403
    assert bob.request("PUT", rpath, {}).status == 403
    assert client.request("GET", path, token=None).status == 401
    assert alice.request("GET", path).body == {"s": 1}
    # bob's own data of the same type is separate
    bpath = f"{V3}/user/{bob.user_id}/account_data/org.example.secret"
    assert bob.request("GET", bpath).status == 404


def test_account_data_bad_input(server):
    alice = make_user(server)
    base = f"{V3}/user/{alice.user_id}"
    path = base + "/account_data/org.example"
    r = alice.request("PUT", path, raw=b"not json")
    assert r.status == 400 and r.body["errcode"] == "M_NOT_JSON"
    r = alice.request("PUT", path, raw=b"[1, 2]")
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    r = alice.request("PUT", path, raw=b'{"a": 1.5}')
    assert r.status == 400
    r = alice.request("PUT", base + "/account_data/" + "x" * 300, {})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    r = alice.request("PUT", path, {"big": "x" * 70000})
    assert r.status == 413 and r.body["errcode"] == "M_TOO_LARGE"
    for t in ("m.fully_read", "m.push_rules"):
        r = alice.request("PUT", f"{base}/account_data/{t}", {})
        assert r.status == 405 and r.body["errcode"] == "M_BAD_JSON", t
        r = alice.request("PUT", f"{base}/rooms/!r:localhost/account_data/{t}", {})
        assert r.status == 405 and r.body["errcode"] == "M_BAD_JSON", t
    for bad_room in ("not-a-room", "%23alias:localhost"):
        r = alice.request("PUT", f"{base}/rooms/{bad_room}/account_data/m.tag", {})
        assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
        r = alice.request("GET", f"{base}/rooms/{bad_room}/account_data/m.tag")
        assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"


def test_account_data_wakes_long_poll(server):
    import threading
    import time

    alice = make_user(server)
    since = sync(alice)["next_batch"]
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", sync(alice, since, timeout=10000)))
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    alice.request("PUT", f"{V3}/user/{alice.user_id}/account_data/org.example", {"v": 1})
    t.join(10)
    assert time.monotonic() - t0 < 5
    assert {"type": "org.example", "content": {"v": 1}} in box["r"]["account_data"]["events"]
