"""Relations and threads over HTTP (C-S API "Relationships", "Threading"): a thread with
replies, reactions with the relation type and event type filters, pagination both ways,
recursion, visibility, redaction, bad parameters, and bundled aggregations where events are
served (/sync included)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support.accounts import call_on_server, db_rows, make_user
from tests.support.guard import exempt

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"


def create(c, **body):
    r = c.request("POST", V3 + "/createRoom", body)
    assert r.status == 200, r.body
    return r.body["room_id"]


def send(c, room_id, content, etype="m.room.message"):
    r = c.request("PUT", f"{V3}/rooms/{room_id}/send/{etype}/{uuid.uuid4().hex}", content)
    assert r.status == 200, r.body
    return r.body["event_id"]


def text(body):
    return {"msgtype": "m.text", "body": body}


def reply(root, body):
    return {**text(body), "m.relates_to": {"rel_type": "m.thread", "event_id": root}}


def react(target, key):
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}


def rels(c, room_id, *parts, **query):
    path = "/".join([f"{V1}/rooms/{room_id}/relations", *parts])
    return c.request("GET", path, query=query or None)


def ids(r):
    assert r.status == 200, r.body
    return [e["event_id"] for e in r.body["chunk"]]


@pytest.fixture
def alice(client):
    return client.register()


@pytest.fixture
def bob(client):
    return client.register()


@pytest.fixture
def room(alice, bob):
    room_id = create(alice, preset="private_chat", invite=[bob.user_id])
    assert bob.request("POST", f"{V3}/rooms/{room_id}/join", {}).status == 200
    return room_id


def test_thread_replies_and_reactions_with_filters(alice, bob, room):
    root = send(alice, room, text("root"))
    r1 = send(bob, room, reply(root, "one"))
    r2 = send(alice, room, reply(root, "two"))
    like = send(bob, room, react(root, "👍"), "m.reaction")
    send(alice, room, text("unrelated"))
    # all relations, newest first (dir=b is the default)
    r = rels(bob, room, root)
    assert ids(r) == [like, r2, r1]
    assert "next_batch" not in r.body and "recursion_depth" not in r.body
    assert r.body["chunk"][0]["content"]["m.relates_to"]["key"] == "👍"
    assert r.body["chunk"][0]["room_id"] == room and "unsigned" in r.body["chunk"][0]
    # by relation type, then by relation type and event type
    assert ids(rels(bob, room, root, "m.thread")) == [r2, r1]
    assert ids(rels(bob, room, root, "m.annotation")) == [like]
    assert ids(rels(bob, room, root, "m.annotation", "m.reaction")) == [like]
    assert ids(rels(bob, room, root, "m.annotation", "m.room.message")) == []
    assert ids(rels(bob, room, root, "m.replace")) == []
    # an event without relations has none; forwards lists the oldest first
    assert ids(rels(alice, room, r1)) == []
    assert ids(rels(alice, room, root, dir="f")) == [r1, r2, like]
    # threads: the root, with the newest activity first
    other = send(bob, room, text("other root"))
    send(bob, room, reply(other, "latest"))
    r = alice.request("GET", f"{V1}/rooms/{room}/threads")
    assert ids(r) == [other, root]
    r = alice.request("GET", f"{V1}/rooms/{room}/threads", query={"include": "participated"})
    assert ids(r) == [root]  # alice started `root` and replied in it, never in `other`
    r = alice.request("GET", f"{V1}/rooms/{room}/threads", query={"limit": "1"})
    assert ids(r) == [other]
    r = alice.request(
        "GET", f"{V1}/rooms/{room}/threads", query={"limit": "1", "from": r.body["next_batch"]}
    )
    assert ids(r) == [root]


def test_pagination_both_directions(alice, room):
    root = send(alice, room, text("root"))
    replies = [send(alice, room, reply(root, str(i))) for i in range(7)]
    seen: list[str] = []
    query = {"limit": "3"}
    for _ in range(5):
        r = rels(alice, room, root, "m.thread", **query)
        seen += ids(r)
        if "next_batch" not in r.body:
            break
        assert r.body["next_batch"]
        query = {"limit": "3", "from": r.body["next_batch"]}
    assert seen == replies[::-1]
    seen = []
    query = {"limit": "2", "dir": "f"}
    for _ in range(6):
        r = rels(alice, room, root, **query)
        seen += ids(r)
        if "next_batch" not in r.body:
            break
        query = {"limit": "2", "dir": "f", "from": r.body["next_batch"]}
    assert seen == replies
    # `to` bounds the page; a /messages token works as `from`
    r = rels(alice, room, root, limit="2")
    first = ids(r)
    assert first == replies[:-3:-1]
    r = rels(alice, room, root, **{"from": r.body["next_batch"], "to": r.body["next_batch"]})
    assert ids(r) == []
    m = alice.request("GET", f"{V3}/rooms/{room}/messages", query={"dir": "b", "limit": "1"})
    assert ids(rels(alice, room, root, **{"from": m.body["start"], "limit": "1"})) == replies[-1:]
    # the limit is clamped, never an error
    assert len(ids(rels(alice, room, root, limit="100000000"))) == 7
    assert len(ids(rels(alice, room, root, limit="0"))) == 1


def test_recurse_follows_relations_of_relations(alice, room):
    root = send(alice, room, text("root"))
    in_thread = send(alice, room, reply(root, "in thread"))
    edit = send(alice, room, {
        **text("* edited"), "m.new_content": text("edited"),
        "m.relates_to": {"rel_type": "m.replace", "event_id": in_thread},
    }, )  # fmt: skip
    like = send(alice, room, react(edit, "x"), "m.reaction")
    deep = send(alice, room, react(like, "y"), "m.reaction")  # a 4th level: beyond the bound
    assert ids(rels(alice, room, root)) == [in_thread]
    r = rels(alice, room, root, recurse="true")
    assert ids(r) == [like, edit, in_thread]
    assert r.body["recursion_depth"] == 3 and deep not in ids(r)
    r = rels(alice, room, root, "m.annotation", recurse="true")
    assert ids(r) == [like]
    r = rels(alice, room, root, recurse="false")
    assert ids(r) == [in_thread] and r.body["recursion_depth"] == 1


def test_outsiders_get_404_and_see_nothing(alice, bob, client):
    room = create(alice, preset="private_chat")
    root = send(alice, room, text("secret"))
    send(alice, room, reply(root, "more secret"))
    for path in (root, f"{root}/m.thread", f"{root}/m.thread/m.room.message"):
        r = bob.request("GET", f"{V1}/rooms/{room}/relations/{path}")
        assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND", r.body
    r = bob.request("GET", f"{V1}/rooms/{room}/threads")
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    # unknown events and events of another room: 404 too
    other = create(alice)
    r = alice.request("GET", f"{V1}/rooms/{other}/relations/{root}")
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = alice.request("GET", f"{V1}/rooms/{room}/relations/$nope")
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    # no access token: 401
    r = client.request("GET", f"{V1}/rooms/{room}/relations/{root}")
    assert r.status == 401


def test_history_visibility_limits_the_children(alice, bob):
    room = create(alice, preset="private_chat", invite=[bob.user_id])
    state = {"history_visibility": "joined"}
    r = alice.request("PUT", f"{V3}/rooms/{room}/state/m.room.history_visibility/", state)
    assert r.status == 200, r.body
    root = send(alice, room, text("root"))
    before = send(alice, room, reply(root, "before bob joined"))
    assert bob.request("POST", f"{V3}/rooms/{room}/join", {}).status == 200
    after = send(alice, room, reply(root, "after bob joined"))
    assert ids(rels(alice, room, root)) == [after, before]
    # bob may not see the root itself (sent before he joined, visibility `joined`)
    r = rels(bob, room, root)
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    mine = send(bob, room, text("bob's root"))
    send(alice, room, reply(mine, "a reply"))
    assert len(ids(rels(bob, room, mine))) == 1
    assert ids(bob.request("GET", f"{V1}/rooms/{room}/threads")) == [mine]
    assert ids(alice.request("GET", f"{V1}/rooms/{room}/threads")) == [mine, root]


def test_redacting_a_reply_removes_it(alice, bob, room, server):
    root = send(alice, room, text("root"))
    keep = send(bob, room, reply(root, "kept"))
    gone = send(bob, room, reply(root, "redacted"))
    like = send(bob, room, react(root, "secret key"), "m.reaction")
    for target in (gone, like):
        r = bob.request("PUT", f"{V3}/rooms/{room}/redact/{target}/{uuid.uuid4().hex}", {})
        assert r.status == 200, r.body
    assert ids(rels(alice, room, root)) == [keep]
    rows = server.hs.store.db.read(
        "SELECT event_id, aggregation_key FROM event_relations WHERE relates_to_id = ?", (root,)
    )
    assert [tuple(r) for r in rows] == [(keep, None)]


@pytest.mark.parametrize(
    "query",
    [
        {"dir": "x"}, {"dir": ""}, {"limit": "ten"}, {"limit": "9" * 5000}, {"from": "junk"},
        {"to": "s1"}, {"from": "s" + "9" * 40 + "_0"}, {"recurse": "yes"}, {"recurse": ""},
    ],
)  # fmt: skip
def test_junk_parameters_give_matrix_errors(alice, room, query):
    root = send(alice, room, text("root"))
    r = rels(alice, room, root, **query)
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM", r.body


@pytest.mark.parametrize(
    "query", [{"include": "mine"}, {"limit": "x"}, {"from": "$event"}, {"include": ""}]
)
def test_junk_thread_parameters_give_matrix_errors(alice, room, query):
    r = alice.request("GET", f"{V1}/rooms/{room}/threads", query=query)
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM", r.body


def test_bad_room_ids_and_encoded_segments(alice, room):
    root = send(alice, room, text("root"))
    r = alice.request("GET", f"{V1}/rooms/not-a-room/relations/{root}")
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    r = alice.request("GET", f"{V1}/rooms/{room}/relations/{root}/m.thread%2F..%2Fx/a%2Fb")
    assert ids(r) == []


def edit(target, body):
    return {
        **text(f"* {body}"), "m.new_content": text(body),
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    }  # fmt: skip


def relations_of(served):
    return served.get("unsigned", {}).get("m.relations")


def test_bundled_aggregations(alice, bob, room):
    root = send(alice, room, text("root"))
    send(bob, room, reply(root, "one"))
    last = send(bob, room, reply(root, "two"))
    first_edit = send(alice, room, edit(root, "root, edited"))
    latest_edit = send(alice, room, edit(root, "root, edited again"))
    send(bob, room, edit(root, "not bob's to edit"))  # another sender: not a valid edit
    send(alice, room, {**edit(root, "no new content"), "m.new_content": "x"})  # invalid
    ref = send(bob, room, {**text("see"), "m.relates_to": {
        "rel_type": "m.reference", "event_id": root}})  # fmt: skip
    plain = send(alice, room, text("plain"))

    def check(served, user):
        bundle = relations_of(served)
        assert served["content"]["body"] == "root"  # the content is never replaced
        assert bundle["m.thread"]["count"] == 2
        assert bundle["m.thread"]["latest_event"]["event_id"] == last
        assert bundle["m.thread"]["latest_event"]["content"]["body"] == "two"
        assert bundle["m.thread"]["current_user_participated"] is (user is not None)
        assert bundle["m.replace"]["event_id"] == latest_edit != first_edit
        assert bundle["m.replace"]["content"]["m.new_content"]["body"] == "root, edited again"
        assert bundle["m.reference"] == {"chunk": [{"event_id": ref}]}

    # /event, /messages, /context, /threads
    check(alice.request("GET", f"{V3}/rooms/{room}/event/{root}").body, alice)
    check(bob.request("GET", f"{V3}/rooms/{room}/event/{root}").body, bob)
    r = alice.request("GET", f"{V3}/rooms/{room}/messages", query={"dir": "b", "limit": "50"})
    by_id = {e["event_id"]: e for e in r.body["chunk"]}
    check(by_id[root], alice)
    assert relations_of(by_id[plain]) is None
    r = alice.request("GET", f"{V3}/rooms/{room}/context/{root}", query={"limit": "4"})
    check(r.body["event"], alice)
    assert r.body["events_after"] and all(relations_of(e) is None for e in r.body["events_after"])
    check(alice.request("GET", f"{V1}/rooms/{room}/threads").body["chunk"][0], alice)
    # a third member who never replied did not participate
    carol = bob.register()
    assert (
        alice.request("POST", f"{V3}/rooms/{room}/invite", {"user_id": carol.user_id}).status == 200
    )
    assert carol.request("POST", f"{V3}/rooms/{room}/join", {}).status == 200
    served = carol.request("GET", f"{V3}/rooms/{room}/event/{root}").body
    assert relations_of(served)["m.thread"]["current_user_participated"] is False
    # /relations bundles too: an edited reply in a thread
    reply_edit = send(bob, room, edit(last, "two, edited"))
    r = rels(alice, room, root, "m.thread")
    assert relations_of(r.body["chunk"][0])["m.replace"]["event_id"] == reply_edit
    # ... and the thread's latest event carries its own bundle
    served = alice.request("GET", f"{V3}/rooms/{room}/event/{root}").body
    latest = relations_of(served)["m.thread"]["latest_event"]
    assert latest["event_id"] == last
    assert relations_of(latest)["m.replace"]["event_id"] == reply_edit
    # a redacted event has no bundle
    r = alice.request("PUT", f"{V3}/rooms/{room}/redact/{root}/{uuid.uuid4().hex}", {})
    assert r.status == 200, r.body
    assert relations_of(alice.request("GET", f"{V3}/rooms/{room}/event/{root}").body) is None


def test_purging_a_room_removes_its_relations(alice, room, server):
    root = send(alice, room, text("root"))
    send(alice, room, react(root, "words of the room"), "m.reaction")
    count = "SELECT COUNT(*) FROM event_relations WHERE room_id = ?"
    assert db_rows(server, count, (room,))[0][0] == 1
    admin = make_user(server, "admin", admin=True)
    r = admin.request("DELETE", f"/_synapse/admin/v1/rooms/{room}", {"purge": True})
    assert r.status == 200, r.body
    assert db_rows(server, count, (room,))[0][0] == 0


def test_a_thread_cannot_start_from_an_event_with_a_relation(alice, room):
    root = send(alice, room, text("root"))
    in_thread = send(alice, room, reply(root, "in thread"))
    like = send(alice, room, react(root, "x"), "m.reaction")
    for parent in (in_thread, like):
        r = alice.request(
            "PUT", f"{V3}/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
            reply(parent, "a thread off a relation"),
        )  # fmt: skip
        assert r.status == 400 and r.body["errcode"] == "M_UNKNOWN", r.body
    # a plain reply (m.in_reply_to only) and an unknown event may be thread roots
    plain = send(alice, room, {**text("re"), "m.relates_to": {"m.in_reply_to": {"event_id": root}}})
    send(alice, room, reply(plain, "ok"))
    send(alice, room, reply("$not-here-yet", "ok"))
    assert ids(rels(alice, room, root, "m.thread")) == [in_thread]


def sync(c, since=None, **query):
    q = {"timeout": "0", **query}
    if since:
        q["since"] = since
    r = c.request("GET", V3 + "/sync", query=q)
    assert r.status == 200, r.body
    return r.body


def sync_timeline(body, room_id, section="join"):
    """The timeline events of ``room_id`` in a /sync response, by event ID (in order)."""
    return {e["event_id"]: e for e in body["rooms"][section][room_id]["timeline"]["events"]}


WIDE = json.dumps({"room": {"timeline": {"limit": 50}}})


def test_sync_bundles_aggregations(alice, bob, room, server):
    """/sync timelines carry the bundles of their events ("Aggregations of child events"):
    initial and incremental, for every member, with the replacement event itself still in the
    timeline ("Event replacements": the server does not hide it) and the original's content
    untouched."""
    exempt(server, alice)
    exempt(server, bob)
    first = sync(bob, filter=WIDE)
    root = send(alice, room, text("root"))
    one = send(bob, room, reply(root, "one"))
    edit1 = send(alice, room, edit(root, "root, edited"))
    ref = send(bob, room, {**text("see"), "m.relates_to": {
        "rel_type": "m.reference", "event_id": root}})  # fmt: skip
    plain = send(alice, room, text("plain"))

    def check(served, user, count, latest, replacement):
        assert served["content"]["body"] == "root"
        bundle = relations_of(served)
        assert bundle["m.thread"]["count"] == count
        assert bundle["m.thread"]["latest_event"]["event_id"] == latest
        assert "room_id" not in bundle["m.thread"]["latest_event"]  # as /sync serves events
        assert bundle["m.thread"]["current_user_participated"] is True  # bob replied, alice sent
        assert bundle["m.replace"]["event_id"] == replacement
        assert bundle["m.reference"] == {"chunk": [{"event_id": ref}]}

    # incremental: the root and its children in one batch
    for user, since in ((bob, first["next_batch"]), (alice, None)):
        events = sync_timeline(sync(user, since, filter=WIDE), room)
        check(events[root], user, 1, one, edit1)
        assert relations_of(events[plain]) is None
        assert events[edit1]["content"]["m.new_content"]["body"] == "root, edited"
        assert relations_of(events[one]) is None and relations_of(events[edit1]) is None

    # a later sync serves the new children, not the root again; a new initial sync has it all
    mark = sync(bob, filter=WIDE)["next_batch"]
    two = send(alice, room, reply(root, "two"))
    edit2 = send(alice, room, edit(root, "root, edited again"))
    events = sync_timeline(sync(bob, mark, filter=WIDE), room)
    assert list(events) == [two, edit2]
    check(sync_timeline(sync(bob, filter=WIDE), room)[root], bob, 2, two, edit2)

    # a redacted child drops out of the bundle; a redacted parent has none
    for eid in (two, edit2):
        r = alice.request("PUT", f"{V3}/rooms/{room}/redact/{eid}/{uuid.uuid4().hex}", {})
        assert r.status == 200, r.body
    check(sync_timeline(sync(bob, filter=WIDE), room)[root], bob, 1, one, edit1)
    r = alice.request("PUT", f"{V3}/rooms/{room}/redact/{root}/{uuid.uuid4().hex}", {})
    assert r.status == 200, r.body
    assert relations_of(sync_timeline(sync(bob, filter=WIDE), room)[root]) is None


def test_sync_bundles_follow_the_filter_and_the_read_cap(alice, bob, room, server):
    """The filter's ``event_fields`` apply to the bundle like any other field, the federation
    ``event_format`` gets it too (the stored event untouched), and a room the user left
    bundles only the children they could see: those before their leave."""
    exempt(server, alice)
    root = send(alice, room, text("root"))
    edit1 = send(alice, room, edit(root, "root, edited"))

    def served_root(flt, user=bob, section="join"):
        return sync_timeline(sync(user, filter=json.dumps(flt)), room, section)[root]

    fields = {"event_fields": ["event_id", "content.body"], **json.loads(WIDE)}
    assert served_root(fields) == {"event_id": root, "content": {"body": "root"}}
    fields["event_fields"].append(r"unsigned.m\.relations")  # (a dot in a key: escaped)
    assert served_root(fields)["unsigned"]["m.relations"]["m.replace"]["event_id"] == edit1
    flt = json.dumps({"event_format": "federation", **json.loads(WIDE)})
    pdus = sync(bob, filter=flt)["rooms"]["join"][room]["timeline"]["events"]
    (fed,) = [e for e in pdus if e["content"].get("body") == "root"]  # (PDUs: no event_id)
    replacement = fed["unsigned"]["m.relations"]["m.replace"]
    assert replacement["room_id"] == room and "auth_events" in replacement  # a PDU too
    assert replacement["content"]["m.relates_to"]["event_id"] == root
    stored = call_on_server(server, server.hs.store.get_event_rows_cached, [root])[root]
    assert "m.relations" not in stored.event.get("unsigned", {})

    assert bob.request("POST", f"{V3}/rooms/{room}/leave", {}).status == 200
    send(alice, room, edit(root, "edited after bob left"))
    send(alice, room, reply(root, "a reply after bob left"))
    left = served_root({"room": {"include_leave": True, "timeline": {"limit": 50}}}, bob, "leave")
    assert relations_of(left) == {"m.replace": relations_of(left)["m.replace"]}
    assert relations_of(left)["m.replace"]["event_id"] == edit1
    now = sync_timeline(sync(alice, filter=WIDE), room)[root]
    assert relations_of(now)["m.thread"]["count"] == 1
    assert relations_of(now)["m.replace"]["content"]["m.new_content"]["body"] == (
        "edited after bob left"
    )
