"""Federation acceptance with a real Synapse (one Synapse and one Bastion for the module, TLS with
the test CA, setup per SYNAPSE-PEER.md), both ways:

* a Bastion room with a Synapse member and a Synapse room with a Bastion member: invite, join
  over federation and messages in both directions;
* power levels enforced on both sides: a low-power user's state change is refused by its own
  server and, when our server forges one past its own checks, by Synapse; a power-level change
  made on one server is honoured by the other;
* a ban enforced on both sides: the banned remote user can neither send nor rejoin, the ban is
  in both servers' state, and a forged event of the banned user is refused by Synapse;
* key fetching and notary queries each way: ``POST`` and ``GET /_matrix/key/v2/query`` on
  Synapse about us and on us about Synapse; Synapse uses us as its notary
  (``trusted_key_servers``) to learn a third server's keys;
* each side verifying the other's event signatures: Synapse drops our event with a bad
  signature (and accepts it well signed), we drop a Synapse event with a bad signature relayed by
  a test peer, and every stored Synapse event verifies;
* an end-to-end encrypted conversation between matrix-nio users on Bastion and on Synapse (the
  scenario of test_e2ee_federation.py), with the room on each server in turn.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid

import pytest

from bastion.core.events import compute_event_id
from bastion.core.server_keys import check_notary_signature, validate_key_response
from bastion.core.signing import encode_verify_key, signing_key_ids
from bastion.core.x_matrix import authorization_header
from tests.acceptance.test_synapse_peer import _client, synapse_process
from tests.support.federation import https, run, start_fed_server
from tests.support.forge import forge, push
from tests.support.harness import Client
from tests.support.peer import FakePeer, on_server
from tests.support.synapse_config import SYNAPSE_RATE_LIMITS

pytest.importorskip("synapse")

V3 = "/_matrix/client/v3"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def wait(cond, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out: {what}")


class SynUser:
    """A Synapse user through Synapse's client API."""

    def __init__(self, syn: dict, name: str) -> None:
        self.syn = syn
        status, reg = _client("POST", syn["client"] + f"{V3}/register",
                              {"username": name, "password": "pw-123456789",
                               "auth": {"type": "m.login.dummy"}})  # fmt: skip
        assert status == 200, reg
        self.user_id, self.token = reg["user_id"], reg["access_token"]

    def request(self, method: str, path: str, body=None):
        return _client(method, self.syn["client"] + path, body, token=self.token)

    def state(self, room_id: str, etype: str, state_key: str = ""):
        return self.request("GET", f"{V3}/rooms/{q(room_id)}/state/{etype}/{q(state_key)}")

    def send(self, room_id: str, body: str):
        return self.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/{uuid.uuid4().hex}",
                            {"msgtype": "m.text", "body": body})  # fmt: skip

    def messages(self, room_id: str) -> list[str]:
        status, body = self.request("GET", f"{V3}/rooms/{q(room_id)}/messages?dir=b&limit=50")
        if status != 200:
            return []
        return [e["content"].get("body") for e in body["chunk"] if e["type"] == "m.room.message"]

    def event(self, room_id: str, event_id: str):
        return self.request("GET", f"{V3}/rooms/{q(room_id)}/event/{q(event_id)}")


def our_state(c: Client, room_id: str, etype: str, state_key: str = ""):
    r = c.request("GET", f"{V3}/rooms/{q(room_id)}/state/{etype}/{q(state_key)}")
    return r.status, r.body


def our_messages(c: Client, room_id: str) -> list[str]:
    r = c.request("GET", f"{V3}/rooms/{q(room_id)}/messages", query={"dir": "b", "limit": "50"})
    if r.status != 200:
        return []
    return [e["content"].get("body") for e in r.body["chunk"] if e["type"] == "m.room.message"]


def our_send(c: Client, room_id: str, body: str):
    return c.request("PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/{uuid.uuid4().hex}",
                     {"msgtype": "m.text", "body": body})  # fmt: skip


def membership_on_ours(srv, room_id: str, user_id: str):
    return on_server(srv, lambda: srv.hs.rooms.membership_of(room_id, user_id))


@pytest.fixture(scope="module")
def env(tmp_path_factory, test_ca):
    tmp = tmp_path_factory.mktemp("synapse-acceptance")
    ours = start_fed_server(tmp, test_ca, "bastion-acc",
                            federation_retry_min_ms=200, federation_retry_max_ms=2000)  # fmt: skip
    peer = None
    try:
        sk = ours.hs.signing_key
        trusted = [{"server_name": ours.hs.server_name,
                    "verify_keys": {sk.key_id: encode_verify_key(sk.key)}}]  # fmt: skip
        with synapse_process(tmp / "synapse", test_ca, {**SYNAPSE_RATE_LIMITS,
                             "trusted_key_servers": trusted}, label="synapse-acc") as syn:  # fmt: skip
            peer = FakePeer(test_ca, "peer-acc").start()
            yield {"ours": ours, "syn": syn, "peer": peer}
    finally:
        if peer is not None:
            peer.stop()
        ours.stop()


