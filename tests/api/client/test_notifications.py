"""Notifications over HTTP (C-S API "Push Notifications", "Receiving notifications",
"Threading"): push rules evaluated on every event for every local member, the unread counts in
/sync, read receipts clearing them (thread-aware), and ``GET /notifications``."""

from __future__ import annotations

import json
import time
import uuid

from tests.support.accounts import assert_error, make_user
from tests.support.rooms import V3, create_room, join, send, sync

THREADS = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})


def counts(c, room_id: str, **query) -> dict:
    room = sync(c, **query)["rooms"]["join"][room_id]
    return room


def unread(c, room_id: str) -> tuple[int, int]:
    u = counts(c, room_id)["unread_notifications"]
    return u["notification_count"], u["highlight_count"]


def receipt(c, room_id: str, event_id: str, rtype: str = "m.read", **body) -> None:
    r = c.request("POST", f"{V3}/rooms/{room_id}/receipt/{rtype}/{event_id}", body)
    assert r.status == 200, r.body


def test_counts_in_sync_and_cleared_by_receipt(server):
    alice, bob, carol = make_user(server), make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    join(carol, room)
    assert unread(bob, room) == (0, 0)
    send(alice, room, "one")
    send(alice, room, "hey", **{"m.mentions": {"user_ids": [bob.user_id]}})
    last = send(alice, room, "three")
    assert unread(bob, room) == (3, 1)
    assert unread(carol, room) == (3, 0)
    assert unread(alice, room) == (0, 0)  # never for the sender's own events
    # notices are suppressed by default
    send(alice, room, "beep", msgtype="m.notice")
    assert unread(carol, room) == (3, 0)
    # a private read receipt clears bob's counts (only bob's)
    receipt(bob, room, last, "m.read.private")
    assert unread(bob, room) == (0, 0)
    assert unread(carol, room) == (3, 0)
    after = send(alice, room, "four")
    assert unread(bob, room) == (1, 0)
    receipt(carol, room, after)
    assert unread(carol, room) == (0, 0)


def test_receipt_on_an_earlier_event_clears_only_up_to_it(server):
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    first = send(alice, room, "a")
    send(alice, room, "b")
    assert unread(bob, room) == (2, 0)
    receipt(bob, room, first)
    assert unread(bob, room) == (1, 0)


def test_one_to_one_and_encrypted_rooms(server):
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice, preset="private_chat", invite=[bob.user_id])
    join(bob, room)
    send(alice, room, "see you at lunch tomorrow")
    r = alice.request("PUT", f"{V3}/rooms/{room}/send/m.room.encrypted/{uuid.uuid4().hex}",
                      {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x",
                       "session_id": "s", "device_id": "D", "sender_key": "k"})  # fmt: skip
    assert r.status == 200, r.body
    # the two events of a two-member room (the invite, .m.rule.invite_for_me, is read: bob
    # sent his join after it)
    assert unread(bob, room) == (2, 0)
    notes = bob.request("GET", f"{V3}/notifications").body["notifications"]
    assert [(n["event"]["type"], n["read"]) for n in notes] == [
        ("m.room.encrypted", False), ("m.room.message", False), ("m.room.member", True)]  # fmt: skip
    sound = {"set_tweak": "sound", "value": "default"}
    assert notes[0]["actions"] == ["notify", sound]  # .m.rule.encrypted_room_one_to_one
    assert notes[1]["actions"] == ["notify", sound]  # .m.rule.room_one_to_one


