"""Server-side search (C-S API "Server Side Search", ``POST /search``; services/search.py,
storage/sqlite/search.py)."""

from __future__ import annotations

import pytest

from tests.support.accounts import assert_error, db_rows, make_user, on_server
from tests.support.guard import NO_RATE_LIMITS
from tests.support.harness import Client, ServerThread
from tests.support.rooms import V3, create_room, join, send

SEARCH = V3 + "/search"


def search_raw(c, term, next_batch=None, **criteria):
    query = {"next_batch": next_batch} if next_batch is not None else None
    body = {"search_categories": {"room_events": {"search_term": term, **criteria}}}
    return c.request("POST", SEARCH, body, query=query)


def search(c, term, next_batch=None, **criteria) -> dict:
    r = search_raw(c, term, next_batch, **criteria)
    assert r.status == 200, r.body
    return r.body["search_categories"]["room_events"]


def ids(body: dict) -> list[str]:
    return [x["result"]["event_id"] for x in body["results"]]


def private_room(c, **extra) -> str:
    return create_room(c, preset="private_chat", **extra)


def invite_join(owner, other, room_id: str) -> None:
    r = owner.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": other.user_id})
    assert r.status == 200, r.body
    join(other, room_id)


def set_state(c, room_id: str, etype: str, content: dict) -> None:
    r = c.request("PUT", f"{V3}/rooms/{room_id}/state/{etype}/", content)
    assert r.status == 200, r.body


@pytest.fixture
def server(tmp_path):
    srv = ServerThread(tmp_path / "data", guard=NO_RATE_LIMITS).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    return Client(server.base_url)


@pytest.fixture
def alice(server):
    return make_user(server)


@pytest.fixture
def bob(server):
    return make_user(server)


def test_finds_messages_names_and_topics(alice):
    room = private_room(alice, name="Aardvark club", topic="all about aardvarks")
    e1 = send(alice, room, "The aardvark sleeps")
    send(alice, room, "nothing to see")
    body = search(alice, "aardvark")
    found = ids(body)
    assert e1 in found and len(found) == 3 and body["count"] == 3
    types = {x["result"]["type"] for x in body["results"]}
    assert types == {"m.room.message", "m.room.name", "m.room.topic"}
    assert "aardvark" in body["highlights"] and "aardvarks" in body["highlights"]
    hit = next(x for x in body["results"] if x["result"]["event_id"] == e1)
    assert hit["result"]["content"]["body"] == "The aardvark sleeps"
    assert hit["result"]["room_id"] == room and isinstance(hit["rank"], float)
    assert "next_batch" not in body
    # keys narrow the search; words must all match; case and diacritics do not matter
    assert ids(search(alice, "aardvark", keys=["content.body"])) == [e1]
    assert ids(search(alice, "AARDVÄRK sleeps")) == [e1]
    assert ids(search(alice, "aardvark nothing")) == []
    # a word shorter than three letters is a whole word, not a prefix
    assert ids(search(alice, "aa")) == [] and ids(search(alice, "THE")) == [e1]
    only_name = search(alice, "club", keys=["content.name"])["results"]
    assert [x["result"]["type"] for x in only_name] == ["m.room.name"]


def test_rank_and_recent_orders(alice):
    room = private_room(alice)
    strong = send(alice, room, "zebra zebra zebra zebra")
    weak = send(alice, room, "a zebra among many many many other words in a long sentence here")
    newest = send(alice, room, "zebra and others")
    ranked = search(alice, "zebra")
    assert ids(ranked)[0] == strong
    ranks = [x["rank"] for x in ranked["results"]]
    assert ranks == sorted(ranks, reverse=True)
    assert ids(search(alice, "zebra", order_by="recent")) == [newest, weak, strong]


