"""The running ledger (bastion.ledger.service): checkpoints while there are leaves and none
while idle, signatures that verify with the published vkeys, a tree that continues across
restarts and key rotations, a durable commit before a checkpoint exists, and a halt instead
of a signature when the stored tree was tampered with or the database rolled back."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import threading
import time

import pytest

from bastion.ledger import merkle
from bastion.ledger.checkpoint import parse_checkpoint
from bastion.ledger.note import parse_note, parse_vkey, verify_note
from bastion.ledger.records import ACTION_LEDGER_CHECKPOINT_HALT, action_record
from bastion.ledger.service import checkpoint_origin
from bastion.storage.sqlite.store import SqliteStore
from tests.support.federation import run
from tests.support.harness import ServerThread

FAST = {"ledger_checkpoint_interval": 0.2}


def start(data_dir, **overrides) -> ServerThread:
    return ServerThread(data_dir, **{**FAST, **overrides}).start()


def append(srv: ServerThread, n: int, **fields) -> int:
    """Append ``n`` action leaves through the store (as any recorded action would); returns the
    new ledger size."""
    store = srv.hs.store

    def write(conn) -> int:
        last = -1
        for i in range(n):
            record = action_record(action="test.action", actor="server", ts=1000 + i, **fields)
            last = store.ledger_append_in(conn, record)
        return last + 1

    return run(srv, store.transaction(write))


def wait_checkpoint(srv: ServerThread, size: int, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cp = srv.hs.ledger.latest
        if cp is not None and cp.size >= size:
            return cp
        time.sleep(0.01)
    pytest.fail(f"no checkpoint covering {size} leaves (latest: {srv.hs.ledger.latest})")


def checkpoints(data_dir) -> list:
    store = SqliteStore(data_dir / "homeserver.db")
    store.open()
    try:
        return list(store.ledger_iter_checkpoints())
    finally:
        store.close()


def test_checkpoint_covers_new_leaves_within_the_interval_and_verifies(tmp_path):
    # At the default interval (1 s), under a steady stream of leaves: every leaf is covered by
    # a stored, signed checkpoint within one second of its commit.
    srv = ServerThread(tmp_path / "d").start()
    try:
        ledger = srv.hs.ledger
        appended: list[tuple[float, int]] = []
        seen: list[tuple[float, int]] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                cp = ledger.latest
                if cp is not None and (not seen or seen[-1][1] != cp.size):
                    seen.append((time.monotonic(), cp.size))
                time.sleep(0.002)

        watcher = threading.Thread(target=watch)
        watcher.start()
        t_end = time.monotonic() + 4.0
        while time.monotonic() < t_end:
            appended.append((time.monotonic(), append(srv, 2)))
            time.sleep(0.01)
        wait_checkpoint(srv, appended[-1][1])
        time.sleep(0.05)
        stop.set()
        watcher.join()
        latencies = [next(ts for ts, size in seen if size >= n) - t for t, n in appended]
        print(
            f"append-to-checkpoint latency: max {max(latencies):.3f} s, "
            f"mean {sum(latencies) / len(latencies):.3f} s over {len(latencies)} appends"
        )
        assert max(latencies) < 1.0, max(latencies)
        # After an idle period the next leaf is covered at once.
        time.sleep(1.2)
        t0 = time.monotonic()
        wait_checkpoint(srv, append(srv, 1))
        assert time.monotonic() - t0 < 0.5
        cp = ledger.latest
        note = parse_note(cp.note)
        parsed = parse_checkpoint(note.text)
        assert parsed.origin == checkpoint_origin("localhost") == "localhost/bastion-ledger"
        assert parsed.size == cp.size and parsed.root == cp.root
        verifier = parse_vkey(ledger.vkey)
        assert verify_note(note, [verifier]) == [verifier]
        # The root is the RFC 9162 root of the stored entries.
        entries = srv.hs.store.ledger_entries(0, cp.size)
        assert merkle.root([merkle.leaf_hash(e) for e in entries]) == cp.root
    finally:
        srv.stop()


def test_no_checkpoint_while_idle_and_at_most_one_per_interval(tmp_path):
    srv = start(tmp_path / "d", ledger_checkpoint_interval=0.5)
    try:
        size = append(srv, 2)
        wait_checkpoint(srv, size)
        before = srv.hs.ledger.latest
        time.sleep(1.6)  # three intervals, no new leaf
        assert srv.hs.ledger.latest == before
        # A steady stream of leaves gets at most one checkpoint per interval.
        first = len(checkpoints_live(srv))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:
            append(srv, 1)
            time.sleep(0.02)
        wait_checkpoint(srv, srv.hs.store.ledger_size())
        signed = len(checkpoints_live(srv)) - first
        assert 2 <= signed <= 6, signed
    finally:
        srv.stop()


def checkpoints_live(srv: ServerThread) -> list:
    return list(srv.hs.store.ledger_iter_checkpoints())


def test_checkpoint_is_stored_durably_before_it_is_served(tmp_path):
    srv = start(tmp_path / "d")
    try:
        db = srv.hs.store.db
        seen: list[tuple[bool, object]] = []
        original = db.write

        async def spy(fn, durable=False):
            latest = srv.hs.ledger.latest
            result = await original(fn, durable=durable)
            seen.append((durable, latest))
            return result

        db.write = spy
        size = append(srv, 4)
        cp = wait_checkpoint(srv, size)
        db.write = original
        durable = [latest for d, latest in seen if d]
        assert durable, "the checkpoint was not written durably"
        # The durable write happened while the service still served the previous checkpoint.
        assert all(latest is None or latest.size < cp.size for latest in durable)
    finally:
        srv.stop()


def test_pq_signing_adds_an_ml_dsa_44_signature(tmp_path):
    srv = start(tmp_path / "d", ledger_pq_signing=True)
    try:
        key = tmp_path / "d" / "ledger-mldsa44.key"
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
        size = append(srv, 5)
        cp = wait_checkpoint(srv, size)
        note = parse_note(cp.note)
        ed, pq = parse_vkey(srv.hs.ledger.vkey), parse_vkey(srv.hs.ledger.pq_vkey)
        assert pq.sig_type == 0x06
        assert set(verify_note(note, [ed, pq])) == {ed, pq}
        assert {"vkey": srv.hs.ledger.pq_vkey, "key_id": "ml-dsa-44", "current": True} in (
            srv.hs.ledger.all_vkeys()
        )
        pq_vkey = srv.hs.ledger.pq_vkey
    finally:
        srv.stop()
    # Turned off later: the key stays listed (retired) so the old signatures still verify.
    srv = start(tmp_path / "d")
    try:
        assert srv.hs.ledger.pq_vkey is None
        assert {"vkey": pq_vkey, "key_id": "ml-dsa-44", "current": False} in (
            srv.hs.ledger.all_vkeys()
        )
        note = parse_note(wait_checkpoint(srv, append(srv, 1)).note)
        assert len(note.signatures) == 1
    finally:
        srv.stop()


def test_restart_continues_the_same_tree(tmp_path):
    data = tmp_path / "d"
    srv = start(data)
    try:
        size = append(srv, 300)  # a full tile and a partial one
        first = wait_checkpoint(srv, size)
    finally:
        srv.stop()
    srv = start(data)
    try:
        assert srv.hs.ledger.halted is None
        assert srv.hs.ledger.latest == first
        size = append(srv, 10)
        second = wait_checkpoint(srv, size)
        proof = srv.hs.ledger.consistency_proof(first.size, second.size)
        assert merkle.verify_consistency(first.size, second.size, first.root, second.root, proof)
    finally:
        srv.stop()
    assert [c.size for c in checkpoints(data)][-2:] == [first.size, second.size]


def _tamper(data, sql: str, args=()) -> None:
    conn = sqlite3.connect(data / "homeserver.db")
    try:
        with conn:
            assert conn.execute(sql, args).rowcount == 1
    finally:
        conn.close()


def _assert_halted(srv: ServerThread, data) -> None:
    ledger = srv.hs.ledger
    assert ledger.halted is not None
    assert ledger.status()["halted"] is True
    before = [c.size for c in checkpoints_live(srv)]
    append(srv, 3)
    time.sleep(0.8)
    assert [c.size for c in checkpoints_live(srv)] == before, "signed while halted"
    # The halt is itself recorded in the ledger.
    deadline = time.monotonic() + 5
    actions = []
    while time.monotonic() < deadline:
        n = srv.hs.store.ledger_size()
        actions = [r.action for r in srv.hs.store.ledger_iter_entries(0) if r.action]
        if ACTION_LEDGER_CHECKPOINT_HALT in actions:
            break
        time.sleep(0.05)
    assert ACTION_LEDGER_CHECKPOINT_HALT in actions, n


def test_tampered_full_tile_halts_signing(tmp_path):
    data = tmp_path / "d"
    srv = start(data)
    try:
        wait_checkpoint(srv, append(srv, 260))
    finally:
        srv.stop()
    _tamper(data, "UPDATE ledger_tiles SET data = ? WHERE level = 0 AND idx = 0", (b"\1" * 8192,))
    srv = start(data)
    try:
        _assert_halted(srv, data)
    finally:
        srv.stop()


def test_tampered_leaf_halts_signing(tmp_path):
    data = tmp_path / "d"
    srv = start(data)
    try:
        wait_checkpoint(srv, append(srv, 40))
    finally:
        srv.stop()
    _tamper(data, "UPDATE ledger_entries SET entry = ? WHERE idx = 7", (b'{"forged":true}',))
    srv = start(data)
    try:
        _assert_halted(srv, data)
    finally:
        srv.stop()


def test_database_rolled_back_behind_the_file_anchor_halts(tmp_path):
    data = tmp_path / "d"
    srv = start(data, ledger_anchor_interval=0.2)
    try:
        wait_checkpoint(srv, append(srv, 5))
    finally:
        srv.stop()
    backup = tmp_path / "backup"
    backup.mkdir()
    for f in data.glob("homeserver.db*"):
        shutil.copy2(f, backup / f.name)
    srv = start(data, ledger_anchor_interval=0.2)
    try:
        size = append(srv, 5)
        cp = wait_checkpoint(srv, size)
        deadline = time.monotonic() + 5
        while srv.hs.ledger.status()["anchors"][0]["last_size"] != cp.size:
            assert time.monotonic() < deadline, srv.hs.ledger.status()
            time.sleep(0.05)
    finally:
        srv.stop()
    for f in data.glob("homeserver.db*"):
        f.unlink()
    for f in backup.iterdir():
        shutil.copy2(f, data / f.name)
    srv = start(data, ledger_anchor_interval=0.2)
    try:
        assert "rolled back" in (srv.hs.ledger.halted or "")
        _assert_halted(srv, data)
    finally:
        srv.stop()


def test_signing_key_rotation_continues_the_tree(tmp_path):
    from bastion.cli import main

    data = tmp_path / "d"
    srv = start(data)
    try:
        first = wait_checkpoint(srv, append(srv, 20))
        old_vkey = srv.hs.ledger.vkey
    finally:
        srv.stop()
    assert main(["admin", "rotate-signing-key", "--data-dir", str(data)]) == 0
    srv = start(data)
    try:
        ledger = srv.hs.ledger
        assert ledger.halted is None
        assert ledger.vkey != old_vkey
        second = wait_checkpoint(srv, append(srv, 5))
        note = parse_note(second.note)
        old, new = parse_vkey(old_vkey), parse_vkey(ledger.vkey)
        assert old.name == new.name == ledger.origin and old.key_id != new.key_id
        assert verify_note(note, [old, new]) == [new]
        assert verify_note(parse_note(first.note), [old, new]) == [old]
        proof = ledger.consistency_proof(first.size, second.size)
        assert merkle.verify_consistency(first.size, second.size, first.root, second.root, proof)
        vkeys = [k["vkey"] for k in ledger.all_vkeys()]
        assert old_vkey in vkeys and ledger.vkey in vkeys
    finally:
        srv.stop()


def test_ledger_disabled(tmp_path):
    srv = start(tmp_path / "d", ledger_enabled=False)
    try:
        assert srv.hs.ledger is None
        assert srv.hs.store.ledger_enabled is False
    finally:
        srv.stop()


# -- configuration ------------------------------------------------------------------------------
def _load(tmp_path, text: str):
    from bastion.config import load_config

    path = tmp_path / "bastion.toml"
    path.write_text('server_name = "example.org"\n' + text, encoding="utf-8")
    return load_config(path).validate()


def test_ledger_config_keys_load(tmp_path):
    from bastion.config import Config, render_config
    from bastion.ledger.note import Ed25519Signer
    from bastion.ledger.witnessing import witness_vkey

    log = Ed25519Signer("other.example/bastion-ledger", b"\x01" * 32).vkey()
    wit = witness_vkey("other.example", b"\x02" * 32)
    config = _load(
        tmp_path,
        f"""
