"""The ledger's storage (storage/sqlite/ledger.py) and durable writes (storage/sqlite/database.py):
leaves appended in the transaction of what they record, with dense indexes under group commit;
the tables of tiles, tree state, checkpoints, cosignatures, witnesses and anchors; and, on a real
server, the leaf of every event it persists — local, remote, outlier, rejected, soft-failed — with
exactly the decision it took."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import uuid

import orjson
import pytest

from bastion.core.base64 import encode_base64
from bastion.core.events import compute_reference_hash
from bastion.ledger import records as rec
from bastion.storage.sqlite.store import SqliteStore
from tests.support.peer import bastion_and_peer, on_server
from tests.support.room_builder import standard_room
from tests.support.rooms import create_room, send

# -- the store on its own -------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "h.db")
    s.open()
    try:
        yield s
    finally:
        s.close()


def _action(i: int, **kw) -> dict:
    return rec.action_record(action="admin.request", actor="@admin:x", ts=1000 + i, **kw)


def test_append_is_in_the_writing_transaction(store):
    def write(conn):
        conn.execute("INSERT INTO profiles (user_id, key, value) VALUES ('@a:x', 'k', '1')")
        return store.ledger_append_in(conn, _action(0, target="@a:x"))

    assert store.transaction_sync(write) == 0
    assert store.ledger_size() == 1
    row = store.ledger_entry(0)
    assert row is not None and (row.idx, row.kind, row.action, row.ts) == (0, "action",
                                                                          "admin.request", 1000)  # fmt: skip
    assert orjson.loads(row.entry) == _action(0, target="@a:x")
    assert store.ledger_entries(0, 1) == [row.entry] == [rec.entry_bytes(_action(0, target="@a:x"))]
    assert store.ledger_entry(1) is None


def test_a_rolled_back_write_leaves_no_leaf_and_no_gap(store):
    store.transaction_sync(lambda conn: store.ledger_append_in(conn, _action(0)))

    def failing(conn):
        store.ledger_append_in(conn, _action(1))
        conn.execute("INSERT INTO profiles (user_id, key, value) VALUES ('@a:x', 'k', '1')")
        raise RuntimeError("the write fails after its leaf")

    with pytest.raises(RuntimeError):
        store.transaction_sync(failing)
    assert store.ledger_size() == 1 and store.get_profile("@a:x") == {}
    assert store.transaction_sync(lambda conn: store.ledger_append_in(conn, _action(2))) == 1
    assert [orjson.loads(e)["ts"] for e in store.ledger_entries(0, 10)] == [1000, 1002]


def test_indexes_are_dense_under_group_commit_with_concurrent_writers(store):
    rng = random.Random(8)
    fails = {i for i in range(400) if rng.random() < 0.2}

    async def main():
        async def one(i: int):
            def fn(conn):
                idx = store.ledger_append_in(conn, _action(i))
                if i % 7 == 0:  # two leaves in one write
                    store.ledger_append_in(conn, _action(i + 10_000))
                if i in fails:
                    raise ValueError(i)
                return idx

            try:
                return await store.transaction(fn)
            except ValueError:
                return None

        return await asyncio.gather(*(one(i) for i in range(400)))

    got = asyncio.run(main())
    ok = [i for i in range(400) if i not in fails]
    size = len(ok) + sum(1 for i in ok if i % 7 == 0)
    assert store.ledger_size() == size
    rows = list(store.ledger_iter_entries(batch=37))
    assert [r.idx for r in rows] == list(range(size))
    stamps = [orjson.loads(r.entry)["ts"] - 1000 for r in rows]
    assert sorted(s for s in stamps if s < 10_000) == ok  # each committed write once, no failed one
    assert {got[i] for i in ok} <= {r.idx for r in rows}
    assert all(got[i] is None for i in fails)
    assert [r.idx for r in store.ledger_iter_entries(start=size - 5, batch=2)] == list(
        range(size - 5, size)
    )


def test_a_subject_gets_a_nonce(store):
    idx = store.transaction_sync(
        lambda conn: store.ledger_append_in(conn, _action(0, subject="@a:x"))
    )
    row = store.ledger_entry(idx)
    assert row is not None and row.subject == "@a:x"
    nonce = orjson.loads(row.entry)["nonce"]
    assert isinstance(nonce, str) and len(nonce) >= 16
    idx2 = store.transaction_sync(
        lambda conn: store.ledger_append_in(conn, _action(1, subject="@a:x", nonce="given"))
    )
    assert orjson.loads(store.ledger_entry(idx2).entry)["nonce"] == "given"  # type: ignore[union-attr]


def test_admin_audit_is_a_view_over_the_action_leaves(store):
    first = rec.action_record(action="create-user", actor="cli", ts=5, target="@a:x",
                              details={"admin": True})  # fmt: skip
    second = rec.action_record(action="lock", actor="@admin:x", ts=6, target="@b:x", details={})
    store.transaction_sync(lambda conn: store.ledger_append_in(conn, first))
    store.transaction_sync(lambda conn: store.ledger_append_in(conn, second))
    (a, b) = store.ledger_iter_entries()
    assert orjson.loads(a.entry) == rec.action_record(
        action="create-user", actor="cli", ts=5, target="@a:x", details={"admin": True}
    )
    log = [dict(r) for r in store.admin_audit_log()]
    assert [(r["id"], r["ts"], r["actor"], r["action"], r["target"]) for r in log] == [
        (1, 6, "@admin:x", "lock", "@b:x"), (0, 5, "cli", "create-user", "@a:x")]  # fmt: skip
    assert [orjson.loads(r["details"]) for r in log] == [{}, {"admin": True}]
    with pytest.raises(sqlite3.OperationalError):  # a view: nobody writes it directly
        store.transaction_sync(lambda conn: conn.execute(
            "INSERT INTO admin_audit (ts, actor, action, target, details) VALUES (1,'x','y',NULL,'{}')"))  # fmt: skip


def _synchronous(conn) -> int:
    return conn.execute("PRAGMA synchronous").fetchone()[0]


def test_a_durable_write_commits_alone_with_synchronous_full(store):
    """FULL (2) while the durable write runs, NORMAL (1) before and after; and the durable
    write is never batched with others."""
    batches: list[list] = []
    store.db.add_commit_hook(lambda results: batches.append(list(results)))

    async def main():
        def normal(i):
            return lambda conn: ("normal", i, _synchronous(conn))

        def durable(conn):
            return ("durable", 0, _synchronous(conn))

        writes = [store.transaction(normal(i)) for i in range(30)]
        writes.insert(15, store.transaction(durable, durable=True))
        return await asyncio.gather(*writes)

    results = asyncio.run(main())
    assert ("durable", 0, 2) in results
    assert all(s == 1 for kind, _, s in results if kind == "normal")
    (alone,) = [b for b in batches if ("durable", 0, 2) in b]
    assert alone == [("durable", 0, 2)]
    assert store.transaction_sync(_synchronous) == 1
    assert store.transaction_sync(_synchronous, durable=True) == 2
    assert store.transaction_sync(_synchronous) == 1


def test_a_failing_durable_write_restores_the_mode(store):
    def bad(conn):
        raise KeyError("no")

    with pytest.raises(KeyError):
        store.transaction_sync(bad, durable=True)
    assert store.transaction_sync(_synchronous) == 1


def test_checkpoints_are_durable_and_only_grow(store, monkeypatch):
    seen: list[bool] = []
    write = store.db.write

    async def spy(fn, durable=False):
        seen.append(durable)
        return await write(fn, durable=durable)

    monkeypatch.setattr(store.db, "write", spy)

    async def main():
        await store.ledger_add_checkpoint(3, b"r" * 32, b"note 3\n", 10)
        await store.ledger_add_checkpoint(7, b"s" * 32, b"note 7\n", 11)
        for size in (7, 5):
            with pytest.raises(ValueError, match="not newer"):
                await store.ledger_add_checkpoint(size, b"t" * 32, b"x", 12)

    asyncio.run(main())
    assert seen == [True] * 4
    latest = store.ledger_latest_checkpoint()
    assert latest is not None and (latest.size, latest.root, latest.note, latest.ts) == (
        7, b"s" * 32, b"note 7\n", 11)  # fmt: skip
    assert store.ledger_checkpoint(3).root == b"r" * 32  # type: ignore[union-attr]
    assert store.ledger_checkpoint(5) is None
    assert [c.size for c in store.ledger_iter_checkpoints()] == [3, 7]


def test_tiles_tree_state_cosignatures_witnesses_and_anchors(store):
    assert store.ledger_tree_state() is None and store.ledger_tile(0, 0) is None
    tile = bytes(range(256)) * 32
    store.transaction_sync(lambda conn: store.ledger_store_tiles_in(conn, [(0, 0, tile)]))
    store.transaction_sync(lambda conn: store.ledger_store_tiles_in(conn, [(0, 0, b"\0" * 8192)]))
    assert store.ledger_tile(0, 0) == tile  # immutable
    with pytest.raises(ValueError):
        store.transaction_sync(lambda conn: store.ledger_store_tiles_in(conn, [(0, 1, b"x")]))
    edge = [b"a" * 32, b"b" * 32]
    store.transaction_sync(lambda conn: store.ledger_save_tree_state_in(conn, 3, edge))
    assert store.ledger_tree_state() == (3, edge)
    store.transaction_sync(lambda conn: store.ledger_save_tree_state_in(conn, 4, [b"c" * 32]))
    assert store.ledger_tree_state() == (4, [b"c" * 32])

    async def main():
        await store.ledger_add_cosignature(4, "w2", "\u2014 w2 abc\n".encode(), 1)
        await store.ledger_add_cosignature(4, "w1", "\u2014 w1 old\n".encode(), 1)
        await store.ledger_add_cosignature(4, "w1", "\u2014 w1 new\n".encode(), 2)
        await store.ledger_set_witness_size("w1", 4)
        await store.ledger_set_witness_size("w1", 9)
        first = await store.ledger_add_anchor("file", 4, b"r" * 32, {"line": 1}, 5)
        second = await store.ledger_add_anchor("ethereum", 9, b"s" * 32, {"tx": "0x1"}, 6)
        return first, second

    first, second = asyncio.run(main())
    assert store.ledger_cosignatures(4) == ["\u2014 w1 new\n".encode(), "\u2014 w2 abc\n".encode()]
    assert store.ledger_cosignatures(5) == []
    assert (store.ledger_witness_size("w1"), store.ledger_witness_size("w3")) == (9, None)
    anchors = store.ledger_anchors()
    assert [(a.id, a.anchor, a.size, a.receipt) for a in anchors] == [
        (second, "ethereum", 9, {"tx": "0x1"}), (first, "file", 4, {"line": 1})]  # fmt: skip
    assert store.ledger_anchors(limit=1)[0].id == second


def test_witness_state_is_compare_and_swap(store):
    def upd(expect, size):
        return store.transaction_sync(lambda conn: store.witness_update_log_in(
            conn, "log.example/x", expect, size, bytes([size]) * 32, b"n%d" % size, size))  # fmt: skip

    assert store.witness_log_state("log.example/x") is None
    assert upd(None, 5) is True
    assert upd(None, 6) is False  # someone stored a state already
    assert upd(4, 6) is False  # not the stored size
    assert upd(5, 8) is True
    st = store.witness_log_state("log.example/x")
    assert st is not None and (st.origin, st.size, st.root, st.note, st.ts) == (
        "log.example/x", 8, bytes([8]) * 32, b"n8", 8)  # fmt: skip


# -- every event a real server persists ---------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory, test_ca):
    with bastion_and_peer(tmp_path_factory.mktemp("ledger"), test_ca) as world:
        yield world


def _txn() -> str:
    return uuid.uuid4().hex


def _leaves(srv, event_id: str) -> list[dict]:
    rows = on_server(srv, lambda: srv.hs.store.db.read(
        "SELECT entry FROM ledger_entries WHERE event_id = ? ORDER BY idx", (event_id,)))  # fmt: skip
    return [orjson.loads(r[0]) for r in rows]


def _event_row(srv, event_id: str):
    return on_server(srv, lambda: srv.hs.store.db.read_one(
        "SELECT * FROM events WHERE event_id = ?", (event_id,)))  # fmt: skip


def _expected(row, decision: str, ref: str | None = None) -> dict:
    return rec.event_record(
        event_id=row["event_id"], room_id=row["room_id"], sender=row["sender"], type=row["type"],
        state_key=row["state_key"], origin_server_ts=row["origin_server_ts"],
        stream_pos=row["stream_pos"], decision=decision, reference_hash=ref,
    )  # fmt: skip


def _check_all_events(srv) -> None:
    """Every events row has its leaf (the latest one of its ID) saying exactly what the row
    says; every event leaf has its row; the indexes are dense."""
    store = srv.hs.store
    rows = on_server(srv, lambda: store.db.read("SELECT * FROM events"))
    leaves = on_server(srv, lambda: list(store.ledger_iter_entries()))
    assert [r.idx for r in leaves] == list(range(len(leaves)))
    latest = {r.event_id: r for r in leaves if r.kind == "event"}
    assert set(latest) == {r["event_id"] for r in rows}
    for r in rows:
        row = latest[r["event_id"]]
        leaf = orjson.loads(row.entry)
        assert row.entry == rec.entry_bytes(leaf)
        assert row.idx == r["ledger_idx"] and (row.ts, row.subject, row.action) == (
            r["origin_server_ts"], None, None)  # fmt: skip
        decision = rec.decision_of(bool(r["rejected"]), r["soft_failed"])
        drop = ("reference_hash", "redacted_on_receipt")
        assert {k: v for k, v in leaf.items() if k not in drop} == _expected(r, decision)


def test_local_events_each_get_their_leaf(world):
    srv, _, admin = world
    room_id = create_room(admin)
    eid = send(admin, room_id, "one")
    (leaf,) = _leaves(srv, eid)
    assert leaf == _expected(_event_row(srv, eid), "accepted")
    assert "reference_hash" not in leaf and "content" not in leaf
    size = on_server(srv, srv.hs.store.ledger_size)
    got = on_server(srv, lambda: srv.hs.store.ledger_event_entry(eid))
    assert got is not None and got.idx == size - 1 and got.kind == "event"
    # The room's creation events too, in stream order.
    created = on_server(srv, lambda: srv.hs.store.db.read(
        "SELECT event_id FROM events WHERE room_id = ? ORDER BY stream_pos", (room_id,)))  # fmt: skip
    idxs = [on_server(srv, lambda e=r[0]: srv.hs.store.ledger_event_entry(e)).idx for r in created]
    assert idxs == sorted(idxs) and len(idxs) >= 5
    _check_all_events(srv)


@pytest.mark.parametrize("version", ["1", "2", "3", "10", "12"])
def test_only_opaque_event_ids_carry_the_reference_hash(store, version):
    """Room versions 1 and 2 name events by an opaque ID chosen by their origin: the leaf
    carries the reference hash too. From v3 on the ID is the reference hash (Bastion creates
    no v1/v2 rooms, so these come over federation; stored here as outliers, the same path)."""
    room = standard_room(version, members={"@bob:b.example": "join"})
    events = list(room.events.items())
    store.transaction_sync(lambda conn: (
        store.create_room_sync(conn, room.room_id, version, room.creator, 1, False),
        store.persist_outliers_sync(conn, [(e, room.room_id, ev, False) for e, ev in events]),
    ))  # fmt: skip
    assert store.ledger_size() == len(events)
    for eid, ev in events:
        leaf = orjson.loads(store.ledger_event_entry(eid).entry)  # type: ignore[union-attr]
        if version in ("1", "2"):
            assert leaf["reference_hash"] == encode_base64(compute_reference_hash(ev, version))
            assert leaf["reference_hash"] not in eid
        else:
            assert "reference_hash" not in leaf
        assert leaf["decision"] == "outlier" and leaf["event_id"] == eid


def test_remote_outlier_rejected_and_soft_failed_events_get_the_right_leaf(world):
    srv, peer, admin = world
    room_id = create_room(admin)
    p1, p2, p3 = peer.user("p1"), peer.user("p2"), peer.user("p3")
    for u in (p1, p2):
        eid, ev = peer.build_on(srv, room_id, u, "m.room.member", {"membership": "join"}, u)
        status, body = peer.send(srv, _txn(), [ev])
        assert status == 200 and body["pdus"] == {eid: {}}, body
        assert _leaves(srv, eid) == [_expected(_event_row(srv, eid), "accepted")]
    # Accepted remote message.
    m_id, m = peer.build_on(srv, room_id, p1, "m.room.message", {"msgtype": "m.text", "body": "x"})
    assert peer.send(srv, _txn(), [m])[1]["pdus"] == {m_id: {}}
    assert _leaves(srv, m_id) == [_expected(_event_row(srv, m_id), "accepted")]
    # p3's join, unknown to the server, cited as an auth event of p3's message that is not on
    # the room's state: the join is fetched and held as an outlier, the message rejected
    # (check 5: p3 is not in the room before it).
    state = on_server(srv, lambda: dict(srv.hs.rooms.engine.snapshot(room_id).state))
    j_id, j = peer.build_on(srv, room_id, p3, "m.room.member", {"membership": "join"}, p3)
    x_id, x = peer.build_on(srv, room_id, p3, "m.room.message", {"msgtype": "m.text", "body": "y"},
                            state={**state, ("m.room.member", p3): j_id})  # fmt: skip
    status, body = peer.send(srv, _txn(), [x])
    assert status == 200 and "error" in body["pdus"][x_id], body
    assert _leaves(srv, j_id) == [_expected(_event_row(srv, j_id), "outlier")]
    assert _leaves(srv, x_id) == [_expected(_event_row(srv, x_id), "rejected")]
    # The outlier arrives with its place in the DAG: stored again, de-outliered, a new leaf.
    outlier_leaf = _leaves(srv, j_id)[0]
    assert peer.send(srv, _txn(), [j])[1]["pdus"] == {j_id: {}}
    row = _event_row(srv, j_id)
    assert row["soft_failed"] == 0
    assert _leaves(srv, j_id) == [outlier_leaf, _expected(row, "accepted")]
    assert orjson.loads(on_server(srv, lambda: srv.hs.store.ledger_event_entry(j_id)).entry)[
        "decision"] == "accepted"  # fmt: skip
    # Rejected at check 4 (p1 may not change the power levels): a rejected outlier.
    pl = on_server(srv, lambda: srv.hs.rooms.current_state_event(room_id, "m.room.power_levels"))
    content = {**pl["content"], "users": {**pl["content"]["users"], p1: 100}}
    r_id, r = peer.build_on(srv, room_id, p1, "m.room.power_levels", content, "")
    status, body = peer.send(srv, _txn(), [r])
    assert "error" in body["pdus"][r_id]
    assert _leaves(srv, r_id) == [_expected(_event_row(srv, r_id), "rejected")]
    # Soft-failed: p2, banned, sends on the branch from before the ban.
    old_state = on_server(srv, lambda: dict(srv.hs.rooms.engine.snapshot(room_id).state))
    old_ext = on_server(srv, lambda: list(srv.hs.rooms.engine.snapshot(room_id).extremities))
    r2 = admin.request("POST", f"/_matrix/client/v3/rooms/{room_id}/ban", {"user_id": p2})
    assert r2.status == 200, r2.body
    s_id, s = peer.build_on(srv, room_id, p2, "m.room.message", {"msgtype": "m.text",
                            "body": "still here"}, state=old_state, prev_events=old_ext)  # fmt: skip
    assert peer.send(srv, _txn(), [s])[1]["pdus"] == {s_id: {}}
    row = _event_row(srv, s_id)
    assert row["soft_failed"] == 1
    assert _leaves(srv, s_id) == [_expected(row, "soft_failed")]
    _check_all_events(srv)


def test_with_the_ledger_off_events_get_no_leaf(world):
    srv, _, admin = world
    room_id = create_room(admin)
    srv.hs.store.ledger_enabled = False
    try:
        eid = send(admin, room_id, "unrecorded")
    finally:
        srv.hs.store.ledger_enabled = True
    assert _leaves(srv, eid) == []
    assert _event_row(srv, eid)["ledger_idx"] is None
    assert on_server(srv, lambda: srv.hs.store.ledger_event_entry(eid)) is None
    eid2 = send(admin, room_id, "recorded")
    assert len(_leaves(srv, eid2)) == 1


def test_a_remote_event_redacted_on_receipt_says_so_in_its_leaf(world):
    """PDU check 3: a received event whose content hash fails is stored redacted; its leaf
    carries ``redacted_on_receipt`` so the verifier can tell it from content removed later."""
    srv, peer, admin = world
    room_id = create_room(admin)
    p4 = peer.user("p4")
    j_id, j = peer.build_on(srv, room_id, p4, "m.room.member", {"membership": "join"}, p4)
    assert peer.send(srv, _txn(), [j])[1]["pdus"] == {j_id: {}}
    m_id, m = peer.build_on(srv, room_id, p4, "m.room.message", {"msgtype": "m.text", "body": "x"})
    m = {**m, "content": {"msgtype": "m.text", "body": "changed after hashing"}}
    assert peer.send(srv, _txn(), [m])[1]["pdus"] == {m_id: {}}
    row = _event_row(srv, m_id)
    assert orjson.loads(row["json"])["content"] == {}
    assert _leaves(srv, m_id) == [{**_expected(row, "accepted"), "redacted_on_receipt": True}]
    assert "redacted_on_receipt" not in _leaves(srv, j_id)[0]