def test_push_rule_changes_apply_to_the_next_event(server):
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    send(alice, room, "before")
    assert unread(bob, room) == (1, 0)
    # bob mutes the room (a room rule with no actions)
    r = bob.request("PUT", f"{V3}/pushrules/global/room/{room}", {"actions": []})
    assert r.status == 200, r.body
    send(alice, room, "muted")
    assert unread(bob, room) == (1, 0)
    # a content rule with a highlight, above the room rule
    r = bob.request("PUT", f"{V3}/pushrules/global/content/cake",
                    {"pattern": "cake", "actions": ["notify", {"set_tweak": "highlight"}]})  # fmt: skip
    assert r.status == 200
    send(alice, room, "I baked a CAKE today")
    assert unread(bob, room) == (2, 1)
    # the master rule silences everything
    r = bob.request("PUT", f"{V3}/pushrules/global/override/.m.rule.master/enabled",
                    {"enabled": True})  # fmt: skip
    assert r.status == 200
    send(alice, room, "cake again")
    assert unread(bob, room) == (2, 1)


def test_room_mention_needs_the_senders_power(server):
    alice, bob, carol = make_user(server), make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    join(carol, room)
    send(bob, room, "@room hi", **{"m.mentions": {"room": True}})  # bob has power 0 < 50
    assert unread(carol, room) == (1, 0)
    send(alice, room, "@room hi", **{"m.mentions": {"room": True}})  # alice created the room
    assert unread(carol, room) == (2, 1)


def test_thread_counts_and_thread_receipts(server):
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    root = send(alice, room, "root")
    rel = {"rel_type": "m.thread", "event_id": root}
    send(alice, room, "in thread", **{"m.relates_to": rel})
    in_thread = send(alice, room, "in thread 2", **{"m.relates_to": rel})
    # without the filter flag: one count for the whole room
    assert unread(bob, room) == (3, 0)
    room_out = counts(bob, room, filter=THREADS)
    assert room_out["unread_notifications"] == {"notification_count": 1, "highlight_count": 0}
    assert room_out["unread_thread_notifications"] == {
        root: {"notification_count": 2, "highlight_count": 0}
    }
    # a receipt in the thread clears the thread only
    receipt(bob, room, in_thread, thread_id=root)
    room_out = counts(bob, room, filter=THREADS)
    assert room_out["unread_notifications"]["notification_count"] == 1
    assert "unread_thread_notifications" not in room_out
    # a receipt on the main timeline clears the main timeline
    receipt(bob, room, root, thread_id="main")
    assert unread(bob, room) == (0, 0)


def test_unthreaded_receipt_clears_every_thread(server):
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    root = send(alice, room, "root")
    last = send(alice, room, "reply", **{"m.relates_to": {"rel_type": "m.thread",
                                                          "event_id": root}})  # fmt: skip
    assert unread(bob, room) == (2, 0)
    receipt(bob, room, last)
    assert unread(bob, room) == (0, 0)


def test_incremental_sync_carries_new_counts(server):
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    since = sync(bob)["next_batch"]
    send(alice, room, "hello", **{"m.mentions": {"user_ids": [bob.user_id]}})
    resp = sync(bob, since=since, timeout=5000)
    assert resp["rooms"]["join"][room]["unread_notifications"] == {
        "notification_count": 1, "highlight_count": 1,
    }  # fmt: skip


def test_invite_for_me_counts_for_the_invitee(server):
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice, preset="private_chat")
    r = alice.request("POST", f"{V3}/rooms/{room}/invite", {"user_id": bob.user_id})
    assert r.status == 200, r.body
    r = bob.request("GET", f"{V3}/notifications")
    assert r.status == 200, r.body
    [note] = r.body["notifications"]
    assert note["room_id"] == room and note["event"]["type"] == "m.room.member"
    assert note["event"]["state_key"] == bob.user_id


