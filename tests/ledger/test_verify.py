"""``bastion ledger verify --data-dir`` on synthetic databases (bastion.ledger.verify): a clean
database passes; each kind of change to the leaves, the tiles, the checkpoints, the events and
the rows derived from them is found and named; pins and anchors catch a rollback; the database
is never written. The same checks on a real server's database: test_verify_tamper.py."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from bastion.cli import main
from bastion.core.canonical_json import canonical_json
from bastion.core.events import compute_content_hash, compute_event_id
from bastion.ledger.checkpoint import Checkpoint, sign_checkpoint
from bastion.ledger.merkle import MemoryNodeReader, leaf_hash
from bastion.ledger.note import Ed25519Signer
from bastion.ledger.records import (
    ACTION_DEVICE_KEYS_UPLOAD,
    action_record,
    entry_bytes,
    event_record,
)
from bastion.ledger.verify import (
    CHANGED,
    DELETED,
    FORKED,
    INSERTED,
    INVALID,
    REORDERED,
    ROLLED_BACK,
    LocalOptions,
    checkpoint_origin,
    classify_leaf_differences,
    verify_local,
)
from bastion.signing_key import load_or_create_signing_key
from bastion.storage.sqlite.store import SqliteStore

SERVER = "example.org"
ALICE = f"@alice:{SERVER}"


def _event(room_id: str, i: int, prev: str | None, rv: str) -> tuple[str, dict]:
    ev = {
        "type": "m.room.message", "room_id": room_id, "sender": ALICE,
        "content": {"msgtype": "m.text", "body": f"message {i}"}, "depth": i + 2,
        "origin_server_ts": 1_700_000_000_000 + i, "prev_events": [prev] if prev else [],
        "auth_events": [],
    }  # fmt: skip
    ev["hashes"] = {"sha256": compute_content_hash(ev)}
    ev["signatures"] = {SERVER: {"ed25519:a": "c2ln"}}
    return compute_event_id(ev, rv), ev


def build_synthetic(
    data_dir: Path, n_events: int, *, checkpoint_every: int = 0, room_version: str = "10",
    device_keys: int = 2,
) -> dict:  # fmt: skip
    """A data directory whose database holds ``n_events`` messages in one room (plus a member
    event), ``device_keys`` uploaded device keys with their records, the leaves of all of
    them, every full tile, the integrator's tree state and signed checkpoints (every
    ``checkpoint_every`` leaves and at the end), as the server would have written them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "bastion.toml").write_text(f'server_name = "{SERVER}"\n')
    key = load_or_create_signing_key(data_dir / "signing.key")
    db = data_dir / "homeserver.db"
    store = SqliteStore(db)
    store.open()
    store.close()
    room_id = f"!room:{SERVER}"
    origin = checkpoint_origin(SERVER)
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES (?,?,?,?)",
        (room_id, room_version, ALICE, 1),
    )
    entries: list[bytes] = []
    ev_rows = []
    member = {
        "type": "m.room.member", "room_id": room_id, "sender": ALICE, "state_key": ALICE,
        "content": {"membership": "join"}, "depth": 1, "origin_server_ts": 1_699_999_999_999,
        "prev_events": [], "auth_events": [],
    }  # fmt: skip
    member["hashes"] = {"sha256": compute_content_hash(member)}
    member_id = compute_event_id(member, room_version)
    all_events = [(member_id, member)]
    prev = member_id
    for i in range(n_events):
        eid, ev = _event(room_id, i, prev, room_version)
        all_events.append((eid, ev))
        prev = eid
    for pos, (eid, ev) in enumerate(all_events, start=1):
        sk = ev.get("state_key")
        ev_rows.append((eid, room_id, pos, ev["depth"], ev["type"], sk, ev["sender"],
                        ev["origin_server_ts"], json.dumps(ev).encode(), pos - 1))  # fmt: skip
        entries.append(entry_bytes(event_record(
            event_id=eid, room_id=room_id, sender=ev["sender"], type=ev["type"], state_key=sk,
            origin_server_ts=ev["origin_server_ts"], stream_pos=pos, decision="accepted",
        )))  # fmt: skip
    conn.executemany(
        "INSERT INTO events (event_id, room_id, stream_pos, depth, type, state_key, sender,"
        " origin_server_ts, json, ledger_idx) VALUES (?,?,?,?,?,?,?,?,?,?)",
        ev_rows,
    )
    conn.execute(
        "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES (?,?,?,?)",
        (room_id, "m.room.member", ALICE, member_id),
    )
    conn.execute(
        "INSERT INTO current_membership (room_id, user_id, membership, event_id, stream_pos)"
        " VALUES (?,?,?,?,?)",
        (room_id, ALICE, "join", member_id, 1),
    )
    conn.execute(
        "INSERT INTO membership_events (room_id, user_id, membership, event_id, stream_pos,"
        " sender) VALUES (?,?,?,?,?,?)",
        (room_id, ALICE, "join", member_id, 1, ALICE),
    )
    for d in range(device_keys):
        dev = f"DEV{d}"
        keys = {"user_id": ALICE, "device_id": dev, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                "keys": {f"ed25519:{dev}": base64.b64encode(os.urandom(32)).decode().rstrip("=")}}  # fmt: skip
        conn.execute(
            "INSERT INTO e2e_device_keys (user_id, device_id, key_json, ts) VALUES (?,?,?,?)",
            (ALICE, dev, json.dumps(keys), 5),
        )
        sha = base64.b64encode(hashlib.sha256(canonical_json(keys)).digest()).decode().rstrip("=")
        entries.append(entry_bytes(action_record(
            action=ACTION_DEVICE_KEYS_UPLOAD, actor=ALICE, ts=5, target=ALICE, subject=ALICE,
            nonce=f"n{d}", details={"device_id": dev, "keys_sha256": sha},
        )))  # fmt: skip
    rows = []
    for idx, entry in enumerate(entries):
        rec = json.loads(entry)
        kind = rec["kind"]
        ts = rec["origin_server_ts"] if kind == "event" else rec["ts"]
        rows.append((idx, kind, rec.get("event_id"), rec.get("subject"), rec.get("action"), ts,
                     entry))  # fmt: skip
    conn.executemany(
        "INSERT INTO ledger_entries (idx, kind, event_id, subject, action, ts, entry)"
        " VALUES (?,?,?,?,?,?,?)",
        rows,
    )
    reader = MemoryNodeReader([leaf_hash(e) for e in entries])
    size = len(entries)
    tiles = []
    level = 0
    while level * 8 < len(reader.levels):
        nodes = reader.levels[level * 8]
        for index in range(len(nodes) // 256):
            tiles.append((level, index, b"".join(nodes[index * 256 : (index + 1) * 256])))
        level += 1
    conn.executemany("INSERT INTO ledger_tiles (level, idx, data) VALUES (?,?,?)", tiles)
    edge = []
    start = 0
    for lv in range(size.bit_length() - 1, -1, -1):
        if size & (1 << lv):
            edge.append(reader(lv, start >> lv))
            start += 1 << lv
    conn.execute(
        "INSERT INTO ledger_tree_state (k, size, edge) VALUES (1, ?, ?)", (size, b"".join(edge))
    )
    signer = Ed25519Signer(origin, bytes(key.key))
    sizes = list(range(checkpoint_every, size, checkpoint_every)) if checkpoint_every else []
    notes = {}
    from bastion.ledger.merkle import tree_root

    for s in [*sizes, size]:
        root = tree_root(s, reader)
        note = sign_checkpoint(Checkpoint(origin, s, root), [signer])
        notes[s] = note
        conn.execute(
            "INSERT INTO ledger_checkpoints (size, root, note, ts) VALUES (?,?,?,?)",
            (s, root, note, 1_700_000_000_000 + s),
        )
    conn.commit()
    conn.close()
    return {"events": all_events, "size": size, "notes": notes, "signer": signer,
            "room_id": room_id, "member_id": member_id}  # fmt: skip


def verify(data_dir: Path, **kw) -> list:
    opts = LocalOptions(
        data_dir=data_dir, database=data_dir / "homeserver.db", server_name=SERVER,
        signing_key_path=data_dir / "signing.key", **kw,
    )  # fmt: skip
    return verify_local(opts).findings


def sql(data_dir: Path, statement: str, args: tuple = ()) -> None:
    conn = sqlite3.connect(data_dir / "homeserver.db")
    conn.execute(statement, args)
    conn.commit()
    conn.close()


def kinds(findings) -> set[tuple[str, str]]:
    return {(f.kind, f.table) for f in findings}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    d = tmp_path_factory.mktemp("synthetic") / "data"
    info = build_synthetic(d, 600, checkpoint_every=100)
    return d, info


@pytest.fixture
def synth(pristine, tmp_path):
    d, info = pristine
    copy = tmp_path / "data"
    shutil.copytree(d, copy)
    return copy, info


def test_clean_database_verifies(synth, capsys):
    d, info = synth
    assert verify(d) == []
    assert main(["ledger", "verify", "--data-dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: ") and f"leaves {info['size']}" in out


def test_json_report(synth, capsys):
    d, info = synth
    sql(d, "UPDATE events SET sender = '@mallory:example.org' WHERE stream_pos = 3")
    assert main(["ledger", "verify", "--data-dir", str(d), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["stats"]["leaves"] == info["size"]
    eid = info["events"][2][0]
    (f,) = [f for f in report["findings"] if f["table"] == "events"]
    assert (f["kind"], f["key"], f["event_id"], f["leaf"]) == (CHANGED, eid, eid, 2)
    assert "sender" in f["message"]


def test_the_database_is_never_written(synth):
    d, _ = synth
    db = d / "homeserver.db"
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    files = sorted(p.name for p in d.iterdir())
    assert verify(d) == []
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before
    # (no -wal, -shm or lock file of its own: the lock file is the server's, from when it ran)
    assert sorted(p.name for p in d.iterdir()) == files
    assert [f for f in files if f.startswith("homeserver.db")] == [
        "homeserver.db",
        "homeserver.db.lock",
    ]


def test_an_edited_leaf_in_a_full_tile_is_named(synth):
    d, info = synth
    other = entry_bytes({"v": 1, "kind": "action", "action": "login.success", "actor": ALICE,
                         "ts": 1})  # fmt: skip
    sql(d, "UPDATE ledger_entries SET entry = ?, kind = 'action', event_id = NULL,"
        " action = 'login.success', ts = 1 WHERE idx = 17", (other,))  # fmt: skip
    found = verify(d)
    assert any(f.kind == CHANGED and f.table == "ledger_entries" and f.leaf == 17 for f in found)
    assert any(f.kind == FORKED and f.table == "ledger_entries" for f in found)
    # The event it recorded now has no leaf: its row names a leaf that records something else.
    eid = info["events"][17][0]
    assert any(f.kind == CHANGED and f.table == "events" and f.event_id == eid
               and "not an event record" in f.message for f in found)  # fmt: skip


def test_a_deleted_leaf_row_is_a_gap(synth):
    d, info = synth
    sql(d, "DELETE FROM ledger_entries WHERE idx = 300")
    found = verify(d)
    gap = [f for f in found if f.kind == DELETED and f.table == "ledger_entries"]
    assert any(f.leaf == 300 and f.key == "300" for f in gap)
    # In the tiles the deletion reads as one leaf gone, the later ones shifted.
    assert any(f.leaf == 300 and "moved down" in f.message for f in gap)
    # The event it recorded is named.
    assert any(f.leaf == 300 and f.event_id == info["events"][300][0] for f in gap)
    assert not [f for f in found if f.kind == CHANGED]


def test_two_swapped_leaves_are_reordered(synth):
    d, _ = synth
    conn = sqlite3.connect(d / "homeserver.db")
    a = conn.execute("SELECT entry FROM ledger_entries WHERE idx = 10").fetchone()[0]
    b = conn.execute("SELECT entry FROM ledger_entries WHERE idx = 20").fetchone()[0]
    conn.execute("UPDATE ledger_entries SET idx = -1 WHERE idx = 10")
    conn.execute("UPDATE ledger_entries SET idx = 10 WHERE idx = 20")
    conn.execute("UPDATE ledger_entries SET idx = 20 WHERE idx = -1")
    conn.commit()
    conn.close()
    assert a != b
    found = verify(d)
    assert any(f.kind == REORDERED and f.table == "ledger_entries" and f.leaf == 10
               and "20" in f.message for f in found)  # fmt: skip


def test_a_leaf_in_the_partial_tail_is_located_between_checkpoints(synth):
    d, info = synth
    assert info["size"] > 512  # leaf 550 is past the last full tile
    sql(d, "UPDATE ledger_entries SET entry = CAST(REPLACE(CAST(entry AS TEXT), 'accepted',"
        " 'rejected') AS BLOB) WHERE idx = 550")  # fmt: skip
    found = verify(d)
    (fork,) = [f for f in found if f.kind == FORKED]
    assert fork.key == "500..599" and fork.leaf == 500
    eid = info["events"][550][0]
    assert any(f.table == "events" and f.event_id == eid and "decision" in f.message
               for f in found)  # fmt: skip


def test_an_edited_tile_and_checkpoint(synth):
    d, _ = synth
    sql(d, "UPDATE ledger_tiles SET data = zeroblob(8192) WHERE level = 0 AND idx = 1")
    sql(d, "UPDATE ledger_checkpoints SET note = CAST(REPLACE(CAST(note AS TEXT), 'example.org',"
        " 'example.com') AS BLOB) WHERE size = 200")  # fmt: skip
    found = verify(d)
    assert any(f.table == "ledger_entries" and f.leaf == 256 for f in found)  # named per leaf
    assert (INVALID, "ledger_checkpoints") in kinds(found)


def test_a_forged_checkpoint_signature(synth):
    d, info = synth
    forged = Ed25519Signer(checkpoint_origin(SERVER), b"\x01" * 32)
    from bastion.ledger.merkle import tree_root

    note = sign_checkpoint(Checkpoint(checkpoint_origin(SERVER), info["size"] + 5, b"\x00" * 32),
                           [forged])  # fmt: skip
    del tree_root
    sql(d, "INSERT INTO ledger_checkpoints (size, root, note, ts) VALUES (?,?,?,?)",
        (info["size"] + 5, b"\x00" * 32, note, 1))  # fmt: skip
    found = verify(d)
    assert any(f.kind == INVALID and f.key == str(info["size"] + 5) for f in found)
    assert any(f.kind == ROLLED_BACK for f in found)


def test_events_rows(synth):
    d, info = synth
    (e5, _), (e6, _), (e7, ev7), (e8, _) = info["events"][5:9]
    # A stream-position swap (two rows trade places in the timeline).
    sql(d, "UPDATE events SET stream_pos = -1 WHERE event_id = ?", (e5,))
    sql(d, "UPDATE events SET stream_pos = 6 WHERE event_id = ?", (e6,))
    sql(d, "UPDATE events SET stream_pos = 7 WHERE event_id = ?", (e5,))
    # Edited content (the hashes no longer match), a deleted row, an inserted row.
    ev7 = dict(ev7, content={"msgtype": "m.text", "body": "edited"})
    sql(d, "UPDATE events SET json = ? WHERE event_id = ?", (json.dumps(ev7), e7))
    sql(d, "DELETE FROM events WHERE event_id = ?", (e8,))
    _, forged = _event(info["room_id"], 9999, None, "10")
    fid = compute_event_id(forged, "10")
    sql(d, "INSERT INTO events (event_id, room_id, stream_pos, depth, type, sender,"
        " origin_server_ts, json) VALUES (?,?,?,?,?,?,?,?)",
        (fid, info["room_id"], 99999, forged["depth"], forged["type"], forged["sender"],
         forged["origin_server_ts"], json.dumps(forged)))  # fmt: skip
    found = {(f.kind, f.event_id) for f in verify(d) if f.table == "events"}
    assert found == {(REORDERED, e5), (REORDERED, e6), (CHANGED, e7), (DELETED, e8),
                     (INSERTED, fid)}  # fmt: skip


def test_swapped_event_json_is_reordered(synth):
    d, info = synth
    (a, eva), (b, evb) = info["events"][10], info["events"][11]
    sql(d, "UPDATE events SET json = ? WHERE event_id = ?", (json.dumps(evb), a))
    sql(d, "UPDATE events SET json = ? WHERE event_id = ?", (json.dumps(eva), b))
    found = [f for f in verify(d) if f.table == "events" and f.kind == REORDERED]
    assert {f.event_id for f in found} == {a, b}
    assert all("JSON of another event" in f.message for f in found)


def test_membership_and_state_rows(synth):
    d, info = synth
    sql(d, "UPDATE current_membership SET membership = 'leave'")
    sql(d, "UPDATE membership_events SET membership = 'ban'")
    sql(d, "UPDATE current_state SET event_id = ?", (info["events"][3][0],))
    found = verify(d)
    key = f"{info['room_id']} {ALICE}"
    assert any(f.table == "current_membership" and f.key == key and "'leave'" in f.message
               for f in found)  # fmt: skip
    assert (CHANGED, "membership_events") in kinds(found)
    assert (CHANGED, "current_state") in kinds(found)


def test_device_keys(synth):
    d, _ = synth
    sql(d, "UPDATE e2e_device_keys SET key_json = REPLACE(key_json, 'olm', 'olX')"
        " WHERE device_id = 'DEV0'")  # fmt: skip
    sql(d, "DELETE FROM e2e_device_keys WHERE device_id = 'DEV1'")
    sql(d, "INSERT INTO e2e_device_keys (user_id, device_id, key_json, ts) VALUES (?,?,?,?)",
        (ALICE, "EVIL", "{}", 1))  # fmt: skip
    found = {(f.kind, f.key) for f in verify(d) if f.table == "e2e_device_keys"}
    assert found == {(CHANGED, f"{ALICE} DEV0"), (DELETED, f"{ALICE} DEV1"),
                     (INSERTED, f"{ALICE} EVIL")}  # fmt: skip


def test_truncated_ledger_tables(synth):
    d, info = synth
    sql(d, "DELETE FROM ledger_entries")
    found = verify(d)
    assert any(f.kind == ROLLED_BACK and f.table == "ledger_entries" for f in found)
    # Each event's row names its leaf, which is gone.
    gone = {(f.event_id, f.leaf) for f in found if (f.kind, f.table) == (DELETED, "ledger_entries")
            and f.event_id is not None}  # fmt: skip
    assert gone == {(eid, i) for i, (eid, _) in enumerate(info["events"])}
    sql(d, "DELETE FROM ledger_checkpoints")
    sql(d, "DELETE FROM ledger_tiles")
    sql(d, "DELETE FROM ledger_tree_state")
    sql(d, "UPDATE events SET ledger_idx = NULL")
    found = verify(d)
    inserted = {f.event_id for f in found if (f.kind, f.table) == (INSERTED, "events")}
    assert inserted == {eid for eid, _ in info["events"]}
    assert any(f.kind == INSERTED and f.table == "e2e_device_keys" for f in found)


def test_rollback_against_a_pin(synth, tmp_path, capsys):
    d, info = synth
    pin = tmp_path / "pin"
    pin.write_bytes(info["notes"][info["size"]])
    assert main(["ledger", "verify", "--data-dir", str(d), "--checkpoint-pin", str(pin)]) == 0
    # Roll back: the last 50 leaves and their rows go, and the checkpoint that covered them.
    cut = info["size"] - 50
    sql(d, "DELETE FROM ledger_entries WHERE idx >= ?", (cut,))
    sql(d, "DELETE FROM ledger_checkpoints WHERE size > ?", (cut,))
    sql(d, "DELETE FROM e2e_device_keys")
    sql(d, "DELETE FROM events WHERE stream_pos > ?", (cut,))
    sql(d, "UPDATE ledger_tree_state SET size = 0, edge = x''")
    assert main(["ledger", "verify", "--data-dir", str(d)]) == 0  # consistent in itself
    capsys.readouterr()
    code = main(["ledger", "verify", "--data-dir", str(d), "--checkpoint-pin", str(pin), "--json"])
    assert code == 1
    (f,) = json.loads(capsys.readouterr().out)["findings"]
    assert (f["kind"], f["table"], f["key"]) == (ROLLED_BACK, "pin", str(pin))


def test_fork_against_a_pin(synth, tmp_path):
    d, info = synth
    signer = info["signer"]
    pin = tmp_path / "pin"
    pin.write_bytes(sign_checkpoint(Checkpoint(checkpoint_origin(SERVER), 300, b"\x07" * 32),
                                    [signer]))  # fmt: skip
    found = verify(d, pins=[(str(pin), pin.read_bytes())])
    assert [(f.kind, f.table) for f in found] == [(FORKED, "pin")]


def test_usage_errors(tmp_path, synth, capsys):
    d, _ = synth
    assert main(["ledger", "verify", "--data-dir", str(tmp_path / "nope")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["ledger", "verify", "--data-dir", str(empty)]) == 2
    bad = tmp_path / "bad.pin"
    bad.write_text("not a checkpoint\n")
    assert main(["ledger", "verify", "--data-dir", str(d), "--checkpoint-pin", str(bad)]) == 2
    other = tmp_path / "other.pin"
    other.write_bytes(sign_checkpoint(Checkpoint("elsewhere.example/log", 1, b"\x00" * 32),
                                      [Ed25519Signer("elsewhere.example/log", b"\x02" * 32)]))  # fmt: skip
    assert main(["ledger", "verify", "--data-dir", str(d), "--checkpoint-pin", str(other)]) == 2
    assert main(["ledger", "verify", "--data-dir", str(d), "--anchor-file",
                 str(tmp_path / "none.jsonl")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "no data directory" in err and "no database" in err and "not a signed checkpoint" in err


def test_classify_leaf_differences():
    s = [bytes([i]) * 32 for i in range(10)]
    assert classify_leaf_differences(s, s) == []
    deleted = s[:4] + s[5:]
    assert [(k, i) for k, i, _ in classify_leaf_differences(s, deleted)] == [(DELETED, 4)]
    inserted = s[:4] + [b"\xff" * 32] + s[4:]
    assert [(k, i) for k, i, _ in classify_leaf_differences(s, inserted)] == [(INSERTED, 4)]
    swapped = list(s)
    swapped[2], swapped[7] = swapped[7], swapped[2]
    assert [(k, i) for k, i, _ in classify_leaf_differences(s, swapped)] == [(REORDERED, 2)]
    changed = list(s)
    changed[3] = b"\xee" * 32
    assert [(k, i) for k, i, _ in classify_leaf_differences(s, changed, 100)] == [(CHANGED, 103)]


def test_post_quantum_signatures(synth):
    """With the ML-DSA-44 key in the data directory, its subtree/v1 signature on each
    checkpoint is checked too: a broken one is a finding even though Ed25519 verifies."""
    from bastion.ledger.checkpoint import format_checkpoint
    from bastion.ledger.cosignature import MLDSA44Cosigner
    from bastion.ledger.note import Note, format_note, parse_note

    d, info = synth
    seed = bytes(range(32))
    (d / "ledger-mldsa44.key").write_text(f"ml-dsa-44 {base64.b64encode(seed).decode()}\n")
    pq = MLDSA44Cosigner(checkpoint_origin(SERVER), seed)
    conn = sqlite3.connect(d / "homeserver.db")
    for size, root in conn.execute("SELECT size, root FROM ledger_checkpoints").fetchall():
        text = format_checkpoint(Checkpoint(checkpoint_origin(SERVER), size, root))
        note = format_note(Note(text, (info["signer"].sign(text), pq.cosign(text, 1))))
        conn.execute("UPDATE ledger_checkpoints SET note = ? WHERE size = ?", (note, size))
    conn.commit()
    assert verify(d) == []
    note = parse_note(conn.execute("SELECT note FROM ledger_checkpoints WHERE size = 300")
                      .fetchone()[0])  # fmt: skip
    ed, mldsa = note.signatures
    broken = type(mldsa)(mldsa.name, mldsa.key_id, mldsa.signature[:-1] + b"\x00")
    conn.execute("UPDATE ledger_checkpoints SET note = ? WHERE size = 300",
                 (format_note(Note(note.text, (ed, broken))),))  # fmt: skip
    conn.commit()
    conn.close()
    (f,) = verify(d)
    assert (f.kind, f.table, f.key) == (INVALID, "ledger_checkpoints", "300")
    assert "does not verify" in f.message


def test_witness_cosignatures(synth, capsys):
    from bastion.ledger.cosignature import Ed25519Cosigner
    from bastion.ledger.note import format_signature_line, parse_note

    d, info = synth
    w = Ed25519Cosigner("w.example", b"\x09" * 32)
    (d / "bastion.toml").write_text(
        f'server_name = "{SERVER}"\n'
        f'ledger_witnesses = [{{url = "https://w.example/", vkey = "{w.vkey()}"}}]\n'
    )
    text = parse_note(info["notes"][info["size"]]).text
    line = format_signature_line(w.cosign(text, 1_700_000_000)).encode()
    sql(d, "INSERT INTO ledger_cosignatures (size, witness, line, ts) VALUES (?,?,?,?)",
        (info["size"], "w.example", line, 1))  # fmt: skip
    assert main(["ledger", "verify", "--data-dir", str(d)]) == 0
    other = parse_note(info["notes"][100]).text
    sql(d, "UPDATE ledger_cosignatures SET line = ?",
        (format_signature_line(w.cosign(other, 1_700_000_000)).encode(),))  # fmt: skip
    capsys.readouterr()
    assert main(["ledger", "verify", "--data-dir", str(d), "--json"]) == 1
    (f,) = json.loads(capsys.readouterr().out)["findings"]
    assert (f["kind"], f["table"], f["key"]) == (INVALID, "ledger_cosignatures",
                                                 f"{info['size']} w.example")  # fmt: skip


def test_an_unreadable_schema_is_a_finding(synth):
    d, _ = synth
    sql(d, "ALTER TABLE events DROP COLUMN ledger_idx")
    (f,) = verify(d)
    assert (f.kind, f.table) == (INVALID, "database") and "ledger_idx" in f.message


def test_progress_bar_only_on_a_terminal(synth, monkeypatch, capsys):
    import io

    d, _ = synth

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    monkeypatch.setattr("sys.stderr", tty)
    assert main(["ledger", "verify", "--data-dir", str(d)]) == 0
    assert "leaves" in tty.getvalue() and "rows" in tty.getvalue()
    tty.truncate(0)
    tty.seek(0)
    assert main(["ledger", "verify", "--data-dir", str(d), "--json"]) == 0
    assert tty.getvalue() == ""


def test_checkpoints_across_a_signing_key_rotation(synth):
    """Checkpoints signed before ``bastion admin rotate-signing-key`` verify with the retired
    key (kept in the database), later ones with the new key file; a retired key removed from
    the database leaves the old checkpoints unverifiable, which is a finding."""
    from bastion.ledger.merkle import tree_root

    d, info = synth
    assert main(["admin", "rotate-signing-key", "--data-dir", str(d)]) == 0
    conn = sqlite3.connect(d / "homeserver.db")
    entries = [bytes(r[0]) for r in conn.execute("SELECT entry FROM ledger_entries ORDER BY idx")]
    assert json.loads(entries[-1])["action"] == "signing_key.rotate"
    size = len(entries)
    root = tree_root(size, MemoryNodeReader([leaf_hash(e) for e in entries]))
    new_key = load_or_create_signing_key(d / "signing.key")
    signer = Ed25519Signer(checkpoint_origin(SERVER), bytes(new_key.key))
    conn.execute("INSERT INTO ledger_checkpoints (size, root, note, ts) VALUES (?,?,?,?)",
                 (size, root, sign_checkpoint(Checkpoint(checkpoint_origin(SERVER), size, root),
                                              [signer]), 1))  # fmt: skip
    conn.commit()
    conn.close()
    assert verify(d) == []
    sql(d, "DELETE FROM local_old_signing_keys")
    found = verify(d)
    assert {(f.kind, f.table) for f in found} == {(INVALID, "ledger_checkpoints")}
    assert len(found) == len(info["notes"])  # every checkpoint signed with the retired key


def test_worker_processes_find_the_same(synth, monkeypatch):
    """Large databases check their events in worker processes: the same findings."""
    import bastion.ledger.verify as verify_module

    d, info = synth
    eid = info["events"][400][0]
    sql(d, "UPDATE events SET sender = '@mallory:example.org' WHERE event_id = ?", (eid,))
    sql(d, "DELETE FROM events WHERE event_id = ?", (info["events"][500][0],))
    alone = verify(d)
    monkeypatch.setattr(verify_module, "POOL_THRESHOLD", 1)
    pooled = verify(d, workers=2)
    assert sorted(map(repr, pooled)) == sorted(map(repr, alone))
    assert {(f.kind, f.event_id) for f in pooled if f.table == "events"} == {
        (CHANGED, eid),
        (DELETED, info["events"][500][0]),
    }


def test_a_database_from_before_the_ledger_is_a_usage_error(tmp_path, capsys):
    from bastion.storage.sqlite import migrations as mig

    d = tmp_path / "old"
    d.mkdir()
    conn = sqlite3.connect(d / "homeserver.db")
    mig.migrate(conn, str(d / "homeserver.db"), mig.migrations()[:3])
    conn.close()
    assert main(["ledger", "verify", "--data-dir", str(d)]) == 2
    assert "no ledger yet (schema version 3" in capsys.readouterr().err


def test_dropped_ledger_tables(synth, capsys):
    d, _ = synth
    sql(d, "DROP TABLE ledger_tiles")
    assert [(f.kind, f.table) for f in verify(d)] == [(DELETED, "ledger_tiles")]


def test_a_changed_tree_state_alone(synth):
    d, _ = synth
    sql(d, "UPDATE ledger_tree_state SET edge = zeroblob(LENGTH(edge))")
    found = verify(d)
    assert {(f.kind, f.table) for f in found} == {(CHANGED, "ledger_tree_state")}
    assert "[0, 512)" in found[0].message and len(found) == 6  # 603 = 512+64+16+8+2+1


def test_values_of_the_wrong_type(synth):
    d, _ = synth
    sql(d, "UPDATE ledger_entries SET entry = CAST(entry AS TEXT) WHERE idx = 5")
    assert [(f.kind, f.table, f.leaf) for f in verify(d)] == [(CHANGED, "ledger_entries", 5)]
    sql(d, "UPDATE ledger_checkpoints SET note = 42 WHERE size = 100")
    assert (CHANGED, "ledger_checkpoints") in kinds(verify(d))
    sql(d, "UPDATE ledger_checkpoints SET note = 'text' WHERE size = 100")
    assert (INVALID, "database") in kinds(verify(d))  # a finding, not a traceback


def test_a_remote_event_emptied_later_is_named_but_not_one_redacted_on_receipt():
    """A received event whose content hash failed is stored redacted (PDU check 3) and its
    leaf says so; a remote event that arrived whole and lost its content later is a change."""
    from bastion.core.events import redact
    from bastion.ledger.records import entry_bytes, event_record
    from bastion.ledger.verify import check_event_rows

    rv, room_id, sender = "10", "!r:remote.example", "@bob:remote.example"
    ev = {"type": "m.room.message", "room_id": room_id, "sender": sender, "depth": 3,
          "content": {"msgtype": "m.text", "body": "hi"}, "origin_server_ts": 5,
          "prev_events": [], "auth_events": []}  # fmt: skip
    ev["hashes"] = {"sha256": compute_content_hash(ev)}
    eid = compute_event_id(ev, rv)
    emptied = redact(ev, rv)
    assert "body" not in emptied["content"] and compute_event_id(emptied, rv) == eid
    base = {
        "event_id": eid,
        "room_id": room_id,
        "sender": sender,
        "type": ev["type"],
        "state_key": None,
        "origin_server_ts": 5,
        "stream_pos": 7,
        "decision": "accepted",
    }

    def row(record: dict) -> tuple:
        return (1, eid, room_id, 7, 3, ev["type"], None, sender, 5, json.dumps(emptied), 0, 0,
                None, rv, 0, entry_bytes(record), 0)  # fmt: skip

    # (decided once the records are read: a change unless an erasure or purge record lists it,
    # tests/storage/sqlite/test_event_contents.py)
    res = check_event_rows([row(event_record(**base))], SERVER)
    assert res.findings == []
    assert [(e, "arrived whole" in m) for e, _, m in res.stripped] == [(eid, True)]
    ok = check_event_rows([row(event_record(**base, redacted_on_receipt=True))], SERVER)
    assert (ok.findings, ok.stripped) == ([], [])
