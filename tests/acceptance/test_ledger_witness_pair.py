"""Two Bastion servers on loopback witness each other (C2SP tlog-witness both ways): each
server's served checkpoint carries the other's cosignature, verifiable with the other's witness
vkey; a witness that holds a newer checkpoint than a log's database stops that log signing."""

from __future__ import annotations

import shutil
import socket
import time
import urllib.request

import pytest

from bastion.ledger.checkpoint import parse_checkpoint
from bastion.ledger.note import Ed25519Signer, parse_note, parse_vkey, verify_note
from bastion.ledger.records import action_record
from bastion.ledger.service import checkpoint_origin
from bastion.ledger.witnessing import load_or_create_witness_key, witness_vkey
from bastion.signing_key import load_or_create_signing_key
from tests.support.federation import run
from tests.support.harness import ServerThread

L = "/_bastion/ledger/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """A server's name, data directory, port and keys, known before it starts."""

    def __init__(self, root, name: str) -> None:
        self.name = name
        self.data = root / name
        self.port = free_port()
        seed = bytes(load_or_create_signing_key(self.data / "signing.key").key)
        self.log_vkey = Ed25519Signer(checkpoint_origin(name), seed).vkey()
        self.witness_vkey = witness_vkey(name, load_or_create_witness_key(
            self.data / "ledger-witness.key"))  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/_bastion/witness/v1"

    def start(self, peer: Node, **overrides) -> ServerThread:
        return ServerThread(
            self.data, server_name=self.name, listen_port=self.port,
            ledger_checkpoint_interval=0.2,
            ledger_witnesses=({"url": peer.url, "vkey": peer.witness_vkey},),
            ledger_witness_for=(peer.log_vkey,), **overrides,
        ).start()  # fmt: skip


def append(srv: ServerThread, n: int) -> int:
    store = srv.hs.store

    def write(conn) -> int:
        last = -1
        for i in range(n):
            last = store.ledger_append_in(conn, action_record(action="t", actor="server", ts=i))
        return last + 1

    return run(srv, store.transaction(write))


def served_checkpoint(srv: ServerThread) -> bytes:
    with urllib.request.urlopen(srv.base_url + L + "/checkpoint", timeout=10) as resp:
        return resp.read()


def wait_cosigned(srv: ServerThread, size: int, witness_vkey: str, timeout: float = 15.0):
    """The served checkpoint once it covers ``size`` leaves and carries a valid cosignature
    of the witness."""
    witness = parse_vkey(witness_vkey)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cp = srv.hs.ledger.latest
        if cp is not None and cp.size >= size:
            note = parse_note(served_checkpoint(srv))
            if parse_checkpoint(note.text).size >= size and verify_note(note, [witness]):
                return note
        time.sleep(0.05)
    pytest.fail(f"not cosigned: {srv.hs.ledger.status()}")


@pytest.fixture
def nodes(tmp_path):
    return Node(tmp_path, "alpha.test"), Node(tmp_path, "beta.test")


def test_two_servers_witness_each_other(nodes):
    a, b = nodes
    sa, sb = a.start(b), b.start(a)
    try:
        # Each publishes its witness vkey at keys, as configured on the other.
        for srv, node in ((sa, a), (sb, b)):
            with urllib.request.urlopen(srv.base_url + L + "/keys", timeout=10) as resp:
                assert node.witness_vkey.encode() in resp.read()
        for _round in range(2):
            size_a, size_b = append(sa, 7), append(sb, 3)
            note_a = wait_cosigned(sa, size_a, b.witness_vkey)
            note_b = wait_cosigned(sb, size_b, a.witness_vkey)
            # Signed by the log itself and cosigned by the other server's witness key.
            log_a, wit_b = parse_vkey(a.log_vkey), parse_vkey(b.witness_vkey)
            assert set(verify_note(note_a, [log_a, wit_b])) == {log_a, wit_b}
            log_b, wit_a = parse_vkey(b.log_vkey), parse_vkey(a.witness_vkey)
            assert set(verify_note(note_b, [log_b, wit_a])) == {log_b, wit_a}
            # ... and not by anyone else's.
            assert not verify_note(note_a, [wit_a])
        # Each witness holds the other's latest checkpoint.
        assert sb.hs.store.witness_log_state(checkpoint_origin(a.name)).size == size_a
        assert sa.hs.store.witness_log_state(checkpoint_origin(b.name)).size == size_b
        status = sa.hs.ledger.status()["witnesses"][0]
        assert status["last_cosigned_size"] == size_a and status["last_error"] is None
        # A log that lost track of the witness's size learns it from the 409 and retries.
        client = sa.hs.ledger._client  # noqa: SLF001 - observe the exchange
        results = []
        original = client.add_checkpoint

        async def spy(*args):
            result = await original(*args)
            results.append(result)
            return result

        client.add_checkpoint = spy
        run(sa, sa.hs.store.ledger_set_witness_size(b.witness_vkey, 0))
        size_a = append(sa, 2)
        wait_cosigned(sa, size_a, b.witness_vkey)
        assert results[0].conflict_size == size_a - 2 and results[1].signatures, results
    finally:
        sa.stop()
        sb.stop()


def test_a_witness_with_a_newer_checkpoint_reveals_a_rollback(nodes, tmp_path):
    a, b = nodes
    no_anchor = {"ledger_anchor_file": ""}  # only the witness can tell
    sb = b.start(a)
    try:
        sa = a.start(b, **no_anchor)
        try:
            wait_cosigned(sa, append(sa, 5), b.witness_vkey)
        finally:
            sa.stop()
        backup = tmp_path / "backup"
        backup.mkdir()
        for f in a.data.glob("homeserver.db*"):
            shutil.copy2(f, backup / f.name)
        sa = a.start(b, **no_anchor)
        try:
            wait_cosigned(sa, append(sa, 5), b.witness_vkey)
        finally:
            sa.stop()
        for f in a.data.glob("homeserver.db*"):
            f.unlink()
        for f in backup.iterdir():
            shutil.copy2(f, a.data / f.name)
        sa = a.start(b, **no_anchor)
        try:
            deadline = time.monotonic() + 10
            while sa.hs.ledger.halted is None:
                assert time.monotonic() < deadline, sa.hs.ledger.status()
                time.sleep(0.05)
            assert "rolled back" in sa.hs.ledger.halted
            assert sa.hs.ledger.status()["halted"] is True
        finally:
            sa.stop()
    finally:
        sb.stop()