def test_bad_thread_id_is_refused(server):
    """C-S API "Receipts": ``thread_id`` is ``main`` or a thread root's event ID, the event
    related to it ("Threaded read receipts"), never with ``m.fully_read``; else 400
    ``M_INVALID_PARAM``."""
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    eid = send(alice, room, "x")
    root = send(alice, room, "root")
    reply = send(alice, room, "reply", **{"m.relates_to": {"rel_type": "m.thread",
                                                           "event_id": root}})  # fmt: skip

    def post(event_id, thread_id, rtype="m.read"):
        return bob.request("POST", f"{V3}/rooms/{room}/receipt/{rtype}/{event_id}",
                           {"thread_id": thread_id})  # fmt: skip

    for bad in (5, "", ["main"], {}, "Main", "thread", "$", "$" + "x" * 300, "$a\x00"):
        assert_error(post(eid, bad), 400, "M_INVALID_PARAM")
    assert_error(post(reply, "main"), 400, "M_INVALID_PARAM")  # in the thread, not main
    assert_error(post(eid, root), 400, "M_INVALID_PARAM")  # main timeline, not the thread
    assert_error(post(reply, eid), 400, "M_INVALID_PARAM")  # another (no) thread
    assert_error(post(root, root, "m.fully_read"), 400, "M_INVALID_PARAM")
    # a reaction to a plain message does not make that message a thread
    reaction = react(alice, room, eid)
    assert_error(post(reaction, eid), 400, "M_INVALID_PARAM")
    # accepted: main for the main timeline (the root is in it), the thread for its replies
    for event_id, thread_id in ((eid, "main"), (root, "main"), (reply, root)):
        r = post(event_id, thread_id)
        assert r.status == 200, (event_id, thread_id, r.body)
    # the receipts as others see them
    r = sync(alice)["rooms"]["join"][room]["ephemeral"]["events"]
    [receipts] = [e["content"] for e in r if e["type"] == "m.receipt"]
    assert receipts[reply]["m.read"][bob.user_id]["thread_id"] == root
    assert receipts[root]["m.read"][bob.user_id]["thread_id"] == "main"
    # and the thread for the root itself (clients showing the root atop the thread name it so)
    r = post(root, root)
    assert r.status == 200, r.body


def react(c, room_id: str, event_id: str, key: str = "👍") -> str:
    r = c.request("PUT", f"{V3}/rooms/{room_id}/send/m.reaction/{uuid.uuid4().hex}",
                  {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id,
                                    "key": key}})  # fmt: skip
    assert r.status == 200, r.body
    return r.body["event_id"]


def test_events_related_to_thread_events_are_in_the_thread(server):
    """C-S API "Marking notifications as read": an event is in a thread when, following its
    relations (up to 3 hops), an event it relates to has an ``m.thread`` relation; its
    notification counts there, and a threaded receipt on it names that thread."""
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    root = send(alice, room, "root")
    reply = send(alice, room, "reply", **{"m.relates_to": {"rel_type": "m.thread",
                                                           "event_id": root}})  # fmt: skip
    # a message referring to the reply notifies (.m.rule.message), in the thread
    ref = send(alice, room, "about that", **{"m.relates_to": {"rel_type": "m.reference",
                                                               "event_id": reply}})  # fmt: skip
    # one referring to the root is in the main timeline, as the root is
    send(alice, room, "about the root", **{"m.relates_to": {"rel_type": "m.reference",
                                                             "event_id": root}})  # fmt: skip
    room_out = counts(bob, room, filter=THREADS)
    assert room_out["unread_notifications"]["notification_count"] == 2
    assert room_out["unread_thread_notifications"] == {
        root: {"notification_count": 2, "highlight_count": 0}
    }
    # a reaction to the reference: three hops from the root; a threaded receipt on it
    reaction = react(alice, room, ref)
    receipt(bob, room, reaction, thread_id=root)
    room_out = counts(bob, room, filter=THREADS)
    assert room_out["unread_notifications"]["notification_count"] == 2
    assert "unread_thread_notifications" not in room_out
    # a reaction to that reaction is four hops away: the main timeline
    far = react(alice, room, reaction, "x")
    assert_error(bob.request("POST", f"{V3}/rooms/{room}/receipt/m.read/{far}",
                             {"thread_id": root}), 400, "M_INVALID_PARAM")  # fmt: skip
    receipt(bob, room, far, thread_id="main")
    assert unread(bob, room) == (0, 0)