@pytest.fixture(scope="module")
def rooms(env):
    """A Bastion room with a Synapse member and a Synapse room with a Bastion member, each
    joined through an invite over federation, with messages both ways."""
    ours, syn = env["ours"], env["syn"]
    alice = Client(ours.base_url).register("amy")
    carol = Client(ours.base_url).register("carol")
    bob = SynUser(syn, "ben")
    erin = SynUser(syn, "erin")

    # A Bastion room; bob and erin (Synapse) invited and joined over federation.
    r = alice.request("POST", f"{V3}/createRoom", {"invite": [bob.user_id, erin.user_id],
                                                   "name": "on bastion"})  # fmt: skip
    assert r.status == 200, r.body
    ours_room = r.body["room_id"]
    for u in (bob, erin):

        def invited(u=u):
            status, body = u.request("GET", f"{V3}/sync?timeout=0")
            return status == 200 and ours_room in body["rooms"].get("invite", {})

        wait(invited, f"{u.user_id} sees the invite")
        status, body = u.request("POST", f"{V3}/join/{q(ours_room)}", {})
        assert status == 200, body
        wait(lambda u=u: membership_on_ours(ours, ours_room, u.user_id) == "join",
             f"{u.user_id} joined on ours")  # fmt: skip
    # A Synapse room; carol (Bastion) invited (our /v2/invite) and joined (our make/send_join).
    status, body = bob.request("POST", f"{V3}/createRoom",
                               {"preset": "private_chat", "name": "on synapse",
                                "invite": [carol.user_id, erin.user_id]})  # fmt: skip
    assert status == 200, body
    syn_room = body["room_id"]

    def carol_invited():
        r = carol.request("GET", f"{V3}/sync", query={"timeout": "0"})
        return r.status == 200 and syn_room in r.body["rooms"].get("invite", {})

    wait(carol_invited, "carol sees Synapse's invite")
    r = carol.request("POST", f"{V3}/join/{q(syn_room)}", {})
    assert r.status == 200, r.body
    status, body = erin.request("POST", f"{V3}/join/{q(syn_room)}", {})
    assert status == 200, body
    wait(lambda: membership_on_ours(ours, syn_room, erin.user_id) == "join", "erin's join")
    # Messages both ways in both rooms.
    for room in (ours_room, syn_room):
        local = alice if room == ours_room else carol
        tag = uuid.uuid4().hex[:8]
        assert our_send(local, room, f"from bastion {tag}").status == 200
        wait(lambda room=room, tag=tag: f"from bastion {tag}" in bob.messages(room),
             "Synapse receives our message")  # fmt: skip
        status, body = bob.send(room, f"from synapse {tag}")
        assert status == 200, body
        wait(lambda room=room, local=local, tag=tag: f"from synapse {tag}"
             in our_messages(local, room), "we receive Synapse's message")  # fmt: skip
    return {"alice": alice, "carol": carol, "bob": bob, "erin": erin,
            "ours_room": ours_room, "syn_room": syn_room}  # fmt: skip


def test_invites_joins_and_messages_both_ways(env, rooms):
    ours = env["ours"]
    bob, carol = rooms["bob"], rooms["carol"]
    # Each server holds the other's members as joined, in both rooms.
    for room in (rooms["ours_room"], rooms["syn_room"]):
        for u in (bob.user_id, rooms["erin"].user_id, carol.user_id):
            if room == rooms["ours_room"] and u == carol.user_id:
                continue
            assert membership_on_ours(ours, room, u) == "join"
        status, body = bob.request("GET", f"{V3}/rooms/{q(room)}/joined_members")
        assert status == 200, body
        local = rooms["alice"].user_id if room == rooms["ours_room"] else carol.user_id
        assert local in body["joined"]
    # The Synapse room's name reached us; ours reached Synapse.
    assert our_state(carol, rooms["syn_room"], "m.room.name")[1] == {"name": "on synapse"}
    assert bob.state(rooms["ours_room"], "m.room.name") == (200, {"name": "on bastion"})


