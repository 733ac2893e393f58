"""``strip_event_contents_in`` (storage/sqlite/event_contents.py) and the records that account
for it (services/compliance_records.py): events keep their ID, hashes and signatures, lose what
was written, their queued federation copies too; ``bastion ledger verify`` accepts a stripped
event only when an erasure or purge record lists it."""

from __future__ import annotations

import json

import pytest

from bastion.cli import main
from bastion.core.events import compute_event_id
from bastion.ledger.records import ACTION_COMPLIANCE_ERASE, ACTION_COMPLIANCE_PURGE
from bastion.services import compliance_records
from bastion.services.compliance_records import EVENTS_PER_RECORD, strip_and_record_in
from tests.support.accounts import db_rows, on_server
from tests.support.harness import Client, ServerThread
from tests.support.ledger import wait_covered

V3 = "/_matrix/client/v3"
SECRET = "zq-distinctive-words-7731"


def _send(c: Client, room: str, txn: str, body: str) -> str:
    r = c.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/{txn}",
                  {"msgtype": "m.text", "body": body})  # fmt: skip
    assert r.status == 200, r.body
    return r.body["event_id"]


@pytest.fixture
def room(tmp_path):
    srv = ServerThread(tmp_path / "data", ledger_checkpoint_interval=0.2).start()
    try:
        c = Client(srv.base_url)
        alice = c.register("alice", "correct horse battery")
        r = alice.request("POST", f"{V3}/createRoom", {"preset": "public_chat", "name": SECRET})
        assert r.status == 200, r.body
        yield srv, alice, r.body["room_id"]
    finally:
        srv.stop()


def _strip(srv: ServerThread, action: str | None, ids: list[str]) -> list[str]:
    store = srv.hs.store

    def fn(conn):
        if action is None:
            return store.strip_event_contents_in(conn, ids)
        return strip_and_record_in(store, conn, action, ids, actor="cli", ts=1,
                                   subject="@alice:localhost")  # fmt: skip

    return on_server(srv, store.transaction(fn))


def test_stripped_event_keeps_id_and_graph_loses_content(room):
    srv, alice, room_id = room
    eid = _send(alice, room_id, "t1", f"my secret is {SECRET}")
    before = json.loads(db_rows(srv, "SELECT json FROM events WHERE event_id = ?", (eid,))[0][0])
    assert _strip(srv, ACTION_COMPLIANCE_ERASE, [eid, "$unknown"]) == [eid]
    after = json.loads(db_rows(srv, "SELECT json FROM events WHERE event_id = ?", (eid,))[0][0])
    assert SECRET not in json.dumps(after)
    assert after["content"] == {}
    assert after["hashes"] == before["hashes"] and after["signatures"] == before["signatures"]
    assert compute_event_id(after, "12") == eid
    # Served to clients as stripped (the parsed-row cache was dropped).
    r = alice.request("GET", f"{V3}/rooms/{room_id}/event/{eid}")
    assert r.status == 200 and r.body["content"] == {}
    # Stripping again changes nothing and writes no record.
    n = len(db_rows(srv, "SELECT idx FROM ledger_entries"))
    assert _strip(srv, ACTION_COMPLIANCE_ERASE, [eid]) == []
    assert len(db_rows(srv, "SELECT idx FROM ledger_entries")) == n
    # The room still works.
    _send(alice, room_id, "t2", "still here")


def test_state_keeps_what_the_room_needs(room):
    srv, alice, room_id = room
    rows = db_rows(srv, "SELECT event_id, type FROM events WHERE room_id = ?", (room_id,))
    ids = {t: e for e, t in rows}
    _strip(srv, ACTION_COMPLIANCE_PURGE, [ids["m.room.member"], ids["m.room.name"]])
    member = json.loads(db_rows(srv, "SELECT json FROM events WHERE event_id = ?",
                                (ids["m.room.member"],))[0][0])  # fmt: skip
    assert member["content"] == {"membership": "join"}
    name = json.loads(db_rows(srv, "SELECT json FROM events WHERE event_id = ?",
                              (ids["m.room.name"],))[0][0])  # fmt: skip
    assert SECRET not in json.dumps(name)
    _send(alice, room_id, "t3", "the member event still authorises this")


