"""Bastion as a C2SP tlog-witness for another log (POST /_bastion/witness/v1/add-checkpoint):
every status code the spec requires, a persistent latest view per log, a compare-and-swap that
lets only one of concurrent submissions win, and never a cosignature on a smaller tree or a
fork."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import urllib.error
import urllib.request

import pytest

from bastion.ledger import merkle
from bastion.ledger.checkpoint import Checkpoint, format_checkpoint
from bastion.ledger.note import Ed25519Signer, Note, format_note, parse_note, parse_vkey
from bastion.ledger.witness_protocol import AddCheckpoint, format_add_checkpoint
from bastion.ledger.witnessing import WitnessTarget, witness_name
from tests.support.federation import run
from tests.support.harness import ServerThread

W = "/_bastion/witness/v1"
ORIGIN = "log.example/test"
LOG = Ed25519Signer(ORIGIN, b"\x11" * 32)
IMPOSTOR = Ed25519Signer(ORIGIN, b"\x22" * 32)  # same name, another key
OTHER = Ed25519Signer("other.example/log", b"\x33" * 32)


def leaves(n: int, tag: bytes = b"") -> list[bytes]:
    return [merkle.leaf_hash(b"entry %d" % i + (tag if i == n - 1 else b"")) for i in range(n)]


def signed(n: int, tag: bytes = b"", signer=LOG, root: bytes | None = None) -> bytes:
    text = format_checkpoint(Checkpoint(signer.name, n, root or merkle.root(leaves(n, tag))))
    return format_note(Note(text, (signer.sign(text),)))


def consistency(old: int, new: int, tag: bytes = b"") -> list[bytes]:
    return merkle.consistency_proof(old, new, merkle.MemoryNodeReader(leaves(new, tag)))


def body(old: int, note: bytes, proof=()) -> bytes:
    return format_add_checkpoint(AddCheckpoint(old, tuple(proof), note))


def post(srv: ServerThread, data: bytes):
    req = urllib.request.Request(srv.base_url + W + "/add-checkpoint", data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


@pytest.fixture
def witness(tmp_path):
    srv = ServerThread(tmp_path / "w", server_name="witness.test",
                       ledger_witness_for=(LOG.vkey(),)).start()  # fmt: skip
    yield srv
    srv.stop()


def cosigned_by_witness(srv: ServerThread, note: bytes, answer: bytes) -> bool:
    verifier = parse_vkey(srv.hs.witness.vkey)
    target = WitnessTarget("http://x", srv.hs.witness.vkey, verifier)
    from bastion.ledger.witness_protocol import parse_cosignatures

    return bool(target.verified_lines(parse_note(note).text, parse_cosignatures(answer)))


def test_witness_key_is_created_private_and_named(witness, tmp_path):
    key = tmp_path / "w" / "ledger-witness.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    v = parse_vkey(witness.hs.witness.vkey)
    assert v.name == witness_name("witness.test") and v.sig_type == 0x04


def test_cosigns_a_growing_log_and_refuses_everything_else(witness):
    # 200 from nothing, with a verifiable cosignature/v1 line, state persisted.
    note5 = signed(5)
    status, ctype, answer = post(witness, body(0, note5))
    assert status == 200, answer
    assert cosigned_by_witness(witness, note5, answer)
    state = witness.hs.store.witness_log_state(ORIGIN)
    assert state.size == 5 and state.root == merkle.root(leaves(5))
    # 409 with the witness's size when the old size is not the one it holds.
    status, ctype, answer = post(witness, body(0, signed(8)))
    assert (status, ctype, answer) == (409, "text/x.tlog.size", b"5\n")
    status, ctype, answer = post(witness, body(3, signed(8), consistency(3, 8)))
    assert (status, answer) == (409, b"5\n")
    # 422 with a proof that does not verify, or a fork at the same size.
    status, _c, _a = post(witness, body(5, signed(8), consistency(4, 8)))
    assert status == 422
    status, _c, _a = post(witness, body(5, signed(5, b"fork")))
    assert status == 422
    # A fork of the held tree, grown: its proof from 5 cannot verify against the held root.
    status, _c, _a = post(witness, body(5, signed(9, b"fork"), consistency(5, 9, b"x")))
    assert status == 422
    # 400: a smaller tree (old size above the checkpoint's), and malformed bodies.
    status, _c, _a = post(witness, body(5, signed(3)))
    assert status == 400
    for junk in (b"", b"garbage", b"old 5\n\n", b"old 05\n\n" + signed(8),
                 b"old -1\n\n" + signed(8), b"old 5\nnot-base64!\n\n" + signed(8),
                 b"old 5\n" + signed(8)):  # fmt: skip
        status, _c, _a = post(witness, junk)
        assert status == 400, junk
    # 404 unknown origin; 403 no valid signature from the log's key.
    status, _c, _a = post(witness, body(0, signed(8, signer=OTHER)))
    assert status == 404
    status, _c, _a = post(witness, body(5, signed(8, signer=IMPOSTOR), consistency(5, 8)))
    assert status == 403
    forged = bytearray(signed(8))
    forged[-10] ^= 1
    status, _c, _a = post(witness, body(5, bytes(forged), consistency(5, 8)))
    assert status in (400, 403)
    # 422: a size-0 checkpoint must have the empty root.
    fresh = ServerThread(witness.config.data_dir.parent / "w2", server_name="w2.test",
                         ledger_witness_for=(LOG.vkey(),)).start()  # fmt: skip
    try:
        status, _c, _a = post(fresh, body(0, signed(0, root=b"\1" * 32)))
        assert status == 422
        status, _c, _a = post(fresh, body(0, signed(0, root=merkle.EMPTY_ROOT)))
        assert status == 200
    finally:
        fresh.stop()
    # None of the refusals moved the witness: it still holds 5, and grows with a good proof.
    assert witness.hs.store.witness_log_state(ORIGIN).size == 5
    note8 = signed(8)
    status, _c, answer = post(witness, body(5, note8, consistency(5, 8)))
    assert status == 200 and cosigned_by_witness(witness, note8, answer)
    # The same size again, same root: cosigned again (idempotent).
    status, _c, _a = post(witness, body(8, note8))
    assert status == 200
    assert witness.hs.store.witness_log_state(ORIGIN).size == 8


def test_body_size_is_bounded(witness):
    status, ctype, answer = post(witness, b"old 0\n" + b"A" * (200 * 1024))
    assert status == 413 and b"M_TOO_LARGE" in answer


def test_concurrent_submissions_only_one_wins(witness):
    post(witness, body(0, signed(4)))
    forks = [signed(6, b"%d" % i) for i in range(8)]
    bodies = [body(4, n, consistency(4, 6, b"%d" % i)) for i, n in enumerate(forks)]

    async def all_at_once():
        return await asyncio.gather(*(witness.hs.witness.add_checkpoint(b) for b in bodies))

    answers = run(witness, all_at_once())
    winners = [i for i, a in enumerate(answers) if a.status == 200]
    assert len(winners) == 1, [a.status for a in answers]
    assert all(a.status in (409, 422) for a in answers if a.status != 200)
    state = witness.hs.store.witness_log_state(ORIGIN)
    assert state.size == 6 and state.root == merkle.root(leaves(6, b"%d" % winners[0]))


def test_latest_view_persists_and_is_served(tmp_path):
    data = tmp_path / "w"
    kw = dict(server_name="witness.test", ledger_witness_for=(LOG.vkey(),))
    srv = ServerThread(data, **kw).start()
    try:
        assert post(srv, body(0, signed(7)))[0] == 200
    finally:
        srv.stop()
    srv = ServerThread(data, **kw).start()
    try:
        assert post(srv, body(0, signed(9)))[:3:2] == (409, b"7\n")
        path = f"{W}/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint"
        with urllib.request.urlopen(srv.base_url + path, timeout=10) as resp:
            note = resp.read()
        assert parse_note(note).text == parse_note(signed(7)).text
        verifier = parse_vkey(srv.hs.witness.vkey)
        sigs = [s for s in parse_note(note).signatures if s.key_id == verifier.key_id]
        assert sigs and verifier.verify(parse_note(note).text, sigs[0])
        try:
            urllib.request.urlopen(srv.base_url + f"{W}/{'0' * 64}/checkpoint", timeout=10)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as e:
            assert e.code == 404
    finally:
        srv.stop()


def test_no_witness_routes_without_logs_to_witness(tmp_path):
    srv = ServerThread(tmp_path / "w").start()
    try:
        status, _c, answer = post(srv, body(0, signed(1)))
        assert status == 404 and b"M_UNRECOGNIZED" in answer
    finally:
        srv.stop()
