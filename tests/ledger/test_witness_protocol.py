"""C2SP tlog-witness add-checkpoint (bastion.ledger.witness_protocol): every answer, the
request and response formats, and a witness that never cosigns a smaller or forked tree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.ledger import merkle
from bastion.ledger.checkpoint import Checkpoint, format_checkpoint, sign_checkpoint
from bastion.ledger.cosignature import Ed25519Cosigner, MLDSA44Cosigner
from bastion.ledger.merkle import EMPTY_ROOT, MemoryNodeReader, leaf_hash
from bastion.ledger.note import Ed25519Signer, Note, NoteSignature, format_note, parse_note
from bastion.ledger.witness_protocol import (
    SIZE_CONTENT_TYPE,
    Accept,
    AddCheckpoint,
    Refuse,
    WitnessState,
    decide_add_checkpoint,
    format_add_checkpoint,
    format_cosignatures,
    parse_add_checkpoint,
    parse_conflict_size,
    parse_cosignatures,
)

ORIGIN = "log.example/bastion-ledger"
LOG = Ed25519Signer(ORIGIN, bytes([1]) * 32)
LEAVES = [leaf_hash(b"%d" % i) for i in range(300)]
TREE = MemoryNodeReader(LEAVES)
FORK = MemoryNodeReader([*LEAVES[:50], leaf_hash(b"forged"), *LEAVES[51:]])
KEYS = {ORIGIN: [LOG.verifier()]}

# tlog-witness "add-checkpoint", the example request body.
SPEC_BODY = (
    "old 20852014\n"
    "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
    "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
    "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
    "\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcy"
    "v2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6"
    "267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n"
).encode()
# ... and the example response body.
SPEC_RESPONSE = (
    "— witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQL"
    "rdk3DXDqI5G2HgLatVs0pWh6Up69HVOw==\n"
    "— witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+"
    "DlkL0+UfzuOBMh9ChdMkP1vi/lCAsmlw==\n"
    "— witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7n"
    "C3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==\n"
).encode()


def signed(size: int, tree: MemoryNodeReader = TREE, signer: Ed25519Signer = LOG) -> bytes:
    return sign_checkpoint(Checkpoint(ORIGIN, size, merkle.tree_root(size, tree)), [signer])


def request(old: int, new: int, tree: MemoryNodeReader = TREE) -> AddCheckpoint:
    return AddCheckpoint(old, tuple(merkle.consistency_proof(old, new, tree)), signed(new, tree))


def state(size: int, tree: MemoryNodeReader = TREE) -> WitnessState:
    return WitnessState(size, merkle.tree_root(size, tree))


def test_the_spec_examples_parse():
    req = parse_add_checkpoint(SPEC_BODY)
    assert req.old_size == 20852014 and len(req.proof) == 4
    assert parse_note(req.note).text.startswith("example.com/behind-the-sofa\n20852163\n")
    assert format_add_checkpoint(req) == SPEC_BODY
    sigs = parse_cosignatures(SPEC_RESPONSE)
    assert [s.name for s in sigs] == [
        "witness.example/w1",
        "witness.example/w1",
        "witness.example/w2",
    ]
    assert format_cosignatures(sigs) == SPEC_RESPONSE
    # The origin is unknown to this witness: 404.
    answer = decide_add_checkpoint(req, KEYS, None)
    assert isinstance(answer, Refuse) and answer.status == 404


def test_accept_first_and_later_checkpoints():
    first = decide_add_checkpoint(request(0, 10), KEYS, None)
    assert isinstance(first, Accept)
    assert first.checkpoint == Checkpoint(ORIGIN, 10, merkle.tree_root(10, TREE))
    assert first.text == format_checkpoint(first.checkpoint)
    later = decide_add_checkpoint(request(10, 300), KEYS, state(10))
    assert isinstance(later, Accept) and later.checkpoint.size == 300
    same = decide_add_checkpoint(request(300, 300), KEYS, state(300))
    assert isinstance(same, Accept)
    empty = AddCheckpoint(0, (), sign_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT), [LOG]))
    assert isinstance(decide_add_checkpoint(empty, KEYS, None), Accept)
    # An extra signature from an unknown key is ignored.
    cosig = Ed25519Cosigner("w.example", bytes(32))
    note = parse_note(signed(20))
    extra = format_note(Note(note.text, (*note.signatures, cosig.cosign(note.text, 5))))
    req = AddCheckpoint(10, tuple(merkle.consistency_proof(10, 20, TREE)), extra)
    assert isinstance(decide_add_checkpoint(req, KEYS, state(10)), Accept)


def status(answer: Accept | Refuse) -> int:
    return 200 if isinstance(answer, Accept) else answer.status


def test_400_malformed():
    assert status(decide_add_checkpoint(AddCheckpoint(0, (), b"junk"), KEYS, None)) == 400
    note = format_note(Note("not\na checkpoint\n", (LOG.sign("not\na checkpoint\n"),)))
    assert status(decide_add_checkpoint(AddCheckpoint(0, (), note), KEYS, None)) == 400
    # Old size larger than the checkpoint's.
    bigger = AddCheckpoint(20, (), signed(10))
    assert status(decide_add_checkpoint(bigger, KEYS, state(20))) == 400


def test_403_bad_or_missing_log_signature():
    stranger = Ed25519Signer(ORIGIN, bytes([2]) * 32)
    assert (
        status(decide_add_checkpoint(AddCheckpoint(0, (), signed(5, signer=stranger)), KEYS, None))
        == 403
    )
    # A trusted key's signature that fails (forged) is a 403 even next to a valid one.
    note = parse_note(signed(5))
    forged = NoteSignature(LOG.name, LOG.key_id, bytes(64))
    both = format_note(Note(note.text, (note.signatures[0], forged)))
    assert status(decide_add_checkpoint(AddCheckpoint(0, (), both), KEYS, None)) == 403
    # The signature of another checkpoint.
    other = parse_note(signed(6))
    swapped = format_note(Note(note.text, other.signatures))
    assert status(decide_add_checkpoint(AddCheckpoint(0, (), swapped), KEYS, None)) == 403


def test_404_unknown_origin():
    assert status(decide_add_checkpoint(request(0, 5), {}, None)) == 404
    assert status(decide_add_checkpoint(request(0, 5), {ORIGIN: []}, None)) == 404
    assert status(decide_add_checkpoint(request(0, 5), {"other": [LOG.verifier()]}, None)) == 404


def test_409_with_the_witness_size():
    answer = decide_add_checkpoint(request(5, 20), KEYS, state(10))
    assert isinstance(answer, Refuse)
    assert (answer.status, answer.body, answer.content_type) == (409, b"10\n", SIZE_CONTENT_TYPE)
    assert parse_conflict_size(answer.body) == 10
    answer = decide_add_checkpoint(request(5, 20), KEYS, None)
    assert isinstance(answer, Refuse) and (answer.status, answer.body) == (409, b"0\n")
    answer = decide_add_checkpoint(request(0, 20), KEYS, state(10))
    assert isinstance(answer, Refuse) and (answer.status, answer.body) == (409, b"10\n")


def test_422_inconsistent():
    # An empty tree with another root.
    bad_empty = AddCheckpoint(0, (), sign_checkpoint(Checkpoint(ORIGIN, 0, bytes(32)), [LOG]))
    assert status(decide_add_checkpoint(bad_empty, KEYS, None)) == 422
    # A proof from the empty tree.
    with_proof = AddCheckpoint(0, (bytes(32),), signed(5))
    assert status(decide_add_checkpoint(with_proof, KEYS, None)) == 422
    # Same size, different root (a fork).
    assert status(decide_add_checkpoint(request(100, 100, FORK), KEYS, state(100))) == 422
    # Same size with a proof.
    same = AddCheckpoint(100, (bytes(32),), signed(100))
    assert status(decide_add_checkpoint(same, KEYS, state(100))) == 422
    # A larger fork: its own consistency proof, from its own old tree, does not verify
    # against the tree the witness holds.
    assert status(decide_add_checkpoint(request(60, 200, FORK), KEYS, state(60))) == 422
    # A valid tree with a wrong proof, an empty proof, a truncated proof.
    good = request(10, 200)
    for proof in [(bytes(32),) * len(good.proof), (), good.proof[:-1]]:
        req = AddCheckpoint(10, proof, good.note)
        assert status(decide_add_checkpoint(req, KEYS, state(10))) == 422


def test_a_witness_never_cosigns_a_smaller_tree():
    # Old size must equal the held size and be at most the new size: a smaller checkpoint
    # is 400 (old > new) or 409 (old != held), never accepted.
    for old in (0, 50, 100):
        answer = decide_add_checkpoint(AddCheckpoint(old, (), signed(50)), KEYS, state(100))
        assert status(answer) in (400, 409)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 299), st.integers(1, 300), st.integers(0, 300), st.booleans())
def test_only_consistent_larger_trees_are_accepted(held, new, old, fork):
    tree = FORK if fork else TREE
    proof = tuple(merkle.consistency_proof(min(old, new), new, tree))
    answer = decide_add_checkpoint(AddCheckpoint(old, proof, signed(new, tree)), KEYS, state(held))
    if isinstance(answer, Accept):
        assert old == held <= new
        assert merkle.tree_root(held, TREE) == merkle.tree_root(held, tree)  # a prefix
        assert answer.checkpoint.root == merkle.tree_root(new, tree)
        assert not fork or held <= 50  # the fork shares the first 50 leaves only


def test_parse_add_checkpoint_round_trip_and_rejections():
    req = request(10, 200)
    body = format_add_checkpoint(req)
    assert parse_add_checkpoint(body) == req
    note = signed(5)
    bad_bodies = [
        b"",
        b"old 1\n",
        b"old 1\n\n",  # no checkpoint
        b"old 01\n\n" + note,
        b"old -1\n\n" + note,
        b"old 1 \n\n" + note,
        b"Old 1\n\n" + note,
        b"old  1\n\n" + note,
        b"old 18446744073709551616\n\n" + note,
        b"old 1\nAAAA\n\n" + note,  # a proof line not 32 bytes
        b"old 1\n" + b"A" * 43 + b"\n\n" + note,  # unpadded
        b"old 1\n" + b"A" * 43 + b"=\r\n\n" + note,
        b"old 1\n" + (b"A" * 43 + b"=\n") * 64 + b"\n" + note,  # 64 proof lines
        b"old 1\n\n" + note + b"x",
        b"old 1\n\n" + note.replace(b"\n5\n", b"\n05\n"),
        b"old 1\r\n\n" + note,
        b"old \xff\n\n" + note,
        b"old 1\n\n" + b"x" * (2 << 20),
    ]
    for body in bad_bodies:
        with pytest.raises(ValueError):
            parse_add_checkpoint(body)
    assert (
        len(parse_add_checkpoint(b"old 1\n" + (b"A" * 43 + b"=\n") * 63 + b"\n" + note).proof) == 63
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parsers_raise_only_value_error(data):
    for parse in (parse_add_checkpoint, parse_cosignatures, parse_conflict_size):
        try:
            parse(data)
        except ValueError:
            pass
    try:
        parse_add_checkpoint(b"old 0\n\n" + data)
    except ValueError:
        pass


def test_cosignature_responses():
    w = Ed25519Cosigner("witness.example/w1", bytes([3]) * 32)
    m = MLDSA44Cosigner("witness.example/w2", bytes([4]) * 32)
    text = format_checkpoint(Checkpoint(ORIGIN, 5, merkle.tree_root(5, TREE)))
    body = format_cosignatures([w.cosign(text, 7), m.cosign(text, 7)])
    sigs = parse_cosignatures(body)
    assert w.verifier().verify(text, sigs[0]) and m.verifier().verify(text, sigs[1])
    for bad in [
        b"",
        b"\n",
        body[:-1],
        body + b"\n",
        b"- w AAAAAAE=\n",
        body.replace(b"\n", b"\r\n"),
    ]:
        with pytest.raises(ValueError):
            parse_cosignatures(bad)
    with pytest.raises(ValueError):
        format_cosignatures([])
    for bad in [b"", b"10", b"010\n", b"-1\n", b" 1\n", b"18446744073709551616\n"]:
        with pytest.raises(ValueError):
            parse_conflict_size(bad)
