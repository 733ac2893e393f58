"""C2SP tlog-checkpoint (bastion.ledger.checkpoint): the spec's example, round trips, signing
and the rejection of anything non-canonical."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.ledger.checkpoint import (
    Checkpoint,
    format_checkpoint,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from bastion.ledger.merkle import EMPTY_ROOT
from bastion.ledger.note import Ed25519Signer, parse_note

# tlog-checkpoint, the example at the top of the document.
SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcy"
    "v2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
).encode()

ROOT = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")


def test_the_spec_example_parses():
    note = parse_note(SPEC_CHECKPOINT)
    cp = parse_checkpoint(note.text)
    assert cp == Checkpoint("example.com/behind-the-sofa", 20852163, ROOT)
    assert format_checkpoint(cp) == note.text
    assert note.signatures[0].name == "example.com/behind-the-sofa"
    assert note.signatures[0].key_id == base64.b64decode("Az3grlgt")[:4]


def test_round_trip_with_extensions_and_empty_tree():
    for cp in [
        Checkpoint("bastion.example/bastion-ledger", 0, EMPTY_ROOT),
        Checkpoint("o", 2**64 - 1, bytes(32), ("ext one", "ext+two")),
    ]:
        assert parse_checkpoint(format_checkpoint(cp)) == cp
    assert format_checkpoint(Checkpoint("o", 7, bytes(32), ("x",))).endswith("\nx\n")


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.characters(min_codepoint=0x21, blacklist_categories=("Cs",)), min_size=1),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
)
def test_round_trip_hypothesis(origin, size, root):
    cp = Checkpoint(origin, size, root)
    assert parse_checkpoint(format_checkpoint(cp)) == cp


@pytest.mark.parametrize(
    "text",
    [
        "",
        "o\n",
        "o\n5\n",
        "o\n5\n" + base64.b64encode(bytes(32)).decode(),  # no final newline
        "\n5\n" + base64.b64encode(bytes(32)).decode() + "\n",  # empty origin
        "o\n05\n" + base64.b64encode(bytes(32)).decode() + "\n",  # leading zero
        "o\n00\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n+5\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n-5\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n 5\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n5 \n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n\u0665\n" + base64.b64encode(bytes(32)).decode() + "\n",  # Arabic-Indic digit
        "o\n18446744073709551616\n" + base64.b64encode(bytes(32)).decode() + "\n",  # 2**64
        "o\n5\n" + base64.b64encode(bytes(31)).decode() + "\n",
        "o\n5\n" + base64.b64encode(bytes(33)).decode() + "\n",
        "o\n5\n" + base64.b64encode(bytes(32)).decode().rstrip("=") + "\n",
        "o\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n",  # non-zero padding bits
        "o\n5\n" + base64.urlsafe_b64encode(b"\xff" * 32).decode() + "\n",
        "o\n5\n" + base64.b64encode(bytes(32)).decode() + "\n\n",  # an empty extension
        "o\n5\n" + base64.b64encode(bytes(32)).decode() + "\nx\n\n",
        "o\r\n5\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\x00\n5\n" + base64.b64encode(bytes(32)).decode() + "\n",
    ],
)
def test_non_canonical_checkpoints_are_rejected(text):
    with pytest.raises(ValueError):
        parse_checkpoint(text)


def test_format_rejects_bad_checkpoints():
    for cp in [
        Checkpoint("", 1, bytes(32)),
        Checkpoint("a\nb", 1, bytes(32)),
        Checkpoint("o", -1, bytes(32)),
        Checkpoint("o", 2**64, bytes(32)),
        Checkpoint("o", 1, bytes(31)),
        Checkpoint("o", 1, bytes(32), ("",)),
        Checkpoint("o", 1, bytes(32), ("a\nb",)),
    ]:
        with pytest.raises(ValueError):
            format_checkpoint(cp)


def test_sign_and_open():
    signer = Ed25519Signer("bastion.example/bastion-ledger", bytes(range(32)))
    cp = Checkpoint("bastion.example/bastion-ledger", 12, bytes(range(32)))
    data = sign_checkpoint(cp, [signer])
    opened, note, verified = open_checkpoint(data, [signer.verifier()])
    assert opened == cp and note.text == format_checkpoint(cp)
    assert [v.key_id for v in verified] == [signer.key_id]
    stranger = Ed25519Signer("bastion.example/bastion-ledger", bytes(32))
    assert open_checkpoint(data, [stranger.verifier()])[2] == []
    # The note is fine, the text is not a checkpoint.
    from bastion.ledger.note import Note, format_note

    junk = format_note(Note("hello\n", (signer.sign("hello\n"),)))
    with pytest.raises(ValueError):
        open_checkpoint(junk, [signer.verifier()])