def test_sending_an_event_marks_notifications_read(server):
    """C-S API "Marking notifications as read": "When the user updates their read receipt
    (either by using the API or by sending an event)": a user's own event reads what came
    before it, in its thread."""
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    root = send(alice, room, "root")
    thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
    send(alice, room, "in the thread", **thread)
    send(alice, room, "main", **{"m.mentions": {"user_ids": [bob.user_id]}})
    room_out = counts(bob, room, filter=THREADS)
    assert room_out["unread_notifications"] == {"notification_count": 2, "highlight_count": 1}
    # bob answers in the thread: the thread is read, the main timeline is not
    send(bob, room, "my answer", **thread)
    room_out = counts(bob, room, filter=THREADS)
    assert room_out["unread_notifications"] == {"notification_count": 2, "highlight_count": 1}
    assert "unread_thread_notifications" not in room_out
    # a reaction in the main timeline reads it
    react(bob, room, root)
    assert unread(bob, room) == (0, 0)
    # what comes after counts again; alice's message in the main timeline leaves bob's answer
    # unread in her thread
    send(alice, room, "again")
    assert unread(bob, room) == (1, 0)
    room_out = counts(alice, room, filter=THREADS)
    assert room_out["unread_notifications"]["notification_count"] == 0
    assert room_out["unread_thread_notifications"][root]["notification_count"] == 1
    # a state event is sending too (bob's display name)
    r = bob.request("PUT", f"{V3}/rooms/{room}/state/m.room.member/{bob.user_id}",
                    {"membership": "join", "displayname": "Bob"})  # fmt: skip
    assert r.status == 200, r.body
    assert unread(bob, room) == (0, 0)


def test_private_receipt_reads_a_thread(server):
    """C-S API "Private read receipts": ``m.read.private`` clears counts as ``m.read`` does,
    threaded too; other users never see it."""
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    root = send(alice, room, "root")
    reply = send(alice, room, "reply", **{"m.relates_to": {"rel_type": "m.thread",
                                                           "event_id": root}})  # fmt: skip
    receipt(bob, room, reply, "m.read.private", thread_id=root)
    room_out = counts(bob, room, filter=THREADS)
    assert room_out["unread_notifications"] == {"notification_count": 1, "highlight_count": 0}
    assert "unread_thread_notifications" not in room_out
    receipt(bob, room, root, "m.read.private", thread_id="main")
    assert unread(bob, room) == (0, 0)
    events = sync(alice)["rooms"]["join"][room].get("ephemeral", {}).get("events", [])
    assert not [e for e in events if e["type"] == "m.receipt"]


def test_list_notifications_pages_and_filters(server):
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    ids = []
    for i in range(5):
        mention = {"m.mentions": {"user_ids": [bob.user_id]}} if i % 2 == 0 else {}
        ids.append(send(alice, room, f"message number {i}", **mention))
    r = bob.request("GET", f"{V3}/notifications", query={"limit": "2"})
    assert r.status == 200, r.body
    page = r.body["notifications"]
    assert [n["event"]["event_id"] for n in page] == [ids[4], ids[3]]
    assert page[0]["room_id"] == room and page[0]["read"] is False
    assert isinstance(page[0]["ts"], int)
    assert {"set_tweak": "highlight"} in page[0]["actions"]
    r = bob.request("GET", f"{V3}/notifications",
                    query={"limit": "2", "from": r.body["next_token"]})  # fmt: skip
    assert [n["event"]["event_id"] for n in r.body["notifications"]] == [ids[2], ids[1]]
    r = bob.request("GET", f"{V3}/notifications",
                    query={"limit": "2", "from": r.body["next_token"]})  # fmt: skip
    assert [n["event"]["event_id"] for n in r.body["notifications"]] == [ids[0]]
    assert "next_token" not in r.body
    r = bob.request("GET", f"{V3}/notifications", query={"only": "highlight"})
    assert [n["event"]["event_id"] for n in r.body["notifications"]] == [ids[4], ids[2], ids[0]]
    # read after a receipt; alice has none of her own
    receipt(bob, room, ids[4])
    r = bob.request("GET", f"{V3}/notifications")
    assert all(n["read"] for n in r.body["notifications"])
    assert alice.request("GET", f"{V3}/notifications").body == {"notifications": []}


