"""C2SP tlog-cosignature (bastion.ledger.cosignature): the spec's example, Ed25519
cosignature/v1 and ML-DSA-44 subtree/v1 sign/verify, vkeys and rejections."""

from __future__ import annotations

import pytest

from bastion.ledger.checkpoint import Checkpoint, format_checkpoint, parse_checkpoint
from bastion.ledger.cosignature import (
    MLDSA44_SIGNATURE_SIZE,
    SIG_TYPE_COSIGNATURE_V1,
    SIG_TYPE_SUBTREE_V1,
    CosignatureVerifier,
    Ed25519Cosigner,
    MLDSA44Cosigner,
    cosignature_v1_message,
    subtree_v1_message,
)
from bastion.ledger.note import (
    Ed25519Signer,
    Note,
    NoteError,
    NoteSignature,
    format_note,
    format_vkey,
    parse_note,
    parse_vkey,
    verify_note,
)

# tlog-cosignature, the example at the top of the document.
SPEC_COSIGNED = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcy"
    "v2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b"
    "2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
).encode()

ORIGIN = "bastion.example/bastion-ledger"
TEXT = format_checkpoint(Checkpoint(ORIGIN, 1234, bytes(range(32))))
MLDSA_SEED = bytes(range(100, 132))


def test_the_spec_example():
    note = parse_note(SPEC_COSIGNED)
    cp = parse_checkpoint(note.text)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    cosig = note.signatures[1]
    assert cosig.name == "witness.example.com/w1"
    assert len(cosig.signature) == 8 + 64
    # The example's timestamp is the one of the spec's example signed message.
    v = Ed25519Cosigner("witness.example.com/w1", bytes(32)).verifier()
    assert v.timestamp(cosig) == 1679315147
    assert cosignature_v1_message(note.text, 1679315147) == (
        b"cosignature/v1\n"
        b"time 1679315147\n"
        b"example.com/behind-the-sofa\n"
        b"20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    # Not this key (ID differs): ignored, not rejected.
    assert verify_note(note, [v]) == []


def test_ed25519_cosignature_round_trip():
    cosigner = Ed25519Cosigner("witness.example/w1", bytes([7]) * 32)
    sig = cosigner.cosign(TEXT, 1_700_000_000)
    assert sig.signature[:8] == (1_700_000_000).to_bytes(8, "big")
    v = parse_vkey(cosigner.vkey())
    assert isinstance(v, CosignatureVerifier)
    assert v.sig_type == SIG_TYPE_COSIGNATURE_V1 and v.key_id == cosigner.key_id
    assert v.verify(TEXT, sig)
    assert v.timestamp(sig) == 1_700_000_000
    # The signed message is cosignature/v1 || time || the checkpoint text.
    from nacl.signing import VerifyKey

    VerifyKey(cosigner.public_key).verify(
        cosignature_v1_message(TEXT, 1_700_000_000), sig.signature[8:]
    )
    # Another timestamp, another checkpoint, a flipped bit: refused.
    forged = NoteSignature(
        sig.name, sig.key_id, (1_700_000_001).to_bytes(8, "big") + sig.signature[8:]
    )
    assert not v.verify(TEXT, forged)
    other = format_checkpoint(Checkpoint(ORIGIN, 1235, bytes(range(32))))
    assert not v.verify(other, sig)
    assert not v.verify("not a checkpoint\n", sig)
    assert not v.verify(TEXT, NoteSignature(sig.name, sig.key_id, sig.signature[:-1]))
    # The same Ed25519 key as a note signer (type 0x01) has another key ID.
    assert Ed25519Signer("witness.example/w1", bytes([7]) * 32).key_id != cosigner.key_id
    # In a note, with the log's signature.
    log = Ed25519Signer(ORIGIN, bytes(32))
    note = parse_note(format_note(Note(TEXT, (log.sign(TEXT), sig))))
    lv = log.verifier()
    assert verify_note(note, [lv, v]) == [lv, v]
    assert verify_note(note, [v]) == [v]


def test_extension_lines_are_signed_by_ed25519():
    cosigner = Ed25519Cosigner("witness.example/w1", bytes([7]) * 32)
    text = format_checkpoint(Checkpoint(ORIGIN, 5, bytes(32), ("ext",)))
    sig = cosigner.cosign(text, 1)
    assert cosigner.verifier().verify(text, sig)
    assert not cosigner.verifier().verify(text.replace("ext", "exu"), sig)


def test_mldsa44_subtree_cosignature_round_trip():
    cosigner = MLDSA44Cosigner(ORIGIN, MLDSA_SEED)
    assert len(cosigner.public_key) == 1312
    sig = cosigner.cosign(TEXT, 1_700_000_000)
    assert len(sig.signature) == 8 + MLDSA44_SIGNATURE_SIZE
    v = parse_vkey(cosigner.vkey())
    assert isinstance(v, CosignatureVerifier) and v.sig_type == SIG_TYPE_SUBTREE_V1
    assert v.verify(TEXT, sig)
    assert v.timestamp(sig) == 1_700_000_000
    assert v.verify_subtree(ORIGIN, 0, 1234, bytes(range(32)), sig)
    # The message commits to the cosigner name, the origin, the range and the hash.
    from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PublicKey

    msg = subtree_v1_message(ORIGIN, 1_700_000_000, ORIGIN, 0, 1234, bytes(range(32)))
    assert msg.startswith(b"subtree/v1\n\x00" + bytes([len(ORIGIN)]) + ORIGIN.encode())
    assert msg.endswith((0).to_bytes(8, "big") + (1234).to_bytes(8, "big") + bytes(range(32)))
    MLDSA44PublicKey.from_public_bytes(cosigner.public_key).verify(sig.signature[8:], msg)
    assert not v.verify_subtree(ORIGIN, 0, 1233, bytes(range(32)), sig)
    assert not v.verify_subtree("other.example/log", 0, 1234, bytes(range(32)), sig)
    assert not v.verify(format_checkpoint(Checkpoint(ORIGIN, 1234, bytes(32))), sig)
    # Extension lines are not signed by subtree/v1.
    assert v.verify(format_checkpoint(Checkpoint(ORIGIN, 1234, bytes(range(32)), ("x",))), sig)
    # Another name with the same key: another key ID, and the name is in the message.
    renamed = CosignatureVerifier("other.example/w", SIG_TYPE_SUBTREE_V1, cosigner.public_key)
    assert not renamed.verify(TEXT, NoteSignature(renamed.name, renamed.key_id, sig.signature))
    bad = bytearray(sig.signature)
    bad[100] ^= 1
    assert not v.verify(TEXT, NoteSignature(sig.name, sig.key_id, bytes(bad)))
    # Subtrees not starting at 0 carry no timestamp.
    sub = cosigner.sign_subtree(ORIGIN, 8, 13, bytes(32))
    assert v.timestamp(sub) == 0 and v.verify_subtree(ORIGIN, 8, 13, bytes(32), sub)
    with pytest.raises(ValueError):
        subtree_v1_message(ORIGIN, 5, ORIGIN, 8, 13, bytes(32))
    # The empty tree can be cosigned.
    empty = format_checkpoint(Checkpoint(ORIGIN, 0, bytes(32)))
    assert v.verify(empty, cosigner.cosign(empty, 3))


def test_mldsa44_is_deterministic_from_the_seed():
    a, b = MLDSA44Cosigner(ORIGIN, MLDSA_SEED), MLDSA44Cosigner(ORIGIN, MLDSA_SEED)
    assert a.public_key == b.public_key and a.vkey() == b.vkey()
    assert b.verifier().verify(TEXT, a.cosign(TEXT, 9))


def test_rejections():
    with pytest.raises(ValueError):
        Ed25519Cosigner("w", bytes(31))
    with pytest.raises(ValueError):
        MLDSA44Cosigner("w", bytes(31))
    with pytest.raises(ValueError):
        MLDSA44Cosigner("w" * 256, MLDSA_SEED)
    c = Ed25519Cosigner("w", bytes(32))
    with pytest.raises(ValueError):
        c.cosign(TEXT, -1)
    with pytest.raises(ValueError):
        c.cosign(TEXT, 2**63)
    with pytest.raises(ValueError):
        c.cosign("not a checkpoint\n", 1)
    with pytest.raises(NoteError):
        CosignatureVerifier("w", SIG_TYPE_COSIGNATURE_V1, bytes(31))
    with pytest.raises(NoteError):
        CosignatureVerifier("w", SIG_TYPE_SUBTREE_V1, bytes(32))
    with pytest.raises(NoteError):
        CosignatureVerifier("w", 0x01, bytes(32))
    with pytest.raises(NoteError):
        parse_vkey(format_vkey("w", SIG_TYPE_SUBTREE_V1, bytes(1311)))
    v = c.verifier()
    with pytest.raises(ValueError):
        v.timestamp(NoteSignature("w", v.key_id, b"1234567"))
    # A timestamp above 2**63 - 1 never verifies.
    sig = c.cosign(TEXT, 2**63 - 1)
    assert v.verify(TEXT, sig)
    high = NoteSignature(sig.name, sig.key_id, b"\xff" * 8 + sig.signature[8:])
    assert not v.verify(TEXT, high)
    # Wrong lengths, names, IDs: refused without raising.
    assert not v.verify(TEXT, NoteSignature("w", v.key_id, b""))
    assert not v.verify(TEXT, NoteSignature("x", v.key_id, sig.signature))
    assert not v.verify(TEXT, NoteSignature("w", b"\x00" * 4, sig.signature))
    m = MLDSA44Cosigner("m", MLDSA_SEED).verifier()
    assert not m.verify(TEXT, NoteSignature("m", m.key_id, bytes(8 + 2420)))
    assert not m.verify_subtree(ORIGIN, 5, 3, bytes(32), NoteSignature("m", m.key_id, bytes(2428)))
    assert not v.verify_subtree(ORIGIN, 0, 1, bytes(32), sig)  # not an ML-DSA key