ledger_checkpoint_interval = 0.5
ledger_pq_signing = true
ledger_public_room_events = true
ledger_anchor_file = ""
ledger_anchor_interval = 30
ledger_witnesses = [{{url = "https://other.example:8443/_bastion/witness/v1", vkey = "{wit}"}}]
ledger_witness_for = ["{log}"]
ledger_witness_key = "/secure/witness.key"

[ledger_ethereum]
rpc = "eth-tester"
interval = 600
""",
    )
    assert config.ledger_checkpoint_interval == 0.5 and config.ledger_anchor_path is None
    assert config.ledger_witnesses[0]["vkey"] == wit
    assert str(config.ledger_witness_key_path) == "/secure/witness.key"
    assert config.ledger_ethereum == {"rpc": "eth-tester", "interval": 600}
    default = Config(data_dir=tmp_path)
    assert default.ledger_enabled and default.ledger_checkpoint_interval == 1.0
    assert default.ledger_anchor_path == tmp_path / "ledger-anchors.jsonl"
    assert default.ledger_witness_key_path == tmp_path / "ledger-witness.key"
    # The rendered default configuration documents the keys and still loads.
    text = render_config(default)
    assert "ledger_checkpoint_interval" in text and "ledger_witness_for" in text
    (tmp_path / "rendered.toml").write_text(text, encoding="utf-8")
    from bastion.config import load_config

    assert load_config(tmp_path / "rendered.toml").validate().ledger_enabled


@pytest.mark.parametrize(
    "text",
    [
        "ledger_checkpoint_interval = 0",
        "ledger_checkpoint_interval = -1",
        "ledger_checkpoint_interval = nan",
        "ledger_checkpoint_interval = inf",
        'ledger_checkpoint_interval = "1"',
        "ledger_anchor_interval = 0",
        'ledger_enabled = "yes"',
        "ledger_pq_signing = 1",
        'ledger_witness_for = ["not a vkey"]',
        'ledger_witness_for = ["a+00000000+AAAA"]',
        "ledger_witness_for = [1]",
        'ledger_witness_for = "x"',
        'ledger_witnesses = [{url = "ftp://w.example/", vkey = "W"}]',
        'ledger_witnesses = [{url = "https://w.example/"}]',
        'ledger_witnesses = ["https://w.example/"]',
        'ledger_witnesses = [{url = "https://user:pw@w.example/", vkey = "{wit}"}]',
        'ledger_witnesses = [{url = "https://w.example/?q=1", vkey = "{wit}"}]',
        'ledger_witnesses = [{url = "https://w.example:99999/", vkey = "{wit}"}]',
        'ledger_witnesses = [{url = "https:///path", vkey = "{wit}"}]',
        'ledger_witnesses = [{url = "https://w.example/ x", vkey = "{wit}"}]',
        'ledger_witnesses = [{url = "https://w.example/", vkey = "{log}"}]',
        'ledger_witnesses = [{url = "https://w.example/", vkey = "{wit}", extra = 1}]',
        'ledger_witness_for = ["{wit}"]',
        "ledger_anchor_file = 5",
        'ledger_ethereum = {rpc = "file:///x"}',
        'ledger_ethereum = {rpc = "https://rpc.example"}',
        'ledger_ethereum = {rpc = "https://rpc.example", account = "0x12"}',
        'ledger_ethereum = {rpc = "eth-tester", interval = -5}',
        'ledger_ethereum = {rpc = "eth-tester", bogus = 1}',
    ],
)
def test_hostile_ledger_config_is_refused_at_load(tmp_path, text):
    from bastion.config import ConfigError
    from bastion.ledger.note import Ed25519Signer
    from bastion.ledger.witnessing import witness_vkey

    log = Ed25519Signer("other.example/bastion-ledger", b"\x01" * 32).vkey()
    wit = witness_vkey("other.example", b"\x02" * 32)
    text = text.replace("{wit}", wit).replace("{log}", log)
    with pytest.raises(ConfigError):
        _load(tmp_path, text + "\n")


def test_tampered_leaf_under_a_full_tile_halts_signing(tmp_path):
    data = tmp_path / "d"
    srv = start(data)
    try:
        wait_checkpoint(srv, append(srv, 300))
    finally:
        srv.stop()
    _tamper(data, "UPDATE ledger_entries SET entry = ? WHERE idx = 17", (b'{"forged":true}',))
    srv = start(data)
    try:
        deadline = time.monotonic() + 10
        while srv.hs.ledger.halted is None:
            assert time.monotonic() < deadline, "a changed leaf went unnoticed"
            time.sleep(0.05)
        assert "tile 0/0" in srv.hs.ledger.halted
        _assert_halted(srv, data)
    finally:
        srv.stop()


def test_stored_tiles_check_passes_on_an_untouched_log(tmp_path):
    srv = start(tmp_path / "d")
    try:
        size = append(srv, 256 * 3 + 5)
        wait_checkpoint(srv, size)
        assert run(srv, srv.hs.ledger.check_stored_tiles(size)) is True
        assert srv.hs.ledger.halted is None
    finally:
        srv.stop()


def test_ethereum_anchor_on_eth_tester(tmp_path):
    from bastion.ledger.anchors import verify_ethereum_receipt, verify_receipt

    srv = start(tmp_path / "d", ledger_anchor_file="",
                ledger_ethereum={"rpc": "eth-tester", "interval": 0.2})  # fmt: skip
    try:
        cp = wait_checkpoint(srv, append(srv, 4))
        deadline = time.monotonic() + 60
        rows = []
        while not rows:
            assert time.monotonic() < deadline, srv.hs.ledger.status()["anchors"]
            rows = [r for r in srv.hs.store.ledger_anchors() if r.anchor == "ethereum"]
            time.sleep(0.1)
        row = rows[0]
        note = srv.hs.store.ledger_checkpoint(row.size).note
        assert row.size <= cp.size and verify_receipt(row.receipt, note)
        web3 = srv.hs.ledger._anchoring[0].anchor.web3  # noqa: SLF001 - the in-process chain
        assert verify_ethereum_receipt(web3, row.receipt, note)
        health = srv.hs.ledger.status()["anchors"]
        assert [a["name"] for a in health] == ["ethereum"] and health[0]["last_error"] is None
    finally:
        srv.stop()


def test_slow_or_failing_witnesses_never_delay_signing(tmp_path, monkeypatch):
    import socket

    from bastion.ledger import service as service_mod
    from bastion.ledger.witnessing import witness_vkey

    monkeypatch.setattr(service_mod, "WITNESS_TIMEOUT", 1.0)
    silent = socket.socket()  # accepts connections (backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connections are refused
    witnesses = (
        {"url": f"http://127.0.0.1:{silent.getsockname()[1]}/w",
         "vkey": witness_vkey("slow.example", b"\x05" * 32)},
        {"url": f"http://127.0.0.1:{closed_port}/w",
         "vkey": witness_vkey("down.example", b"\x06" * 32)},
    )  # fmt: skip
    srv = ServerThread(tmp_path / "d", ledger_witnesses=witnesses).start()  # default interval
    try:
        for _ in range(3):
            t0 = time.monotonic()
            wait_checkpoint(srv, append(srv, 2), timeout=5)
            assert time.monotonic() - t0 < 1.0
        deadline = time.monotonic() + 5
        while True:
            health = srv.hs.ledger.status()["witnesses"]
            if all(w["last_error"] for w in health) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert all(w["last_error"] and w["last_cosigned_size"] is None for w in health), health
        assert srv.hs.ledger.halted is None
    finally:
        srv.stop()
        silent.close()


def test_a_tree_with_a_full_level_one_tile_survives_restart(tmp_path):
    # 70,000 leaves: 273 full level-0 tiles, a full level-1 tile, partial tiles at levels 0-2
    # (the tlog-tiles example), restored from the stored tiles on restart.
    data = tmp_path / "d"
    srv = start(data)
    try:
        for _ in range(7):
            size = append(srv, 10_000)
        first = wait_checkpoint(srv, size, timeout=60)
        assert first.size == 70_000
        entries = srv.hs.store.ledger_entries(0, 70_000)
        assert merkle.root([merkle.leaf_hash(e) for e in entries]) == first.root
        assert srv.hs.store.ledger_tile(1, 0) is not None
        assert len(srv.hs.ledger.tile(2, 0, 1)) == 32
    finally:
        srv.stop()
    srv = start(data)
    try:
        assert srv.hs.ledger.halted is None
        assert run(srv, srv.hs.ledger.check_stored_tiles(70_000), timeout=120) is True
        second = wait_checkpoint(srv, append(srv, 300))
        proof = srv.hs.ledger.consistency_proof(first.size, second.size)
        assert merkle.verify_consistency(first.size, second.size, first.root, second.root, proof)
        leaf = merkle.leaf_hash(srv.hs.store.ledger_entries(65_600, 65_601)[0])
        proof = srv.hs.ledger.inclusion_proof(65_600, second.size)
        assert merkle.verify_inclusion(leaf, 65_600, second.size, proof, second.root)
        assert srv.hs.ledger.halted is None
    finally:
        srv.stop()
