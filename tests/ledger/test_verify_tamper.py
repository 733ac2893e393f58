"""Tamper tests on a real server's database (issue 8, "What it must show"): a Bastion server runs
with users who log in, publish device and cross-signing keys, create a room, join it and send
messages, while the ledger signs checkpoints and writes its file anchor; then the server stops
and, on a copy of its data directory each time, one change is made with sqlite3 and
``bastion ledger verify`` must exit 1 and name it precisely: an edited event JSON, an edited
membership, a deleted event row, a forged event, two swapped rows, a deleted login record, a
changed device key, the ledger's own tables emptied, and the whole database rolled back to an
older copy (seen against a pinned newer checkpoint and against the anchor file). The untouched
copy verifies clean (exit 0)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from bastion.cli import main
from bastion.core.events import compute_content_hash, compute_event_id
from bastion.ledger.verify import CHANGED, DELETED, INSERTED, REORDERED, ROLLED_BACK
from tests.support.e2ee import Device, cross_signing_body, cross_signing_set
from tests.support.federation import run
from tests.support.harness import Client, ServerThread

V3 = "/_matrix/client/v3"
PASSWORD = "correct horse battery"


def _wait_covered(srv: ServerThread, timeout: float = 15.0) -> bytes:
    """Wait until a signed checkpoint covers every leaf; return it as served (the pin a
    witness or an auditor would keep)."""
    store = srv.hs.store

    async def size() -> int:
        return store.ledger_size()

    deadline = time.monotonic() + timeout
    client = Client(srv.base_url)
    while time.monotonic() < deadline:
        want = run(srv, size())
        cp = srv.hs.ledger.latest
        if cp is not None and cp.size >= want:
            r = client.request("GET", "/_bastion/ledger/v1/checkpoint", token=None)
            assert r.status == 200
            return r.body["_raw"]
        time.sleep(0.05)
    pytest.fail("no checkpoint covers the ledger")


def _login(client: Client, user: str, password: str) -> int:
    r = client.request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }, token=None)  # fmt: skip
    return r.status


def _send(c: Client, room: str, txn: str, body: str) -> str:
    r = c.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/{txn}",
                  {"msgtype": "m.text", "body": body})  # fmt: skip
    assert r.status == 200, r.body
    return r.body["event_id"]


def build_scenario(base: Path) -> dict:
    """Run a server through the scenario of the module docstring; stop it; return what the
    tests need: the data directory, an older copy of its database, the newer pinned checkpoint,
    event IDs and users."""
    data = base / "data"
    # (the scenario's leaves are laid out by hand: no new-login notice rooms, tested in
    # tests/guard, among them)
    srv = ServerThread(data, ledger_checkpoint_interval=0.2, ledger_anchor_interval=0.2,
                       guard={"login": {"new_login_notices": False}}).start()  # fmt: skip
    try:
        c = Client(srv.base_url)
        alice = c.register("alice", PASSWORD)
        bob = c.register("bob", PASSWORD)
        assert _login(c, "alice", PASSWORD) == 200
        assert _login(c, "alice", "wrong password!") == 403
        dev = Device(alice)
        assert dev.upload(device_keys=dev.device_keys()).status == 200
        msk, ssk, usk = cross_signing_set(alice.user_id)
        r = alice.request("POST", f"{V3}/keys/device_signing/upload",
                          cross_signing_body(msk, ssk, usk))  # fmt: skip
        assert r.status == 200, r.body
        r = alice.request("POST", f"{V3}/createRoom", {"preset": "public_chat", "name": "t"})
        assert r.status == 200, r.body
        room = r.body["room_id"]
        assert bob.request("POST", f"{V3}/rooms/{room}/join", {}).status == 200
        messages = [_send(alice, room, f"a{i}", f"hello {i}") for i in range(6)]
        # A redacted message (its row rewritten to the redacted form) and a device that logs
        # out (its keys deleted, with a record): neither is a finding.
        redacted = _send(alice, room, "r", "regrettable")
        r = alice.request("PUT", f"{V3}/rooms/{room}/redact/{redacted}/x", {"reason": "oops"})
        assert r.status == 200, r.body
        r = c.request("POST", f"{V3}/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"},
            "password": PASSWORD,
        }, token=None)  # fmt: skip
        laptop = Client(srv.base_url, r.body["access_token"])
        laptop.user_id, laptop.device_id = r.body["user_id"], r.body["device_id"]
        gone = Device(laptop)
        assert gone.upload(device_keys=gone.device_keys()).status == 200
        assert laptop.request("POST", f"{V3}/logout", {}).status == 200
        _wait_covered(srv)
        run(srv, srv.hs.ledger.anchor_all())
        # An older copy of the whole database, taken as a backup would be.
        old = base / "old.db"
        src = sqlite3.connect(data / "homeserver.db")
        dst = sqlite3.connect(old)
        src.backup(dst)
        dst.close()
        src.close()
        messages += [_send(bob, room, f"b{i}", f"reply {i}") for i in range(4)]
        pin = _wait_covered(srv)
        run(srv, srv.hs.ledger.anchor_all())
    finally:
        srv.stop()
    (base / "pin.checkpoint").write_bytes(pin)
    return {
        "data": data, "old": old, "pin": base / "pin.checkpoint", "room": room,
        "alice": alice.user_id, "bob": bob.user_id, "device": dev.device_id,
        "messages": messages, "anchors": data / "ledger-anchors.jsonl", "redacted": redacted,
    }  # fmt: skip


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    return build_scenario(tmp_path_factory.mktemp("tamper"))


@pytest.fixture
def copy(scenario, tmp_path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(scenario["data"], d)
    return d


def db(d: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(d / "homeserver.db")
    conn.row_factory = sqlite3.Row
    return conn


def tamper(d: Path, statement: str, args: tuple = ()) -> None:
    conn = db(d)
    conn.execute(statement, args)
    conn.commit()
    conn.close()


def verify(d: Path, capsys, *extra: str) -> tuple[int, list[dict]]:
    capsys.readouterr()
    code = main(["ledger", "verify", "--data-dir", str(d), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)["findings"]


def leaf_of(d: Path, event_id: str) -> int:
    conn = db(d)
    try:
        return conn.execute("SELECT ledger_idx FROM events WHERE event_id = ?",
                            (event_id,)).fetchone()[0]  # fmt: skip
    finally:
        conn.close()


def test_the_untouched_database_verifies(copy, scenario, capsys):
    code, findings = verify(copy, capsys, "--checkpoint-pin", str(scenario["pin"]),
                            "--anchor-file", str(scenario["anchors"]))  # fmt: skip
    assert (code, findings) == (0, [])
    assert main(["ledger", "verify", "--data-dir", str(copy)]) == 0
    assert capsys.readouterr().out.startswith("OK: ")


def test_edited_event_json(copy, scenario, capsys):
    eid = scenario["messages"][2]
    conn = db(copy)
    ev = json.loads(
        conn.execute("SELECT json FROM events WHERE event_id = ?", (eid,)).fetchone()[0]
    )
    conn.close()
    ev["content"]["body"] = "something else"
    tamper(copy, "UPDATE events SET json = ? WHERE event_id = ?", (json.dumps(ev), eid))
    code, findings = verify(copy, capsys)
    assert code == 1
    assert [(f["kind"], f["table"], f["key"], f["event_id"], f["leaf"]) for f in findings] == [
        (CHANGED, "events", eid, eid, leaf_of(copy, eid))
    ]
    assert "content hash" in findings[0]["message"]


def test_edited_event_json_with_recomputed_hashes(copy, scenario, capsys):
    """An editor who recomputes the content hash still cannot keep the event ID."""
    eid = scenario["messages"][3]
    conn = db(copy)
    ev = json.loads(
        conn.execute("SELECT json FROM events WHERE event_id = ?", (eid,)).fetchone()[0]
    )
    conn.close()
    ev["content"]["body"] = "rewritten history"
    ev["hashes"] = {"sha256": compute_content_hash(ev)}
    tamper(copy, "UPDATE events SET json = ? WHERE event_id = ?", (json.dumps(ev), eid))
    code, findings = verify(copy, capsys)
    assert code == 1
    (f,) = findings
    assert (f["kind"], f["key"]) == (CHANGED, eid)
    assert compute_event_id(ev, "12") in f["message"]


def test_edited_membership(copy, scenario, capsys):
    tamper(copy, "UPDATE current_membership SET membership = 'leave' WHERE user_id = ?",
           (scenario["bob"],))  # fmt: skip
    code, findings = verify(copy, capsys)
    assert code == 1
    assert [(f["kind"], f["table"], f["key"]) for f in findings] == [
        (CHANGED, "current_membership", f"{scenario['room']} {scenario['bob']}")
    ]
    assert "'leave'" in findings[0]["message"] and "'join'" in findings[0]["message"]


def test_deleted_event_row(copy, scenario, capsys):
    eid = scenario["messages"][1]
    leaf = leaf_of(copy, eid)
    tamper(copy, "DELETE FROM events WHERE event_id = ?", (eid,))
    code, findings = verify(copy, capsys)
    assert code == 1
    assert [(f["kind"], f["table"], f["event_id"], f["leaf"]) for f in findings] == [
        (DELETED, "events", eid, leaf)
    ]


def test_forged_event(copy, scenario, capsys):
    """A well-formed event (valid hashes and ID) inserted with no leaf."""
    eid = scenario["messages"][0]
    conn = db(copy)
    row = conn.execute("SELECT * FROM events WHERE event_id = ?", (eid,)).fetchone()
    ev = json.loads(row["json"])
    ev["content"]["body"] = "I never said this"
    ev["origin_server_ts"] += 1
    ev["hashes"] = {"sha256": compute_content_hash(ev)}
    forged = compute_event_id(ev, "12")
    conn.execute(
        "INSERT INTO events (event_id, room_id, stream_pos, depth, type, sender, origin_server_ts,"
        " json) VALUES (?,?,?,?,?,?,?,?)",
        (forged, row["room_id"], 1_000_000, row["depth"], "m.room.message", row["sender"],
         ev["origin_server_ts"], json.dumps(ev)),
    )  # fmt: skip
    conn.commit()
    conn.close()
    code, findings = verify(copy, capsys)
    assert code == 1
    assert [(f["kind"], f["table"], f["event_id"]) for f in findings] == [
        (INSERTED, "events", forged)
    ]


def test_swapped_rows(copy, scenario, capsys):
    a, b = scenario["messages"][4], scenario["messages"][5]
    conn = db(copy)
    pa = conn.execute("SELECT stream_pos FROM events WHERE event_id = ?", (a,)).fetchone()[0]
    pb = conn.execute("SELECT stream_pos FROM events WHERE event_id = ?", (b,)).fetchone()[0]
    conn.execute("UPDATE events SET stream_pos = -1 WHERE event_id = ?", (a,))
    conn.execute("UPDATE events SET stream_pos = ? WHERE event_id = ?", (pa, b))
    conn.execute("UPDATE events SET stream_pos = ? WHERE event_id = ?", (pb, a))
    conn.commit()
    conn.close()
    code, findings = verify(copy, capsys)
    assert code == 1
    assert sorted((f["kind"], f["event_id"]) for f in findings) == sorted(
        [(REORDERED, a), (REORDERED, b)]
    )
    assert all("stream_pos" in f["message"] for f in findings)


def test_swapped_event_json(copy, scenario, capsys):
    a, b = scenario["messages"][6], scenario["messages"][7]
    conn = db(copy)
    ja = conn.execute("SELECT json FROM events WHERE event_id = ?", (a,)).fetchone()[0]
    jb = conn.execute("SELECT json FROM events WHERE event_id = ?", (b,)).fetchone()[0]
    conn.execute("UPDATE events SET json = ? WHERE event_id = ?", (jb, a))
    conn.execute("UPDATE events SET json = ? WHERE event_id = ?", (ja, b))
    conn.commit()
    conn.close()
    code, findings = verify(copy, capsys)
    assert code == 1
    assert sorted((f["kind"], f["event_id"]) for f in findings) == sorted(
        [(REORDERED, a), (REORDERED, b)]
    )


def test_deleted_login_record(copy, scenario, capsys):
    conn = db(copy)
    (idx,) = conn.execute(
        "SELECT idx FROM ledger_entries WHERE action = 'login.success' AND subject = ?",
        (scenario["alice"],),
    ).fetchone()
    conn.close()
    tamper(copy, "DELETE FROM ledger_entries WHERE idx = ?", (idx,))
    code, findings = verify(copy, capsys)
    assert code == 1
    named = [f for f in findings if f["table"] == "ledger_entries" and f["leaf"] == idx]
    assert named and all(f["kind"] == DELETED for f in named)
    assert named[0]["key"] == str(idx)


def test_changed_device_key(copy, scenario, capsys):
    conn = db(copy)
    key = json.loads(conn.execute("SELECT key_json FROM e2e_device_keys WHERE device_id = ?",
                                  (scenario["device"],)).fetchone()[0])  # fmt: skip
    conn.close()
    curve = f"curve25519:{scenario['device']}"
    key["keys"][curve] = "A" * 43  # the attacker's Curve25519 key
    tamper(copy, "UPDATE e2e_device_keys SET key_json = ? WHERE device_id = ?",
           (json.dumps(key), scenario["device"]))  # fmt: skip
    code, findings = verify(copy, capsys)
    assert code == 1
    assert [(f["kind"], f["table"], f["key"]) for f in findings] == [
        (CHANGED, "e2e_device_keys", f"{scenario['alice']} {scenario['device']}")
    ]


def test_changed_cross_signing_key(copy, scenario, capsys):
    tamper(copy, "UPDATE e2e_cross_signing_keys SET public_key = 'forged' WHERE key_type ="
           " 'master' AND user_id = ?", (scenario["alice"],))  # fmt: skip
    code, findings = verify(copy, capsys)
    assert code == 1
    assert [(f["kind"], f["table"], f["key"]) for f in findings] == [
        (CHANGED, "e2e_cross_signing_keys", f"{scenario['alice']} master")
    ]


def test_truncated_ledger_tables(copy, scenario, capsys):
    conn = db(copy)
    n_events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    for table in ("ledger_entries", "ledger_tiles", "ledger_tree_state", "ledger_checkpoints",
                  "ledger_cosignatures", "ledger_anchors"):  # fmt: skip
        conn.execute(f"DELETE FROM {table}")  # noqa: S608
    conn.execute("UPDATE events SET ledger_idx = NULL")
    conn.commit()
    conn.close()
    code, findings = verify(copy, capsys, "--checkpoint-pin", str(scenario["pin"]))
    assert code == 1
    kinds = {(f["kind"], f["table"]) for f in findings}
    assert (ROLLED_BACK, "pin") in kinds
    inserted = [f for f in findings if (f["kind"], f["table"]) == (INSERTED, "events")]
    assert len(inserted) == n_events
    assert {(INSERTED, "e2e_device_keys"), (INSERTED, "e2e_cross_signing_keys")} <= kinds
    # Without the pin the emptied ledger still shows: every event, every key unrecorded.
    code, findings = verify(copy, capsys)
    assert code == 1 and len([f for f in findings if f["kind"] == INSERTED]) >= n_events


def test_rolled_back_database(copy, scenario, capsys):
    (copy / "homeserver.db").unlink()
    shutil.copy(scenario["old"], copy / "homeserver.db")
    # Consistent in itself: only what was kept elsewhere shows the rollback.
    code, findings = verify(copy, capsys)
    assert (code, findings) == (0, [])
    code, findings = verify(copy, capsys, "--checkpoint-pin", str(scenario["pin"]))
    assert code == 1
    assert [(f["kind"], f["table"], f["key"]) for f in findings] == [
        (ROLLED_BACK, "pin", str(scenario["pin"]))
    ]
    code, findings = verify(copy, capsys, "--anchor-file", str(scenario["anchors"]))
    assert code == 1
    assert {(f["kind"], f["table"]) for f in findings} == {(ROLLED_BACK, "anchor")}


def test_content_removed_without_a_redaction(copy, scenario, capsys):
    """A local message emptied into its redacted form, as if redacted, with no redaction."""
    from bastion.core.events import redact

    eid = scenario["messages"][8]
    conn = db(copy)
    ev = json.loads(
        conn.execute("SELECT json FROM events WHERE event_id = ?", (eid,)).fetchone()[0]
    )
    conn.close()
    tamper(copy, "UPDATE events SET json = ? WHERE event_id = ?",
           (json.dumps(redact(ev, "12")), eid))  # fmt: skip
    code, findings = verify(copy, capsys)
    assert code == 1
    assert [(f["kind"], f["key"]) for f in findings] == [(CHANGED, eid)]
    assert "without a redaction event" in findings[0]["message"]
    # Naming a redaction that does not redact it is no better.
    tamper(copy, "UPDATE events SET redacted_because = ? WHERE event_id = ?",
           (scenario["messages"][0], eid))  # fmt: skip
    code, findings = verify(copy, capsys)
    assert [(f["kind"], f["key"]) for f in findings] == [(CHANGED, eid)]
    assert "is not a redaction of it" in findings[0]["message"]


def test_a_redacted_event_keeps_verifying(copy, scenario, capsys):
    conn = db(copy)
    row = conn.execute("SELECT json, redacted_because FROM events WHERE event_id = ?",
                       (scenario["redacted"],)).fetchone()  # fmt: skip
    conn.close()
    assert row["redacted_because"] is not None
    assert "body" not in json.loads(row["json"])["content"]
    code, findings = verify(copy, capsys)
    assert (code, findings) == (0, [])


def test_edited_login_record(copy, scenario, capsys):
    """A failed login's record rewritten (its origin, which no column copies): the tree no
    longer matches the checkpoints that covered it, and the finding brackets the leaf."""
    conn = db(copy)
    idx, entry = conn.execute(
        "SELECT idx, entry FROM ledger_entries WHERE action = 'login.failure'"
    ).fetchone()
    conn.close()
    record = json.loads(entry)
    record["origin"] = "203.0.113.9"
    from bastion.core.canonical_json import canonical_json

    tamper(copy, "UPDATE ledger_entries SET entry = ? WHERE idx = ?", (canonical_json(record), idx))
    code, findings = verify(copy, capsys)
    assert code == 1
    # The signed checkpoints and the anchored ones no longer match the tree.
    assert {(f["kind"], f["table"]) for f in findings} == {
        (CHANGED, "ledger_entries"),
        ("forked", "ledger_entries"),
        ("forked", "ledger_anchors"),
    }
    for f in findings:  # each leaf range brackets the leaf; the integrator's edge narrowly
        if f["table"] == "ledger_entries":
            first, _, last = f["key"].partition("..")
            assert int(first) <= idx <= int(last or first)
    narrow = next(f for f in findings if f["kind"] == CHANGED)["key"].partition("..")
    assert int(narrow[2] or narrow[0]) - int(narrow[0]) < 16


def test_edited_anchor_receipt(copy, scenario, capsys):
    conn = db(copy)
    aid, receipt = conn.execute("SELECT id, receipt FROM ledger_anchors ORDER BY id").fetchone()
    conn.close()
    forged = json.loads(receipt)
    forged["entry"] = forged["entry"].replace('"n":', '"n": ')
    tamper(copy, "UPDATE ledger_anchors SET receipt = ? WHERE id = ?", (json.dumps(forged), aid))
    code, findings = verify(copy, capsys)
    assert code == 1
    assert [(f["kind"], f["table"], f["key"]) for f in findings] == [
        (CHANGED, "ledger_anchors", f"file {aid}")
    ]