@pytest.mark.parametrize("order", ["recent", "rank"])
def test_pagination_with_next_batch(alice, order):
    room = private_room(alice)
    sent = [send(alice, room, f"walrus number {i}") for i in range(13)]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        body = search(alice, "walrus", token, order_by=order, filter={"limit": 5})
        assert body["count"] == 13
        seen += ids(body)
        pages += 1
        token = body.get("next_batch")
        if token is None:
            break
    assert sorted(seen) == sorted(sent) and len(seen) == 13 and pages in (3, 4)
    if order == "recent":
        assert seen == sent[::-1]
    # a token of one order is refused for the other, and junk tokens are refused
    first = search(alice, "walrus", order_by=order, filter={"limit": 5})["next_batch"]
    other = "rank" if order == "recent" else "recent"
    assert_error(search_raw(alice, "walrus", first, order_by=other), 400, "M_INVALID_PARAM")
    for junk in ("", "x", "!!!", "eyJvIjoicmFuayJ9", "a" * 5000):
        assert_error(search_raw(alice, "walrus", junk, order_by=order), 400, "M_INVALID_PARAM")


def test_context_profile_and_state(alice, bob):
    room = private_room(alice, name="Context room")
    invite_join(alice, bob, room)
    r = bob.request("PUT", f"{V3}/profile/{bob.user_id}/displayname", {"displayname": "Bobbo"})
    assert r.status == 200
    before = [send(alice, room, f"before {i}") for i in range(3)]
    hit = send(bob, room, "the penguin is here")
    after = [send(alice, room, f"after {i}") for i in range(3)]
    body = search(alice, "penguin", event_context={"before_limit": 2, "after_limit": 2,
                                                   "include_profile": True},
                  include_state=True)  # fmt: skip
    (res,) = body["results"]
    ctx = res["context"]
    assert [e["event_id"] for e in ctx["events_before"]] == before[::-1][:2]
    assert [e["event_id"] for e in ctx["events_after"]] == after[:2]
    assert ctx["start"] and ctx["end"]
    assert ctx["profile_info"][bob.user_id] == {"displayname": "Bobbo"}
    assert res["result"]["event_id"] == hit
    state = body["state"][room]
    assert {e["type"] for e in state} >= {"m.room.create", "m.room.name", "m.room.member"}
    # the context tokens page /messages
    r = alice.request("GET", f"{V3}/rooms/{room}/messages",
                      query={"from": ctx["end"], "dir": "f", "limit": 1})  # fmt: skip
    assert r.status == 200 and [e["event_id"] for e in r.body["chunk"]] == [after[2]]


def test_groups(alice, bob):
    r1 = private_room(alice)
    r2 = private_room(alice)
    invite_join(alice, bob, r2)
    a1 = send(alice, r1, "otter one")
    b2 = send(bob, r2, "otter two")
    a2 = send(alice, r2, "otter three")
    body = search(alice, "otter", order_by="recent",
                  groupings={"group_by": [{"key": "room_id"}, {"key": "sender"}]})  # fmt: skip
    rooms = body["groups"]["room_id"]
    assert rooms[r2] == {"order": 1, "results": [a2, b2]}
    assert rooms[r1] == {"order": 2, "results": [a1]}
    senders = body["groups"]["sender"]
    assert senders[alice.user_id]["results"] == [a2, a1]
    assert senders[bob.user_id]["results"] == [b2]
    # a group's next_batch continues within the group only
    page = search(alice, "otter", order_by="recent", filter={"limit": 1},
                  groupings={"group_by": [{"key": "room_id"}]})  # fmt: skip
    assert ids(page) == [a2]
    token = page["groups"]["room_id"][r2]["next_batch"]
    assert ids(search(alice, "otter", token, order_by="recent")) == [b2]


def test_filter(alice, bob):
    r1 = private_room(alice)
    r2 = private_room(alice)
    invite_join(alice, bob, r1)
    a1 = send(alice, r1, "heron alpha")
    b1 = send(bob, r1, "heron beta")
    a2 = send(alice, r2, "heron gamma")
    assert set(ids(search(alice, "heron", filter={"rooms": [r1]}))) == {a1, b1}
    assert ids(search(alice, "heron", filter={"not_rooms": [r1]})) == [a2]
    assert ids(search(alice, "heron", filter={"senders": [bob.user_id]})) == [b1]
    assert set(ids(search(alice, "heron", filter={"not_senders": [bob.user_id]}))) == {a1, a2}
    assert ids(search(alice, "heron", filter={"types": ["m.room.name"]})) == []
    assert ids(search(alice, "heron", filter={"not_types": ["m.room.*"]})) == []
    assert len(ids(search(alice, "heron", filter={"types": ["m.room.mess*"]}))) == 3


