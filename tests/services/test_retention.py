"""The retention purge job (services/retention.py, ``hs.retention``) on a running server: expired
messages become empty skeletons on schedule, newer ones stay, current state stays whole, held
users' and rooms' data stays, clients see a consistent history, expired media disappears, and
``bastion ledger verify`` is clean with the purge records.

The job's clock is the server's (``hs.now_ms``): the tests move it forward rather than wait."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from bastion.cli import main
from bastion.ledger.records import (
    ACTION_COMPLIANCE_MEDIA_PURGE,
    ACTION_COMPLIANCE_PURGE,
)
from tests.support.accounts import db_rows, make_admin, on_server
from tests.support.harness import Client, ServerThread
from tests.support.ledger import wait_covered

V3 = "/_matrix/client/v3"
HOLDS = "/_bastion/admin/v1/legal_holds"
HOUR = 3_600_000
DAY = 24 * HOUR
SECRET = "zq-retained-words"


class Clock:
    """The purge job's clock: the real one moved forward by ``offset`` ms, or stopped at
    ``at``. (Events keep the real time: the room engine has its own reference to it.)"""

    def __init__(self) -> None:
        self.offset = 0
        self.at: int | None = None

    def __call__(self) -> int:
        return self.at if self.at is not None else int(time.time() * 1000) + self.offset


def _start(tmp_path, **retention) -> tuple[ServerThread, Clock]:
    table = {"enabled": True, "default_max_lifetime": "1d", "purge_interval": "1h", **retention}
    table = {k: v for k, v in table.items() if v is not None}
    srv = ServerThread(tmp_path / "data", ledger_checkpoint_interval=0.2,
                       retention=table).start()  # fmt: skip
    clock = Clock()
    srv.hs.now_ms = clock  # the purge job reads the clock through hs.now_ms
    return srv, clock


@pytest.fixture
def server(tmp_path):
    srv, clock = _start(tmp_path)
    try:
        yield srv, clock
    finally:
        srv.stop()


def _send(c: Client, room: str, body: str) -> str:
    txn = f"t{time.monotonic_ns()}"
    r = c.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/{txn}",
                  {"msgtype": "m.text", "body": body})  # fmt: skip
    assert r.status == 200, r.body
    return r.body["event_id"]


def _state(c: Client, room: str, etype: str, content: dict, key: str = "") -> str:
    r = c.request("PUT", f"{V3}/rooms/{room}/state/{etype}/{key}", content)
    assert r.status == 200, r.body
    return r.body["event_id"]


def _stored(srv: ServerThread, eid: str) -> dict:
    return json.loads(db_rows(srv, "SELECT json FROM events WHERE event_id = ?", (eid,))[0][0])


def _run(srv: ServerThread):
    return on_server(srv, srv.hs.retention.run_once())


def _users(srv: ServerThread):
    c = Client(srv.base_url)
    alice = c.register("alice", "correct horse battery")
    bob = Client(srv.base_url).register("bob", "correct horse battery")
    return alice, bob


def _room(alice: Client, bob: Client | None = None, **extra) -> str:
    r = alice.request("POST", f"{V3}/createRoom",
                      {"preset": "public_chat", "name": f"name {SECRET}",
                       "topic": f"topic {SECRET}", **extra})  # fmt: skip
    assert r.status == 200, r.body
    room = r.body["room_id"]
    if bob is not None:
        assert bob.request("POST", f"{V3}/join/{room}", {}).status == 200
    return room


def _purge_records(srv: ServerThread, action: str = ACTION_COMPLIANCE_PURGE) -> list[dict]:
    rows = db_rows(srv, "SELECT entry FROM ledger_entries WHERE action = ?", (action,))
    return [json.loads(r[0]) for r in rows]


def test_expired_messages_become_skeletons_on_schedule(tmp_path, capsys):
    srv, clock = _start(tmp_path, purge_interval="300ms")
    try:
        alice, bob = _users(srv)
        room = _room(alice, bob)
        old = [_send(alice, room, f"{SECRET} a{i}") for i in range(3)]
        old.append(_send(bob, room, f"{SECRET} from bob"))
        time.sleep(0.05)
        newer = _send(alice, room, "newer")
        state_before = {
            eid: _stored(srv, eid)
            for (eid,) in db_rows(
                srv, "SELECT event_id FROM current_state WHERE room_id = ?", (room,)
            )  # fmt: skip
        }
        runs = srv.hs.retention.runs
        # A day later, to the millisecond between the old messages and the newer one.
        last_old = max(_stored(srv, e)["origin_server_ts"] for e in old)
        clock.at = (last_old + _stored(srv, newer)["origin_server_ts"]) // 2 + DAY
        deadline = time.monotonic() + 15
        while srv.hs.retention.runs < runs + 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the scheduled job, not a call of ours
        assert srv.hs.retention.runs >= runs + 2
        for eid in old:
            ev = _stored(srv, eid)
            assert ev["content"] == {} and ev["type"] == "m.room.message"
        assert _stored(srv, newer)["content"]["body"] == "newer"
        # The current state (name, topic, members, rules, ...) is whole.
        for eid, ev in state_before.items():
            assert _stored(srv, eid) == ev
        # Newer messages stay, and the room still works.
        fresh = _send(bob, room, "sent after the purge")
        runs = srv.hs.retention.runs
        while srv.hs.retention.runs < runs + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _stored(srv, fresh)["content"]["body"] == "sent after the purge"
        # Clients see a consistent history: every event, in order, the old ones as skeletons.
        in_db = [r[0] for r in db_rows(srv, "SELECT event_id FROM events WHERE room_id = ?"
                                            " ORDER BY stream_pos", (room,))]  # fmt: skip
        r = alice.request("GET", f"{V3}/rooms/{room}/messages?dir=b&limit=100")
        assert r.status == 200, r.body
        served = [e["event_id"] for e in reversed(r.body["chunk"])]
        assert served == in_db
        by_id = {e["event_id"]: e for e in r.body["chunk"]}
        assert all(by_id[e]["content"] == {} for e in old)
        assert by_id[fresh]["content"]["body"] == "sent after the purge"
        assert SECRET not in json.dumps([by_id[e] for e in old])
        sync = bob.request("GET", f"{V3}/sync")
        timeline = sync.body["rooms"]["join"][room]["timeline"]["events"]
        ids = [e["event_id"] for e in timeline]
        assert ids == in_db[-len(ids) :]
        assert all(e["content"] == {} for e in timeline if e["event_id"] in old)
        # Every stripped event is listed by a compliance.purge record with the policy.
        records = _purge_records(srv)
        listed = [e for rec in records for e in rec["details"]["events"]]
        assert set(old) <= set(listed) and len(listed) == len(set(listed))
        assert {(rec["details"]["cause"], rec["details"]["room_id"],
                 rec["details"]["max_lifetime"], rec["actor"]) for rec in records} == {
            ("retention", room, DAY, "server")}  # fmt: skip
        wait_covered(srv)
    finally:
        srv.stop()
    capsys.readouterr()
    assert main(["ledger", "verify", "--data-dir", str(tmp_path / "data"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["findings"] == []
    assert out["stats"]["events_stripped_by_records"] >= len(old)


def test_old_state_is_stripped_once_replaced_current_state_never(server):
    srv, clock = server
    alice, bob = _users(srv)
    room = _room(alice)
    topic1 = _state(alice, room, "m.room.topic", {"topic": f"first {SECRET}"})
    before = _stored(srv, topic1)
    clock.offset = 2 * DAY
    _run(srv)
    assert _stored(srv, topic1) == before  # current state: whole
    topic2 = _state(alice, room, "m.room.topic", {"topic": "second"})
    _run(srv)
    assert _stored(srv, topic1)["content"] == {}  # no longer current: stripped
    assert _stored(srv, topic2)["content"] == {"topic": "second"}
    r = alice.request("GET", f"{V3}/rooms/{room}/state/m.room.topic/")
    assert r.body == {"topic": "second"}


def test_events_only_once_and_in_batches(tmp_path):
    srv, clock = _start(tmp_path, purge_batch_size=2)
    try:
        alice, _ = _users(srv)
        room = _room(alice)
        ids = [_send(alice, room, f"{SECRET} {i}") for i in range(7)]
        clock.offset = 2 * DAY
        first = _run(srv)
        assert first.events >= 7 and first.complete
        assert all(_stored(srv, e)["content"] == {} for e in ids)
        n = len(db_rows(srv, "SELECT idx FROM ledger_entries"))
        again = _run(srv)
        assert again.events == 0  # nothing new: nothing read again, nothing recorded
        assert len(db_rows(srv, "SELECT idx FROM ledger_entries")) == n
        # An event stored later with an old timestamp is found by the next run too.
        later = _send(alice, room, "later")
        clock.offset = 4 * DAY
        assert _run(srv).events == 1
        assert _stored(srv, later)["content"] == {}
    finally:
        srv.stop()


def test_room_policy_and_clamping(tmp_path):
    # No server default: only rooms with a policy purge; allowed_lifetime_min clamps.
    srv, clock = _start(tmp_path, default_max_lifetime=None, allowed_lifetime_min="1h")
    try:
        alice, _ = _users(srv)
        short = _room(alice)
        _state(alice, short, "m.room.retention", {"max_lifetime": 1})  # clamped to 1 h
        plain = _room(alice)
        hostile = _room(alice)
        _state(alice, hostile, "m.room.retention", {"max_lifetime": -5})
        a, b, c = (_send(alice, r, SECRET) for r in (short, plain, hostile))
        clock.offset = 30 * 60_000  # half an hour: nothing yet (1 ms was clamped to 1 h)
        _run(srv)
        assert _stored(srv, a)["content"]["body"] == SECRET
        clock.offset = 2 * HOUR
        _run(srv)
        assert _stored(srv, a)["content"] == {}
        assert _stored(srv, b)["content"]["body"] == SECRET  # no policy
        assert _stored(srv, c)["content"]["body"] == SECRET  # a nonsense policy is none
        # min_lifetime protects.
        _state(alice, plain, "m.room.retention", {"max_lifetime": HOUR, "min_lifetime": 5 * DAY})
        _run(srv)
        assert _stored(srv, b)["content"]["body"] == SECRET
    finally:
        srv.stop()


def _admin(srv: ServerThread) -> Client:
    admin = Client(srv.base_url).register("admin", "correct horse battery")
    make_admin(srv, admin.user_id)
    return admin


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def test_legal_holds_keep_users_and_rooms_until_lifted(server):
    srv, clock = server
    alice, bob = _users(srv)
    admin = _admin(srv)
    room = _room(alice, bob)
    held_room = _room(alice, bob)
    a = _send(alice, room, SECRET)
    b = _send(bob, room, SECRET)
    c = _send(alice, held_room, SECRET)
    r = admin.request("PUT", f"{HOLDS}/users/{_q(bob.user_id)}", {"reason": "case 1"})
    assert r.status == 200, r.body
    r = admin.request("PUT", f"{HOLDS}/rooms/{_q(held_room)}", {"reason": "case 2"})
    assert r.status == 200, r.body
    clock.offset = 2 * DAY
    _run(srv)
    assert _stored(srv, a)["content"] == {}
    assert _stored(srv, b)["content"]["body"] == SECRET  # held user
    assert _stored(srv, c)["content"]["body"] == SECRET  # held room
    assert admin.request("DELETE", f"{HOLDS}/users/{_q(bob.user_id)}", {}).status == 200
    _run(srv)
    assert _stored(srv, b)["content"] == {}
    assert _stored(srv, c)["content"]["body"] == SECRET
    assert admin.request("DELETE", f"{HOLDS}/rooms/{_q(held_room)}", {}).status == 200
    _run(srv)
    assert _stored(srv, c)["content"] == {}


def _upload(c: Client, data: bytes) -> str:
    r = c.request("POST", "/_matrix/media/v3/upload", raw=data,
                  headers={"Content-Type": "image/png"})  # fmt: skip
    assert r.status == 200, r.body
    return r.body["content_uri"]


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def test_expired_media_is_deleted_unless_held(tmp_path):
    srv, clock = _start(tmp_path, local_media_max_lifetime="7d", default_max_lifetime=None)
    try:
        alice, bob = _users(srv)
        admin = _admin(srv)
        held_room = _room(alice)
        png = _png()
        gone = _upload(alice, png)
        kept_by_user = _upload(bob, png)
        kept_by_room = _upload(alice, png)
        _send(alice, held_room, "hello")  # (the guard holds a media first message for review)
        r = alice.request("PUT", f"{V3}/rooms/{held_room}/send/m.room.message/img",
                          {"msgtype": "m.image", "body": "x.png", "url": kept_by_room})  # fmt: skip
        assert r.status == 200
        media_id = gone.rsplit("/", 1)[1]
        server_part = gone[len("mxc://") :]
        # A thumbnail on disk.
        r = alice.request("GET", f"/_matrix/client/v1/media/thumbnail/{server_part}"
                                 "?width=32&height=32&method=scale")  # fmt: skip
        assert r.status == 200
        media = srv.hs.media
        thumbs = media._thumb_dir(media_id)  # noqa: SLF001
        assert media.local_path(media_id).exists() and any(thumbs.iterdir())
        for who, target in (("users", bob.user_id), ("rooms", held_room)):
            r = admin.request("PUT", f"{HOLDS}/{who}/{_q(target)}", {"reason": "litigation"})
            assert r.status == 200
        clock.offset = 3 * DAY
        assert _run(srv).media == 0  # not old enough yet
        clock.offset = 8 * DAY
        assert _run(srv).media == 1
        assert not media.local_path(media_id).exists() and not thumbs.exists()
        assert db_rows(srv, "SELECT 1 FROM local_media WHERE media_id = ?", (media_id,)) == []
        r = alice.request("GET", f"/_matrix/client/v1/media/download/{server_part}")
        assert r.status == 404
        for uri in (kept_by_user, kept_by_room):
            r = alice.request("GET", f"/_matrix/client/v1/media/download/{uri[6:]}")
            assert r.status == 200
        records = _purge_records(srv, ACTION_COMPLIANCE_MEDIA_PURGE)
        assert [rec["details"]["media"] for rec in records] == [[media_id]]
        # Lift the holds: the rest goes on the next run.
        for who, target in (("users", bob.user_id), ("rooms", held_room)):
            assert admin.request("DELETE", f"{HOLDS}/{who}/{_q(target)}", {}).status == 200
        assert _run(srv).media == 2
    finally:
        srv.stop()


def test_disabled_by_default(tmp_path):
    srv = ServerThread(tmp_path / "data").start()
    try:
        assert srv.hs.retention.config.enabled is False
        assert srv.hs.retention.background_tasks == frozenset()
        time.sleep(0.2)
        assert srv.hs.retention.runs == 0
    finally:
        srv.stop()


def test_runs_every_interval_and_stops_with_the_server(tmp_path):
    srv, _ = _start(tmp_path, purge_interval="100ms")
    stopped = False
    try:
        retention = srv.hs.retention
        deadline = time.monotonic() + 10
        while retention.runs < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert retention.runs >= 3 and retention.last is not None and retention.last.complete
        assert not retention.stopped
        srv.stop()
        stopped = True
        assert retention.stopped and retention.background_tasks == frozenset()
    finally:
        if not stopped:
            srv.stop()


def test_events_seen_young_are_stripped_once_they_expire(server):
    srv, clock = server
    alice, _ = _users(srv)
    room = _room(alice)
    eid = _send(alice, room, SECRET)
    assert _run(srv).events == 0  # read once, young: the room's progress moves past it
    clock.offset = 12 * HOUR
    assert _run(srv).events == 0
    assert _stored(srv, eid)["content"]["body"] == SECRET
    clock.offset = 2 * DAY
    assert _run(srv).events == 1  # found again by its age
    assert _stored(srv, eid)["content"] == {}


def test_unused_cached_remote_media_is_deleted(tmp_path):
    srv, clock = _start(tmp_path, remote_media_max_lifetime="7d", default_max_lifetime=None)
    try:
        media = srv.hs.media
        store = srv.hs.store
        rel = media.new_remote_file()
        path = media.root / rel
        path.parent.mkdir(parents=True)
        path.write_bytes(b"a remote file")
        thumbs = media.root / "remote_thumbnails" / rel[len("remote/") :]
        thumbs.mkdir(parents=True)
        (thumbs / "32x32-crop.png").write_bytes(b"t")

        async def cache() -> None:
            def fn(conn) -> None:
                for media_id, file_path in (("old", rel), ("fresh", "remote/00/00/x")):
                    store.insert_remote_media_in(
                        conn, "elsewhere.example", media_id, clock(),
                        content_type="text/plain", upload_name=None, size=13,
                        sha256="00" * 32, file_path=file_path, file_key=None,
                    )  # fmt: skip

            await store.transaction(fn)
            await store.transaction(
                lambda c: store.touch_remote_media_in(
                    c, "elsewhere.example", "fresh", clock() + 6 * DAY
                )  # fmt: skip
            )

        on_server(srv, cache())
        clock.offset = 3 * DAY
        assert _run(srv).media == 0  # served too recently
        clock.offset = 8 * DAY
        assert _run(srv).media == 1
        assert not path.exists() and not thumbs.exists()
        assert store.get_remote_media("elsewhere.example", "old") is None
        assert store.get_remote_media("elsewhere.example", "fresh") is not None
    finally:
        srv.stop()


def test_expired_messages_leave_no_words_in_the_search_index(server):
    """The search index (FTS5) keeps a deleted row's words in its older segments until they
    are merged: a purge that stripped events rewrites the index, so their words are gone."""
    srv, clock = server
    alice, _ = _users(srv)
    room = _room(alice)
    mark = "qvexpiredmark"  # (no other word here begins so: stored whole, not prefix-compressed)
    ids = [_send(alice, room, f"{mark} {i}") for i in range(3)]
    r = alice.request("POST", f"{V3}/search",
                      {"search_categories": {"room_events": {"search_term": mark}}})  # fmt: skip
    assert r.status == 200 and r.body["search_categories"]["room_events"]["count"] == 3, r.body

    def in_index() -> bool:
        return any(mark.encode() in bytes(row[0]) for row in db_rows(
            srv, "SELECT block FROM event_search_data WHERE block IS NOT NULL"))  # fmt: skip

    assert in_index()
    _send(alice, room, "a later message keeps the index busy")
    clock.offset = 2 * DAY
    assert _run(srv).events >= 3
    assert all(_stored(srv, e)["content"] == {} for e in ids)
    assert not in_index()
