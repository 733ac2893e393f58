"""The audit trail (issue 10, "Audit"): its pure rules (times, selection, CSV), the range proof
(RFC 9162 2.1.1 / 2.1.3 recomputed from a leaf range and the inclusion proofs of its ends), and
a trail built from a real store that verifies offline, and fails on any tampering."""

from __future__ import annotations

import base64
import csv
import io
import random

import orjson
import pytest

from bastion.core import audit as rules
from bastion.ledger import merkle
from bastion.ledger.audit_trail import path_ranges, range_root, verify_pages, verify_trail
from bastion.ledger.checkpoint import Checkpoint, sign_checkpoint
from bastion.ledger.note import Ed25519Signer, parse_vkey
from bastion.ledger.records import action_record, event_record
from bastion.services.audit import TrailError, TrailQuery, build_trail
from bastion.storage.interface import CheckpointRow
from bastion.storage.sqlite.store import SqliteStore

ORIGIN = "localhost/bastion-ledger"
MIN = 60_000
T0 = 1_800_000_000_000


# -- times ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1800000000000", 1_800_000_000_000),
        ("0", 0),
        ("1970-01-01T00:00:01Z", 1000),
        ("1970-01-01T00:00:01.5+00:00", 1500),
        ("1970-01-01T01:00:00+01:00", 0),
        ("1970-01-02", 86_400_000),
        ("1970-01-01T00:01:00", 60_000),  # no offset: UTC
    ],
)
def test_times_are_iso_8601_or_milliseconds(text, ms):
    assert rules.parse_time(text) == ms


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "-5", "1.5", "1969-12-31T23:59:59Z", "9" * 17, "2026-13-01", "x" * 100,
     "2026-01-01T00:00:00 01:00", "１２３"],
)  # fmt: skip
def test_bad_times_are_refused(text):
    with pytest.raises(ValueError):
        rules.parse_time(text)


def test_a_range_must_not_run_backwards():
    assert rules.parse_range("1000", None, 5000) == (1000, 5000)
    with pytest.raises(ValueError):
        rules.parse_range("2000", "1000", 5000)


# -- CSV --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hostile",
    ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", '  =HYPERLINK("x")'],
)
def test_csv_cells_that_would_be_formulas_are_neutralised(hostile):
    rows = rules.csv_rows([(7, action_record(action="admin.request", actor="@a:x", ts=T0,
                                             reason=hostile, target=hostile))])  # fmt: skip
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    back = list(csv.reader(io.StringIO(buf.getvalue())))
    assert back[0] == list(rules.CSV_COLUMNS)
    row = dict(zip(back[0], back[1], strict=True))
    assert row["reason"] == "'" + hostile and row["target"] == "'" + hostile
    assert row["index"] == "7" and row["time"] == "2027-01-15T08:00:00.000Z"


def test_user_ids_stay_readable_but_formulas_dressed_as_them_do_not():
    assert rules.neutralise_cell("@root:localhost") == "@root:localhost"
    assert rules.neutralise_cell("@bot_1.x:example.org:8448") == "@bot_1.x:example.org:8448"
    for hostile in ("@SUM(1+9)*cmd|' /C calc'!A0", "@a:b c", "@A1:B2|x", "@x:y!A1"):
        assert rules.neutralise_cell(hostile) == "'" + hostile


def test_csv_quotes_commas_quotes_and_newlines():
    reason = 'a, "b"\nc'
    rows = rules.csv_rows([(1, action_record(action="x", actor="@a:x", ts=1, reason=reason))])
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    assert list(csv.reader(io.StringIO(buf.getvalue())))[1][7] == reason


# -- the range proof --------------------------------------------------------------------------


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(b"leaf %d" % i) for i in range(n)]