def test_power_levels_enforced_on_both_sides(env, rooms):
    ours, syn = env["ours"], env["syn"]
    alice, carol, bob, erin = rooms["alice"], rooms["carol"], rooms["bob"], rooms["erin"]
    ours_room, syn_room = rooms["ours_room"], rooms["syn_room"]

    # 1. Low-power users are refused by their own server, from the state it got from the other.
    status, body = bob.request("PUT", f"{V3}/rooms/{q(ours_room)}/state/m.room.name/",
                               {"name": "bob was here"})  # fmt: skip
    assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
    r = carol.request("PUT", f"{V3}/rooms/{q(syn_room)}/state/m.room.name/", {"name": "carol"})
    assert (r.status, r.body["errcode"]) == (403, "M_FORBIDDEN")
    # ... and Synapse refuses such a change when our server sends it past its own checks.
    forged_id, forged = forge(ours, syn_room, carol.user_id, "m.room.name", {"name": "forged"}, "")
    status, body = push(ours, syn["name"], [forged])
    assert status == 200, body
    time.sleep(1.0)
    assert bob.event(syn_room, forged_id)[0] == 404
    assert bob.state(syn_room, "m.room.name") == (200, {"name": "on synapse"})
    # A well-signed, allowed event sent the same way is accepted (the refusal was the rule).
    ok_id, ok = forge(ours, syn_room, carol.user_id, "m.room.message", {"msgtype": "m.text",
               "body": "pushed by hand"})  # fmt: skip
    assert push(ours, syn["name"], [ok])[0] == 200
    wait(lambda: bob.event(syn_room, ok_id)[0] == 200, "Synapse accepts the allowed event")

    # 2. A power-level change made on our server is honoured by Synapse: bob gets 50 and may
    #    rename our room from Synapse; we accept his event.
    _, pl = our_state(alice, ours_room, "m.room.power_levels")
    pl = {**pl, "users": {**pl["users"], bob.user_id: 50}}
    r = alice.request("PUT", f"{V3}/rooms/{q(ours_room)}/state/m.room.power_levels/", pl)
    assert r.status == 200, r.body
    wait(lambda: bob.state(ours_room, "m.room.power_levels")[1].get("users", {})
         .get(bob.user_id) == 50, "Synapse holds the new power levels")  # fmt: skip
    status, body = bob.request("PUT", f"{V3}/rooms/{q(ours_room)}/state/m.room.name/",
                               {"name": "renamed on synapse"})  # fmt: skip
    assert status == 200, body
    wait(lambda: our_state(alice, ours_room, "m.room.name")[1] == {"name": "renamed on synapse"},
         "we accept the rename by Synapse's user")  # fmt: skip
    # erin (still 0) is refused by Synapse.
    status, body = erin.request("PUT", f"{V3}/rooms/{q(ours_room)}/state/m.room.topic/",
                                {"topic": "no"})  # fmt: skip
    assert status == 403, body

    # 3. A power-level change made on Synapse is honoured by us: carol gets 100 in Synapse's
    #    room and may set its topic from Bastion; Synapse accepts it.
    status, pl = bob.state(syn_room, "m.room.power_levels")
    assert status == 200, pl
    pl = {**pl, "users": {**pl["users"], carol.user_id: 100}}
    status, body = bob.request("PUT", f"{V3}/rooms/{q(syn_room)}/state/m.room.power_levels/", pl)
    assert status == 200, body
    wait(lambda: our_state(carol, syn_room, "m.room.power_levels")[1].get("users", {})
         .get(carol.user_id) == 100, "we hold Synapse's new power levels")  # fmt: skip
    r = carol.request("PUT", f"{V3}/rooms/{q(syn_room)}/state/m.room.topic/",
                      {"topic": "set from bastion"})  # fmt: skip
    assert r.status == 200, r.body
    wait(lambda: bob.state(syn_room, "m.room.topic")[1] == {"topic": "set from bastion"},
         "Synapse accepts our topic")  # fmt: skip