def test_records_list_every_stripped_event_in_batches(room, monkeypatch):
    srv, alice, room_id = room
    assert EVENTS_PER_RECORD == 200  # (255-byte IDs: about 52 KiB, under a leaf's 64 KiB)
    monkeypatch.setattr(compliance_records, "EVENTS_PER_RECORD", 2)
    ids = [_send(alice, room_id, f"m{i}", f"{SECRET} {i}") for i in range(5)]
    assert _strip(srv, ACTION_COMPLIANCE_PURGE, ids) == ids
    rows = db_rows(srv, "SELECT entry FROM ledger_entries WHERE action = ?",
                   (ACTION_COMPLIANCE_PURGE,))  # fmt: skip
    listed = [json.loads(r[0])["details"]["events"] for r in rows]
    assert [len(x) for x in listed] == [2, 2, 1]
    assert [e for x in listed for e in x] == ids


def test_only_stripping_actions(room):
    srv, _, _ = room
    with pytest.raises(ValueError):
        _strip(srv, "admin.request", [])


def test_queued_federation_copy_is_stripped_too(room):
    srv, alice, room_id = room
    eid = _send(alice, room_id, "q1", SECRET)
    store = srv.hs.store

    def queue(conn):
        pdu = json.loads(conn.execute("SELECT json FROM events WHERE event_id = ?",
                                      (eid,)).fetchone()[0])  # fmt: skip
        store.enqueue_pdu_in(conn, ["remote.example"], eid, pdu)

    on_server(srv, store.transaction(queue))
    assert SECRET in db_rows(srv, "SELECT pdu FROM federation_outbound_pdus")[0][0].decode()
    _strip(srv, ACTION_COMPLIANCE_ERASE, [eid])
    pdu = json.loads(db_rows(srv, "SELECT pdu FROM federation_outbound_pdus")[0][0])
    assert pdu["content"] == {} and "unsigned" not in pdu


def _verify(data, capsys) -> tuple[int, list[dict], dict]:
    capsys.readouterr()
    code = main(["ledger", "verify", "--data-dir", str(data), "--json"])
    out = json.loads(capsys.readouterr().out)
    return code, out["findings"], out["stats"]


@pytest.mark.parametrize("recorded", [True, False])
def test_ledger_verify_accepts_only_recorded_stripping(tmp_path, capsys, recorded):
    srv = ServerThread(tmp_path / "data", ledger_checkpoint_interval=0.2).start()
    try:
        alice = Client(srv.base_url).register("alice", "correct horse battery")
        r = alice.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
        room_id = r.body["room_id"]
        eid = _send(alice, room_id, "v1", SECRET)
        _strip(srv, ACTION_COMPLIANCE_ERASE if recorded else None, [eid])
        wait_covered(srv)
    finally:
        srv.stop()
    code, findings, stats = _verify(tmp_path / "data", capsys)
    if recorded:
        assert (code, findings) == (0, [])
        assert stats["events_stripped_by_records"] == 1
    else:
        assert code == 1
        assert [(f["key"], "without a redaction event" in f["message"]) for f in findings] == [
            (eid, True)
        ]


def test_stripped_relation_leaves_the_relations_index(room):
    srv, alice, room_id = room
    root = _send(alice, room_id, "r1", "root")
    r = alice.request(
        "PUT", f"{V3}/rooms/{room_id}/send/m.reaction/r2",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": SECRET}},
    )  # fmt: skip
    assert r.status == 200, r.body
    like = r.body["event_id"]
    keys = "SELECT aggregation_key FROM event_relations WHERE event_id = ?"
    assert [tuple(row) for row in db_rows(srv, keys, (like,))] == [(SECRET,)]
    assert _strip(srv, None, [like]) == [like]
    assert db_rows(srv, keys, (like,)) == []
    r = alice.request("GET", f"/_matrix/client/v1/rooms/{room_id}/relations/{root}")
    assert r.status == 200 and r.body["chunk"] == []