def test_path_ranges_name_the_hashes_of_an_inclusion_proof():
    for size in (1, 2, 3, 7, 8, 13, 300):
        hashes = leaves(size)
        reader = merkle.MemoryNodeReader(hashes)
        for index in {0, size // 2, size - 1}:
            proof = merkle.inclusion_proof(index, size, reader)
            ranges = path_ranges(index, size)
            assert [merkle.root(hashes[a:b]) for a, b in ranges] == proof


def test_a_range_and_the_proofs_of_its_ends_rebuild_the_root():
    rng = random.Random(5)
    for size in [1, 2, 3, 5, 8, 9, 31, 256, 257, 600]:
        hashes = leaves(size)
        reader = merkle.MemoryNodeReader(hashes)
        top = merkle.tree_root(size, reader)
        for _ in range(12):
            start = rng.randrange(size)
            end = rng.randrange(start, size)
            first = merkle.inclusion_proof(start, size, reader)
            last = merkle.inclusion_proof(end, size, reader)
            part = hashes[start : end + 1]
            assert range_root(size, start, part, first, last) == top
            if len(part) > 1:  # a changed, dropped or swapped leaf no longer rebuilds it
                i = rng.randrange(len(part))
                changed = [*part[:i], merkle.leaf_hash(b"forged"), *part[i + 1 :]]
                assert range_root(size, start, changed, first, last) != top
                assert range_root(size, start, part[:-1], first, last) != top
                assert range_root(size, start, part[::-1], first, last) != top
            if first:  # a proof of the wrong length
                assert range_root(size, start, part, first[:-1], last) is None


def test_a_malformed_range_is_none_not_an_exception():
    hashes = leaves(8)
    reader = merkle.MemoryNodeReader(hashes)
    p = merkle.inclusion_proof(2, 8, reader)
    assert range_root(8, 2, [], p, p) is None
    assert range_root(8, 7, hashes[2:4], p, p) is None
    assert range_root(8, 2, [b"short"], p, p) is None
    assert range_root(8, 2, hashes[2:3], [b"x" * 31] * len(p), p) is None


# -- a trail from a store ---------------------------------------------------------------------


class Ledger:
    """A real store holding leaves, signed checkpoints over them (like the service's)."""

    def __init__(self, path) -> None:
        self.store = SqliteStore(path / "homeserver.db")
        self.store.open()
        self.signer = Ed25519Signer(ORIGIN, bytes(range(32)))
        self.vkey = self.signer.vkey()

    def append(self, *records) -> list[int]:
        def fn(conn):
            return [self.store.ledger_append_in(conn, r) for r in records]

        return self.store.transaction_sync(fn)

    def checkpoint(self) -> tuple[CheckpointRow, str, merkle.MemoryNodeReader]:
        entries = self.store.ledger_entries(0, self.store.ledger_size())
        reader = merkle.MemoryNodeReader([merkle.leaf_hash(e) for e in entries])
        size = len(entries)
        root = merkle.tree_root(size, reader)
        note = sign_checkpoint(Checkpoint(ORIGIN, size, root), [self.signer])
        return CheckpointRow(size, root, note, T0), note.decode(), reader

    def trail(self, q: TrailQuery, old: str | None = None) -> dict:
        cp, text, reader = self.checkpoint()
        doc = build_trail(self.store, q, checkpoint=cp, checkpoint_text=text, node=reader,
                          log_keys=[self.vkey], old_checkpoint_text=old)  # fmt: skip
        return orjson.loads(orjson.dumps(doc))  # as it travels

    def verify(self, doc, previous: bytes | None = None):
        return verify_trail(doc, [parse_vkey(self.vkey)], previous)


def act(ts: int, action: str = "admin.request", actor: str = "@root:localhost", **kw):
    return action_record(action=action, actor=actor, ts=ts, **kw)


def ev(i: int):
    return event_record(event_id=f"$e{i}", room_id="!r:localhost", sender="@alice:localhost",
                        type="m.room.message", state_key=None, origin_server_ts=T0 + i,
                        stream_pos=i, decision="accepted")  # fmt: skip


@pytest.fixture
def ledger(tmp_path):
    lg = Ledger(tmp_path)
    lg.append(act(T0 - 10 * MIN, "login.success", "@bob:localhost", subject="@bob:localhost"))
    lg.append(*[ev(i) for i in range(20)])
    lg.append(act(T0, reason="investigating #42", subject="@alice:localhost",
                  target="@alice:localhost", details={"route": "GET /x"}))  # fmt: skip
    lg.append(act(T0 + MIN, "account.lock", subject="@alice:localhost"))
    lg.append(*[ev(i) for i in range(20, 40)])
    lg.append(act(T0 + 2 * MIN, "login.failure", "@bob:localhost", subject="@bob:localhost"))
    lg.append(act(T0 + 20 * MIN, "login.success", "@carol:localhost"))
    yield lg
    lg.store.close()


def listed(doc) -> list[tuple[str, str]]:
    return [(r["record"]["action"], r["record"]["actor"]) for r in doc["records"]]


def test_the_trail_is_every_action_of_the_range_and_verifies(ledger):
    doc = ledger.trail(TrailQuery(since=T0, until=T0 + 2 * MIN))
    assert listed(doc) == [("admin.request", "@root:localhost"),
                           ("account.lock", "@root:localhost"),
                           ("login.failure", "@bob:localhost")]  # fmt: skip
    assert doc["records"][0]["record"]["reason"] == "investigating #42"
    proof = doc["proof"]
    # From the last action well before `since` to the first one well after `until`.
    assert (proof["start"], proof["end"], proof["end_reason"]) == (0, 44, "boundary")
    assert len(proof["entries"]) == 45
    check = ledger.verify(doc)
    assert check.ok, check.problems
    assert check.records == 3


def test_actor_and_subject_filters(ledger):
    doc = ledger.trail(TrailQuery(since=T0 - 20 * MIN, until=T0 + 30 * MIN,
                                  actor="@bob:localhost"))  # fmt: skip
    assert listed(doc) == [("login.success", "@bob:localhost"), ("login.failure", "@bob:localhost")]
    assert ledger.verify(doc).ok
    doc = ledger.trail(TrailQuery(since=T0 - 20 * MIN, until=T0 + 30 * MIN,
                                  subject="@alice:localhost"))  # fmt: skip
    assert [r["record"]["action"] for r in doc["records"]] == ["admin.request", "account.lock"]
    assert ledger.verify(doc).ok


def test_a_range_with_no_end_boundary_ends_at_the_checkpoint(ledger):
    doc = ledger.trail(TrailQuery(since=T0 + 10 * MIN, until=T0 + 60 * MIN))
    assert listed(doc) == [("login.success", "@carol:localhost")]
    assert doc["proof"]["end_reason"] == "checkpoint" and doc["proof"]["end"] == 44
    check = ledger.verify(doc)
    assert check.ok and any("not yet covered" in n for n in check.notes)


def test_pages_chain_and_each_verifies(ledger):
    q = dict(since=T0 - 20 * MIN, until=T0 + 30 * MIN, limit=2)
    seen, start = [], None
    for _ in range(10):
        doc = ledger.trail(TrailQuery(**q, start=start))
        assert ledger.verify(doc).ok, ledger.verify(doc).problems
        assert len(doc["records"]) <= 2
        seen += listed(doc)
        if "next_batch" not in doc:
            break
        start = int(doc["next_batch"])
        assert doc["proof"]["end"] + 1 == start
    assert len(seen) == 5
    # A page also ends after max_leaves leaves.
    doc = ledger.trail(TrailQuery(since=T0 - 20 * MIN, until=T0 + 30 * MIN, max_leaves=7))
    assert len(doc["proof"]["entries"]) == 7 and doc["next_batch"] == "7"
    assert ledger.verify(doc).ok


def pages(ledger, **q) -> list[dict]:
    out, start = [], None
    while True:
        out.append(ledger.trail(TrailQuery(**q, start=start)))
        if "next_batch" not in out[-1]:
            return out
        start = int(out[-1]["next_batch"])


def test_pages_are_checked_whole(ledger):
    key = [parse_vkey(ledger.vkey)]
    docs = pages(ledger, since=T0 - 20 * MIN, until=T0 + 30 * MIN, limit=2)
    assert len(docs) == 3
    check = verify_pages(docs, key)
    assert check.ok, check.problems
    assert check.records == 5
    for broken in (docs[:2], [docs[0], docs[2]], docs[1:], [docs[1], docs[0], docs[2]]):
        assert not verify_pages(broken, key).ok
    other = ledger.trail(TrailQuery(since=T0 - 20 * MIN, until=T0 + 31 * MIN, limit=2,
                                    start=int(docs[0]["next_batch"])))  # fmt: skip
    assert not verify_pages([docs[0], other, docs[2]], key).ok
    assert not verify_pages([], key).ok
    # A page signed by a newer checkpoint must prove the log grew from the one before.
    size = docs[0]["proof"]["tree_size"]
    ledger.append(act(T0 + 40 * MIN))
    q = dict(since=T0 - 20 * MIN, until=T0 + 30 * MIN, limit=2)
    newer = [ledger.trail(TrailQuery(**q, start=int(docs[0]["next_batch"])))]
    assert not verify_pages([docs[0], *newer], key).ok
    newer = [ledger.trail(TrailQuery(**q, start=int(docs[0]["next_batch"]),
                                     since_checkpoint_size=size))]  # fmt: skip
    newer.append(ledger.trail(TrailQuery(**q, start=int(newer[0]["next_batch"]))))
    check = verify_pages([docs[0], *newer], key)
    assert check.ok, check.problems


def test_from_beyond_the_tree_is_refused(ledger):
    with pytest.raises(TrailError):
        ledger.trail(TrailQuery(since=0, until=T0, start=45))
    with pytest.raises(TrailError):
        ledger.trail(TrailQuery(since=0, until=T0, since_checkpoint_size=46))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("how", ["drop_record", "change_record", "change_entry", "drop_entry",
                                 "hide_action_as_event", "swap_proof", "shift_start",
                                 "not_boundary", "resign"])  # fmt: skip
def test_tampering_fails_verification(ledger, how):
    doc = ledger.trail(TrailQuery(since=T0, until=T0 + 2 * MIN))
    proof = doc["proof"]
    if how == "drop_record":  # a record hidden from the auditor
        del doc["records"][1]
    elif how == "change_record":  # a reason rewritten in the list
        doc["records"][0]["record"]["reason"] = "routine"
    elif how == "change_entry":  # ... and in the leaf too
        i = doc["records"][0]["index"]
        doc["records"][0]["record"]["reason"] = "routine"
        proof["entries"][i] = b64(orjson.dumps(doc["records"][0]["record"],
                                               option=orjson.OPT_SORT_KEYS))  # fmt: skip
    elif how == "drop_entry":  # a leaf removed from the range, records kept
        del proof["entries"][10]
        proof["end"] -= 1
    elif how == "hide_action_as_event":  # the leaf of a record replaced with an event's
        i = doc["records"][1]["index"]
        proof["entries"][i] = b64(orjson.dumps(ev(99), option=orjson.OPT_SORT_KEYS))
        del doc["records"][1]
    elif how == "swap_proof":
        proof["start_inclusion_proof"], proof["end_inclusion_proof"] = (
            proof["end_inclusion_proof"], proof["start_inclusion_proof"])  # fmt: skip
    elif how == "shift_start":  # the range starts later, skipping the records before
        proof["entries"] = proof["entries"][22:]
        proof["start"] = 22
        doc["records"] = [r for r in doc["records"] if r["index"] >= 22]
    elif how == "not_boundary":
        proof["end_reason"] = "boundary"
        doc2 = ledger.trail(TrailQuery(since=T0 + 10 * MIN, until=T0 + 60 * MIN))
        doc2["proof"]["end_reason"] = "boundary"
        doc = doc2
    elif how == "resign":  # a checkpoint signed by someone else
        other = Ed25519Signer(ORIGIN, bytes(32))
        cp, _text, _r = ledger.checkpoint()
        proof["checkpoint"] = sign_checkpoint(Checkpoint(ORIGIN, cp.size, cp.root),
                                              [other]).decode()  # fmt: skip
    check = ledger.verify(doc)
    assert not check.ok, how
    assert check.problems


def test_hostile_documents_are_problems_not_crashes(ledger):
    good = ledger.trail(TrailQuery(since=T0, until=T0 + 2 * MIN))
    for doc in [[], {}, {"since": 0, "until": 1, "records": [], "proof": None},
                {**good, "since": "0"}, {**good, "proof": {**good["proof"], "entries": "x"}},
                {**good, "proof": {**good["proof"], "checkpoint": "junk\n"}},
                {**good, "proof": {**good["proof"], "start": -1}},
                {**good, "proof": {**good["proof"], "start_inclusion_proof": [1]}}]:  # fmt: skip
        check = verify_trail(doc, [parse_vkey(ledger.vkey)])
        assert not check.ok


def test_consistency_from_the_previous_audits_checkpoint(ledger):
    _cp, old_text, _r = ledger.checkpoint()
    old_size = _cp.size
    ledger.append(act(T0 + 21 * MIN), *[ev(i) for i in range(40, 50)])
    doc = ledger.trail(TrailQuery(since=T0, until=T0 + 30 * MIN, since_checkpoint_size=old_size),
                       old=old_text)  # fmt: skip
    assert doc["proof"]["consistency"]["old_size"] == old_size
    assert ledger.verify(doc).ok
    assert ledger.verify(doc, previous=old_text.encode()).ok
    # A previous checkpoint of another history (the log was rewritten) fails.
    forged = sign_checkpoint(Checkpoint(ORIGIN, old_size, merkle.leaf_hash(b"other")),
                             [ledger.signer])  # fmt: skip
    check = ledger.verify(doc, previous=forged)
    assert not check.ok and any("rewritten" in p for p in check.problems)
    # An auditor holding a previous checkpoint needs the proof.
    plain = ledger.trail(TrailQuery(since=T0, until=T0 + 30 * MIN))
    assert not ledger.verify(plain, previous=old_text.encode()).ok