def test_other_users_private_rooms_never_appear(alice, bob, server):
    carol = make_user(server)
    secret_room = private_room(bob)
    send(bob, secret_room, "kingfisher secret")
    shared = private_room(bob)
    invite_join(bob, carol, shared)
    send(bob, shared, "kingfisher shared")
    public = create_room(bob)  # public, world-readable history or not: alice never joined
    send(bob, public, "kingfisher public")
    assert search(alice, "kingfisher") == {"count": 0, "highlights": [], "results": []}
    # naming the rooms in the filter does not open them
    body = search(alice, "kingfisher", filter={"rooms": [secret_room, shared, public]})
    assert body["results"] == [] and body["count"] == 0
    assert len(ids(search(carol, "kingfisher"))) == 1
    # an invited user has not joined: nothing either
    r = bob.request("POST", f"{V3}/rooms/{secret_room}/invite", {"user_id": alice.user_id})
    assert r.status == 200
    assert ids(search(alice, "kingfisher")) == []


def test_left_rooms_follow_history_visibility(alice, bob):
    room = private_room(alice)
    set_state(alice, room, "m.room.history_visibility", {"history_visibility": "joined"})
    hidden = send(alice, room, "puffin before bob")
    invite_join(alice, bob, room)
    seen = send(alice, room, "puffin while bob is here")
    assert ids(search(bob, "puffin")) == [seen]
    assert bob.request("POST", f"{V3}/rooms/{room}/leave", {}).status == 200
    send(alice, room, "puffin after bob left")
    # the left room is still searched, up to the leave, and never before the join
    assert ids(search(bob, "puffin")) == [seen]
    assert hidden in ids(search(alice, "puffin"))
    # banned after leaving: the same
    r = alice.request("POST", f"{V3}/rooms/{room}/ban", {"user_id": bob.user_id})
    assert r.status == 200
    assert ids(search(bob, "puffin")) == [seen]


