"""C2SP tlog-proof@v1 (bastion.ledger.proof_bundle): the spec's example format, round trips,
offline verification and the rejection of malformed bundles."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.ledger import merkle
from bastion.ledger.checkpoint import Checkpoint, sign_checkpoint
from bastion.ledger.cosignature import Ed25519Cosigner
from bastion.ledger.merkle import MemoryNodeReader, leaf_hash
from bastion.ledger.note import (
    Ed25519Signer,
    Note,
    NoteSignature,
    format_note,
    parse_note,
    verify_note,
)
from bastion.ledger.proof_bundle import (
    ProofBundle,
    format_proof_bundle,
    parse_proof_bundle,
    verify_proof_bundle,
)

# tlog-proof "Format", the example: its head verbatim; its signature lines are elided in the
# spec ("hI2DJw[...]1roloI="), so the checkpoint is re-signed here with a test key.
SPEC_HEAD = (
    b"c2sp.org/tlog-proof@v1\n"
    b"extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n"
    b"index 73894\n"
    b"gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"
    b"B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n"
    b"EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n"
    b"RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n"
    b"AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n"
    b"\n"
)
SPEC_CHECKPOINT_TEXT = (
    "example.com/fancylog\n109482\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n"
)
SPEC_ELIDED = (
    SPEC_CHECKPOINT_TEXT
    + "\n— example.com/fancylog hI2DJw[...]1roloI=\n— witness1.example mJirIklj[...]qY9v2B/5bg==\n"
).encode()

ORIGIN = "log.example/bastion-ledger"
LOG = Ed25519Signer(ORIGIN, bytes([1]) * 32)
LEAVES = [leaf_hash(b"%d" % i) for i in range(1000)]
TREE = MemoryNodeReader(LEAVES)


def test_the_spec_example():
    fancy = Ed25519Signer("example.com/fancylog", bytes(32))
    witness = Ed25519Cosigner("witness1.example", bytes([5]) * 32)
    checkpoint = format_note(
        Note(
            SPEC_CHECKPOINT_TEXT,
            (fancy.sign(SPEC_CHECKPOINT_TEXT), witness.cosign(SPEC_CHECKPOINT_TEXT, 1)),
        )
    )
    data = SPEC_HEAD + checkpoint
    bundle = parse_proof_bundle(data)
    assert bundle.index == 73894
    assert bundle.extra is not None and bundle.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert len(bundle.proof) == 5
    assert bundle.proof[0] == base64.b64decode("gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=")
    assert bundle.checkpoint == checkpoint
    assert format_proof_bundle(bundle) == data
    note = parse_note(bundle.checkpoint)
    wv = witness.verifier()
    assert verify_note(note, [wv]) == [wv]
    # The spec's elided signatures are not base64: that bundle is refused.
    with pytest.raises(ValueError):
        parse_proof_bundle(SPEC_HEAD + SPEC_ELIDED)


def bundle_for(index: int, size: int, extra: bytes | None = None) -> ProofBundle:
    cp = Checkpoint(ORIGIN, size, merkle.tree_root(size, TREE))
    return ProofBundle(
        index, tuple(merkle.inclusion_proof(index, size, TREE)), sign_checkpoint(cp, [LOG]), extra
    )


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_round_trip_and_verify(data):
    size = data.draw(st.integers(1, 1000))
    index = data.draw(st.integers(0, size - 1))
    extra = data.draw(st.one_of(st.none(), st.binary(max_size=100)))
    b = bundle_for(index, size, extra)
    text = format_proof_bundle(b)
    assert parse_proof_bundle(text) == b
    cp = verify_proof_bundle(parse_proof_bundle(text), LEAVES[index], ORIGIN, [LOG.verifier()])
    assert cp is not None and cp.size == size
    other = (index + 1) % size
    if other != index:
        assert verify_proof_bundle(b, LEAVES[other], ORIGIN, [LOG.verifier()]) is None


def test_verification_failures():
    b = bundle_for(7, 100)
    v = [LOG.verifier()]
    assert verify_proof_bundle(b, LEAVES[7], ORIGIN, v) is not None
    assert verify_proof_bundle(b, LEAVES[7], "other.example/log", v) is None
    stranger = Ed25519Signer(ORIGIN, bytes([2]) * 32)
    assert verify_proof_bundle(b, LEAVES[7], ORIGIN, [stranger.verifier()]) is None
    wrong_index = ProofBundle(8, b.proof, b.checkpoint)
    assert verify_proof_bundle(wrong_index, LEAVES[7], ORIGIN, v) is None
    tampered = ProofBundle(7, (bytes(32), *b.proof[1:]), b.checkpoint)
    assert verify_proof_bundle(tampered, LEAVES[7], ORIGIN, v) is None
    note = parse_note(b.checkpoint)
    forged = format_note(Note(note.text, (NoteSignature(LOG.name, LOG.key_id, bytes(64)),)))
    assert verify_proof_bundle(ProofBundle(7, b.proof, forged), LEAVES[7], ORIGIN, v) is None
    assert verify_proof_bundle(ProofBundle(7, b.proof, b"junk"), LEAVES[7], ORIGIN, v) is None


def test_malformed_bundles_are_rejected():
    good = format_proof_bundle(bundle_for(3, 10))
    head, _, checkpoint = good.partition(b"\n\n")
    h = base64.b64encode(bytes(32))
    bad = [
        b"",
        head,  # no blank line, no checkpoint
        head + b"\n\n",  # no checkpoint
        good.replace(b"tlog-proof@v1", b"tlog-proof@v2"),
        b"\n" + good,
        good.replace(b"index 3", b"index 03"),
        good.replace(b"index 3", b"index -3"),
        good.replace(b"index 3", b"index  3"),
        good.replace(b"index 3", b"index 18446744073709551616"),
        good.replace(b"index 3\n", b""),
        good.replace(b"index 3\n", b"index 3\nextra AA==\n"),  # extra after index
        good.replace(b"index 3", b"extra AA=\nindex 3"),
        good.replace(b"index 3", b"extra A\nindex 3"),
        good.replace(b"\n\n", b"\n" + h[:-1] + b"\n\n", 1),  # non-canonical base64
        good.replace(b"\n\n", b"\n" + base64.b64encode(bytes(31)) + b"\n\n", 1),
        good.replace(b"\n\n", b"\n" + b"\n".join([h] * 64) + b"\n\n", 1),
        head.replace(b"index 3\n", b"index 3\n" + h + b"\r") + b"\n\n" + checkpoint,
        head + b"\n\n" + checkpoint + b"x",
        head + b"\n\n" + checkpoint.replace(b"\n10\n", b"\n010\n"),
        head.replace(b"c2sp", b"\xc3\xa7") + b"\n\n" + checkpoint,
    ]
    for data in bad:
        with pytest.raises(ValueError):
            parse_proof_bundle(data)
    top = b"c2sp.org/tlog-proof@v1\nindex 3\n"
    assert len(parse_proof_bundle(top + b"\n".join([h] * 63) + b"\n\n" + checkpoint).proof) == 63
    assert parse_proof_bundle(top + b"\n" + checkpoint).proof == ()


def test_format_rejects_bad_bundles():
    b = bundle_for(3, 10)
    for bad in [
        ProofBundle(-1, b.proof, b.checkpoint),
        ProofBundle(2**64, b.proof, b.checkpoint),
        ProofBundle(3, (b"x",), b.checkpoint),
        ProofBundle(3, (bytes(32),) * 64, b.checkpoint),
        ProofBundle(3, b.proof, b"not a note"),
    ]:
        with pytest.raises(ValueError):
            format_proof_bundle(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parser_raises_only_value_error(data):
    for prefix in (b"", b"c2sp.org/tlog-proof@v1\nindex 0\n"):
        try:
            parse_proof_bundle(prefix + data)
        except ValueError:
            pass