def test_signatures_verified_both_ways(env, rooms):
    ours, syn, peer = env["ours"], env["syn"], env["peer"]
    bob, carol = rooms["bob"], rooms["carol"]
    syn_room = rooms["syn_room"]
    # Synapse drops our event when its signature does not verify.
    ev_id, ev = forge(ours, syn_room, carol.user_id, "m.room.message", {"msgtype": "m.text",
               "body": "badly signed"})  # fmt: skip
    sig = ev["signatures"][ours.hs.server_name]
    key_id = next(iter(sig))
    bad = {**ev, "signatures": {ours.hs.server_name: {key_id: "A" * 86}}}
    assert push(ours, syn["name"], [bad])[0] == 200
    time.sleep(1.0)
    assert bob.event(syn_room, ev_id)[0] == 404
    assert "badly signed" not in bob.messages(syn_room)

    # Every Synapse event we stored carries Synapse's signature and verifies with its keys.
    async def stored_synapse_events():
        store = ours.hs.store
        ids = [r[0] for r in store.db.read(
            "SELECT event_id FROM events WHERE room_id = ? AND rejected = 0", (syn_room,))]  # fmt: skip
        pdus = store.get_pdus(ids)
        mine = {e: p for e, p in pdus.items() if p["sender"].endswith(":" + syn["name"])}
        for p in mine.values():
            assert syn["name"] in p["signatures"]
            assert await ours.hs.federation.keyring.verify_event_signatures(p, "12") is True
        return mine

    syn_events = run(ours, stored_synapse_events())
    assert len(syn_events) >= 5
    # A Synapse event whose signature no longer matches, relayed by another server: dropped.
    msg = next(p for p in syn_events.values() if p["type"] == "m.room.message")
    tampered = {**msg, "origin_server_ts": msg["origin_server_ts"] + 1}
    tampered_id = compute_event_id(tampered, "12")
    status, body = peer.send(ours, uuid.uuid4().hex, [tampered])
    assert status == 200 and "signatures" in body["pdus"][tampered_id]["error"], body
    assert on_server(ours, lambda: ours.hs.store.get_event_meta([tampered_id])) == {}


def test_keys_and_notary_queries_both_ways(env, rooms):
    ours, syn, peer = env["ours"], env["syn"], env["peer"]
    hs = ours.hs
    now = hs.now_ms()
    # Synapse as notary about us, POST and GET.
    status, body = run(ours, hs.federation.client.request(
        "POST", syn["name"], "/_matrix/key/v2/query",
        {"server_keys": {hs.server_name: {hs.signing_key.key_id: {"minimum_valid_until_ts": 0}}}},
    ))  # fmt: skip
    assert status == 200, body
    status, got = run(ours, hs.federation.client.request(
        "GET", syn["name"], f"/_matrix/key/v2/query/{hs.server_name}"))  # fmt: skip
    assert status == 200, got
    syn_ids = None
    for resp in (body, got):
        [entry] = resp["server_keys"]
        validate_key_response(entry, hs.server_name, now)
        assert entry["verify_keys"][hs.signing_key.key_id]["key"] == encode_verify_key(
            hs.signing_key.key
        )
        syn_ids = signing_key_ids(entry, syn["name"])
        syn_keys = run(ours, hs.federation.keyring.get_verify_keys(syn["name"], syn_ids, now))
        check_notary_signature(entry, syn["name"], {k: v.key for k, v in syn_keys.items()})
    # Synapse's own keys fetched directly (GET /_matrix/key/v2/server).
    status, own = run(ours, hs.federation.client.request("GET", syn["name"], "/_matrix/key/v2/server"))  # fmt: skip
    assert status == 200, own
    validate_key_response(own, syn["name"], now)
    assert set(syn_ids) <= set(own["verify_keys"])

    # We as notary about Synapse, POST and GET (what a third server would ask us).
    for method, path, req in (
        ("POST", "/_matrix/key/v2/query", {"server_keys": {syn["name"]: {}}}),
        ("GET", f"/_matrix/key/v2/query/{q(syn['name'])}", None),
    ):
        status, resp = https(env["peer"].ca, hs.federation_bound_port, method, path, req)
        assert status == 200, resp
        [entry] = resp["server_keys"]
        validate_key_response(entry, syn["name"], now)
        check_notary_signature(
            entry, hs.server_name, {hs.signing_key.key_id: hs.signing_key.key.verify_key}
        )
        assert set(syn_ids) <= set(entry["verify_keys"])

    # Synapse uses us as its notary (trusted_key_servers): a request signed by a third server
    # it has never met is authenticated with keys it got from our POST /_matrix/key/v2/query.
    third = FakePeer(peer.ca, "third-acc").start()
    try:
        assert on_server(ours, lambda: hs.store.get_server_key_response(third.server_name)) is None
        path = "/_matrix/federation/v1/query/profile?user_id=" + q(f"@nobody:{syn['name']}")
        auth = authorization_header(
            "GET", path, third.server_name, syn["name"], third.key_id, third.key, None
        )
        status, resp = https(third.ca, syn["fed_port"], "GET", path, None, {"Authorization": auth})
        assert status == 404 and resp["errcode"] == "M_NOT_FOUND", (status, resp)
        # We fetched its keys for Synapse (we had no other reason to), and Synapse's log shows
        # no direct fetch from it: third's server saw key requests only from us.
        cached = on_server(ours, lambda: hs.store.get_server_key_response(third.server_name))
        assert cached is not None
        assert [p for m, p in third.requests] == ["/_matrix/key/v2/server"]
    finally:
        third.stop()