def test_list_notifications_hostile_input(server):
    bob = make_user(server)
    for q in ({"from": "abc"}, {"from": "9" * 40}, {"limit": "-1"}, {"limit": "x"},
              {"from": "-5"}):  # fmt: skip
        assert_error(bob.request("GET", f"{V3}/notifications", query=q), 400, "M_INVALID_PARAM")
    r = bob.request("GET", f"{V3}/notifications", query={"limit": "99999999"})
    assert r.status == 200 and r.body == {"notifications": []}
    r = bob.request("GET", f"{V3}/notifications", query={"only": "nonsense"})
    assert r.status == 200


def test_events_from_another_server_are_counted(fed_pair):
    """A remote event (accepted over federation) is evaluated for the local members too."""
    from tests.support.harness import Client
    from tests.support.server_pair import q

    a, b = fed_pair
    alice, bob = Client(a.base_url).register(), Client(b.base_url).register()
    r = alice.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
    assert r.status == 200, r.body
    room = r.body["room_id"]
    r = bob.request("POST", f"{V3}/join/{q(room)}", {}, query={"server_name": a.hs.server_name})
    assert r.status == 200, r.body
    r = alice.request("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/{uuid.uuid4().hex}",
                      {"msgtype": "m.text", "body": "hello from the other server",
                       "m.mentions": {"user_ids": [bob.user_id]}})  # fmt: skip
    assert r.status == 200, r.body
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        joined = sync(bob)["rooms"]["join"]
        if joined.get(room, {}).get("unread_notifications", {}).get("notification_count"):
            break
        time.sleep(0.1)
    assert joined[room]["unread_notifications"] == {"notification_count": 1,
                                                    "highlight_count": 1}  # fmt: skip


def test_paging_with_a_bounded_look_misses_nothing(server, monkeypatch):
    """Rooms are read a bounded number of rows at a time (every member's rows): pages may be
    short, but following next_token gives every notification once, newest first."""
    import bastion.services.push as push

    monkeypatch.setattr(push, "LIST_SCAN_ROWS", 3)
    monkeypatch.setattr(push, "LIST_SCAN_MIN", 3)
    monkeypatch.setattr(push, "LIST_SCAN_BUDGET", 3)
    alice, bob, carol = make_user(server), make_user(server), make_user(server)
    rooms = [create_room(alice), create_room(alice)]
    for room in rooms:
        join(bob, room)
        join(carol, room)
    sent = [send(alice, rooms[i % 2], f"message number {i}") for i in range(7)]
    seen: list[str] = []
    query: dict = {"limit": "2"}
    for _ in range(50):
        r = bob.request("GET", f"{V3}/notifications", query=query)
        assert r.status == 200, r.body
        assert len(r.body["notifications"]) <= 2
        seen += [n["event"]["event_id"] for n in r.body["notifications"]]
        if "next_token" not in r.body:
            break
        query = {"limit": "2", "from": r.body["next_token"]}
    assert seen == sent[::-1]


def test_old_notifications_are_pruned(server, monkeypatch):
    """Every PRUNE_EVERY notifying events of a room, its notifications older than KEEP_MS go
    (here: everything, KEEP_MS in the future); the unread counts stay."""
    import bastion.services.push as push

    monkeypatch.setattr(push, "PRUNE_EVERY", 2)
    monkeypatch.setattr(push, "KEEP_MS", -(10**9))
    alice, bob = make_user(server), make_user(server)
    room = create_room(alice)
    join(bob, room)
    send(alice, room, "first message")
    assert len(bob.request("GET", f"{V3}/notifications").body["notifications"]) == 1
    send(alice, room, "second message")  # the second of the room: the prune runs
    assert bob.request("GET", f"{V3}/notifications").body == {"notifications": []}
    assert unread(bob, room) == (2, 0)