def test_encrypted_rooms_are_not_searched(alice):
    plain = private_room(alice)
    enc = private_room(alice, initial_state=[{
        "type": "m.room.encryption", "state_key": "",
        "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])  # fmt: skip
    visible = send(alice, plain, "pelican plain")
    send(alice, enc, "pelican in an encrypted room")
    r = alice.request("PUT", f"{V3}/rooms/{enc}/send/m.room.encrypted/t1",
                      {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "pelican",
                       "sender_key": "k", "session_id": "s", "device_id": "D"})  # fmt: skip
    assert r.status == 200
    assert ids(search(alice, "pelican")) == [visible]


def test_redaction_removes_from_results(alice, server):
    room = private_room(alice)
    eid = send(alice, room, "flamingo pink")
    keep = send(alice, room, "flamingo grey")
    assert set(ids(search(alice, "flamingo"))) == {eid, keep}
    r = alice.request("PUT", f"{V3}/rooms/{room}/redact/{eid}/r1", {"reason": "oops"})
    assert r.status == 200
    assert ids(search(alice, "flamingo")) == [keep]
    assert ids(search(alice, "pink")) == []
    rows = db_rows(server, "SELECT COUNT(*) FROM event_search WHERE event_search MATCH 'pink'")
    assert rows[0][0] == 0


def test_stripped_and_purged_events_leave_the_index(alice, server):
    """Erasure and retention strip contents (``strip_event_contents_in``), an admin purges a
    room: the index rows go in the same transaction."""
    store = server.hs.store
    room = private_room(alice, name="Ibis room")
    stripped = send(alice, room, "ibis stripped")
    kept = send(alice, room, "ibis kept")
    on_server(server, store.transaction(lambda conn: store.strip_event_contents_in(
        conn, [stripped])))  # fmt: skip
    assert ids(search(alice, "ibis stripped")) == []
    assert kept in ids(search(alice, "ibis"))
    other = private_room(alice)
    elsewhere = send(alice, other, "ibis elsewhere")
    assert elsewhere in ids(search(alice, "ibis"))  # (and the staged rows are in the index)
    before = db_rows(server, "SELECT COUNT(*) FROM event_search")[0][0]
    n_room = db_rows(server, "SELECT COUNT(*) FROM event_search s JOIN events e"
                     " ON e.stream_pos = s.rowid WHERE e.room_id = ?", (room,))[0][0]  # fmt: skip
    assert n_room == 2  # the name and the kept message
    on_server(server, store.transaction(lambda conn: store.purge_room_in(conn, room)))
    assert db_rows(server, "SELECT COUNT(*) FROM event_search")[0][0] == before - n_room
    assert db_rows(server, "SELECT COUNT(*) FROM event_search WHERE event_search MATCH"
                   " 'ibis'")[0][0] == 1  # fmt: skip


HOSTILE = ['"', '""', '"flamingo', "*", "flamingo*", "NEAR(a b)", "NEAR", "-flamingo", "a - b",
           "AND", "OR OR", "NOT", "{body}: x", "body:x", "^x", "(((", ")", "x + y", "'; DROP",
           "\x00", "\u202e", "🦩", "a" * 1000, "ü" * 300, "  ", "", "_", "%", "\\", "[x]"]  # fmt: skip


@pytest.mark.parametrize("term", HOSTILE)
def test_hostile_terms_never_error(alice, term):
    room = private_room(alice)
    send(alice, room, "flamingo NEAR the AND gate or OR not NOT")
    body = search(alice, term)
    assert isinstance(body["results"], list)
    search(alice, term, order_by="recent", keys=["content.name"])


def test_operator_words_are_words(alice):
    room = private_room(alice)
    eid = send(alice, room, "meet me NEAR the AND gate")
    send(alice, room, "something else")
    assert ids(search(alice, "near AND")) == [eid]
    assert ids(search(alice, '"near" -gate*')) == [eid]


def test_junk_bodies_are_refused(alice):
    bad = [
        None, [], "x", {}, {"search_categories": []}, {"search_categories": {"room_events": 1}},
        {"search_categories": {"room_events": {}}},
        {"search_categories": {"room_events": {"search_term": 5}}},
        {"search_categories": {"room_events": {"search_term": "x", "keys": "content.body"}}},
        {"search_categories": {"room_events": {"search_term": "x", "keys": ["content.url"]}}},
        {"search_categories": {"room_events": {"search_term": "x", "order_by": "best"}}},
        {"search_categories": {"room_events": {"search_term": "x", "filter": []}}},
        {"search_categories": {"room_events": {"search_term": "x", "filter": {"limit": "1"}}}},
        {"search_categories": {"room_events": {"search_term": "x", "filter": {"limit": 0}}}},
        {"search_categories": {"room_events": {"search_term": "x", "filter": {"rooms": "!a"}}}},
        {"search_categories": {"room_events": {"search_term": "x", "event_context": 3}}},
        {"search_categories": {"room_events": {"search_term": "x",
                                               "event_context": {"before_limit": "5"}}}},
        {"search_categories": {"room_events": {"search_term": "x",
                                               "event_context": {"include_profile": 1}}}},
        {"search_categories": {"room_events": {"search_term": "x", "include_state": "yes"}}},
        {"search_categories": {"room_events": {"search_term": "x", "groupings": []}}},
        {"search_categories": {"room_events": {"search_term": "x",
                                               "groupings": {"group_by": [{"key": "type"}]}}}},
        {"search_categories": {"room_events": {"search_term": "x",
                                               "groupings": {"group_by": ["room_id"]}}}},
        {"search_categories": {"room_events": {"search_term": "x" * 1001}}},
    ]  # fmt: skip
    for body in bad:
        r = alice.request("POST", SEARCH, body)
        assert r.status == 400, (body, r.status, r.body)
        assert r.body["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM", "M_NOT_JSON"), r.body
    # no room_events asked: an empty result
    r = alice.request("POST", SEARCH, {"search_categories": {}})
    assert r.status == 200 and r.body == {"search_categories": {}}


def test_limits_are_clamped(alice):
    room = private_room(alice)
    for i in range(3):
        send(alice, room, f"gannet {i}")
    body = search(alice, "gannet", filter={"limit": 10**12},
                  event_context={"before_limit": 10**9, "after_limit": -5})  # fmt: skip
    assert len(body["results"]) == 3
    assert all(x["context"]["events_after"] == [] for x in body["results"])


def test_requires_authentication(client):
    r = client.request("POST", SEARCH, {"search_categories": {}})
    assert_error(r, 401, "M_MISSING_TOKEN")