def test_ban_enforced_on_both_sides(env, rooms):
    ours, syn = env["ours"], env["syn"]
    alice, carol, bob, erin = rooms["alice"], rooms["carol"], rooms["bob"], rooms["erin"]
    ours_room, syn_room = rooms["ours_room"], rooms["syn_room"]

    # 1. We ban erin (Synapse) from our room.
    r = alice.request("POST", f"{V3}/rooms/{q(ours_room)}/ban",
                      {"user_id": erin.user_id, "reason": "test"})  # fmt: skip
    assert r.status == 200, r.body
    assert our_state(alice, ours_room, "m.room.member", erin.user_id)[1]["membership"] == "ban"
    wait(lambda: bob.state(ours_room, "m.room.member", erin.user_id)[1].get("membership")
         == "ban", "Synapse holds the ban")  # fmt: skip
    status, body = erin.send(ours_room, "banned but talking")
    assert status == 403, body
    status, body = erin.request("POST", f"{V3}/join/{q(ours_room)}", {})
    assert status == 403, body
    assert membership_on_ours(ours, ours_room, erin.user_id) == "ban"
    assert "banned but talking" not in our_messages(alice, ours_room)

    # 2. Synapse's bob bans carol (ours) from his room.
    status, body = bob.request("POST", f"{V3}/rooms/{q(syn_room)}/ban",
                               {"user_id": carol.user_id, "reason": "test"})  # fmt: skip
    assert status == 200, body
    wait(lambda: membership_on_ours(ours, syn_room, carol.user_id) == "ban", "we hold the ban")
    assert bob.state(syn_room, "m.room.member", carol.user_id)[1]["membership"] == "ban"
    r = our_send(carol, syn_room, "banned here too")
    assert r.status == 403, r.body
    r = carol.request("POST", f"{V3}/join/{q(syn_room)}", {}, query={"via": syn["name"]})
    assert r.status == 403, r.body
    # A message of the banned user forged by our server is refused by Synapse.
    forged_id, forged = forge(ours, syn_room, carol.user_id, "m.room.message",
                   {"msgtype": "m.text", "body": "forged after the ban"})  # fmt: skip
    assert push(ours, syn["name"], [forged])[0] == 200
    time.sleep(1.0)
    assert bob.event(syn_room, forged_id)[0] == 404
    assert "forged after the ban" not in bob.messages(syn_room)
    assert membership_on_ours(ours, syn_room, carol.user_id) == "ban"


@pytest.mark.parametrize("room_on", ["bastion", "synapse"])
def test_nio_e2ee_conversation_with_synapse(env, tmp_path, room_on):
    nio = pytest.importorskip("nio")
    from tests.acceptance.test_e2ee_federation import _scenario

    ours, syn = env["ours"], env["syn"]
    urls = (
        (ours.base_url, syn["client"]) if room_on == "bastion" else (syn["client"], ours.base_url)
    )
    out = asyncio.run(_scenario(*urls, tmp_path))
    assert nio is not None
    bodies, clients, ids = out["bodies"], out["clients"], out["ids"]
    ours_name, syn_name = ours.hs.server_name, syn["name"]
    a_srv, b_srv = (ours_name, syn_name) if room_on == "bastion" else (syn_name, ours_name)
    assert ids["alice"].endswith(":" + a_srv) and ids["bob"].endswith(":" + b_srv)
    assert (ids["alice"], bodies[0]) in clients["bob"]["messages"]
    assert (ids["bob"], bodies[1]) in clients["alice"]["messages"]
    assert (ids["alice"], bodies[2]) in clients["bob"]["messages"]
    assert (ids["alice"], bodies[2]) in clients["bob2"]["messages"]
    assert clients["alice"]["undecrypted"] == [] and clients["bob"]["undecrypted"] == []
    assert out["pings"] == 1
    for name in ("bob", "bob2"):
        olm = [e for e in clients[name]["to_device"] if e["type"] == "m.room.encrypted"]
        assert olm and all(e["sender"] == ids["alice"] for e in olm), name
    # Our database holds only Megolm ciphertext for the room's messages.
    import orjson

    from tests.support.nio_clients import room_events

    events = room_events(ours.hs.config.database_path, out["room_id"])
    messages = [orjson.loads(j) for t, sk, j in events if sk is None]
    assert len(messages) >= 3
    for ev in messages:
        assert ev["type"] == "m.room.encrypted"
        assert ev["content"]["algorithm"] == "m.megolm.v1.aes-sha2"
