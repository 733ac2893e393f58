"""C2SP signed-note (bastion.ledger.note): the spec's own example, key IDs, vkeys, Ed25519
sign/verify round trips and the rejection of malformed notes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.ledger.note import (
    MAX_NOTE_SIZE,
    Ed25519Signer,
    Ed25519Verifier,
    Note,
    NoteError,
    NoteSignature,
    b64decode_strict,
    format_note,
    format_vkey,
    key_id,
    parse_note,
    parse_signature_line,
    parse_vkey,
    verify_note,
)

# signed-note "Verifier keys", "Example".
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n"
    "\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXm"
    "RKuwHjG1Yu72IneyaQM=\n"
).encode()
# The note at the top of signed-note (its key is not given in the spec).
SPEC_POEM = (
    "Ognuno sta solo sul cuor della terra\n"
    "trafitto da un raggio di sole:\n"
    "\n"
    "ed è subito sera.\n"
    "\n"
    "— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMou"
    "FSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
).encode()

SEED = bytes(range(32))


def test_the_spec_example_verifies():
    v = parse_vkey(SPEC_VKEY)
    assert (v.name, v.key_id, v.sig_type) == ("example.com/foo", bytes.fromhex("530d903a"), 1)
    note = parse_note(SPEC_NOTE)
    assert note.text == "This is an example message.\n"
    assert len(note.signatures) == 1
    assert note.signatures[0].key_id == bytes.fromhex("530d903a")
    assert verify_note(note, [v]) == [v]
    assert format_note(note) == SPEC_NOTE
    # The key ID is the first four bytes of SHA-256(name || "\n" || 0x01 || public key).
    assert isinstance(v, Ed25519Verifier)
    assert (
        key_id("example.com/foo", 1, v.public_key)
        == (hashlib.sha256(b"example.com/foo\n\x01" + v.public_key).digest()[:4])
    )
    assert format_vkey("example.com/foo", 1, v.public_key) == SPEC_VKEY
    # Tampered text or signature: not verified.
    tampered = Note("This is an example message!\n", note.signatures)
    assert verify_note(tampered, [v]) == []


def test_the_poem_parses_with_its_blank_line_in_the_text():
    note = parse_note(SPEC_POEM)
    assert note.text.endswith("\n\ned è subito sera.\n")
    assert note.signatures[0].name == "quasimodo.example/salvatore"
    assert format_note(note) == SPEC_POEM
    # An unknown key is ignored: nothing verifies.
    assert verify_note(note, [parse_vkey(SPEC_VKEY)]) == []


def test_sign_and_verify_round_trip():
    signer = Ed25519Signer("bastion.example/bastion-ledger", SEED)
    other = Ed25519Signer("witness.example/w1", bytes(32))
    text = "hello\nworld\n"
    note = Note(text, (signer.sign(text), other.sign(text)))
    data = format_note(note)
    assert parse_note(data) == note
    v1, v2 = parse_vkey(signer.vkey()), parse_vkey(other.vkey())
    assert verify_note(parse_note(data), [v1, v2]) == [v1, v2]
    assert verify_note(parse_note(data), [v2]) == [v2]
    # Same name, other key: ignored (name and ID must both match).
    stranger = Ed25519Signer("bastion.example/bastion-ledger", bytes([9]) * 32)
    assert verify_note(note, [stranger.verifier()]) == []
    # A known key whose signature fails rejects the whole note.
    bad = NoteSignature(signer.name, signer.key_id, bytes(64))
    assert verify_note(Note(text, (bad, other.sign(text))), [v1, v2]) == []
    # A short signature from a known key also fails, without raising.
    short = NoteSignature(signer.name, signer.key_id, b"x")
    assert verify_note(Note(text, (short,)), [v1]) == []


def test_verifier_on_an_invalid_point_does_not_raise():
    pk = bytes([0xFF]) * 32
    v = Ed25519Verifier("a.example", pk)
    assert not v.verify("x\n", NoteSignature("a.example", v.key_id, bytes(64)))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"text\n",  # no signatures
        b"text\n\n",  # a blank line and no signature
        b"text\n\n\xe2\x80\x94 a.example AAAAAAE=",  # no final newline
        b"text\n\n\xe2\x80\x94 a.example AAAAAAE=\n\n",
        b"text\n\n- a.example AAAAAAE=\n",  # hyphen, not an em dash
        b"text\n\n\xe2\x80\x94a.example AAAAAAE=\n",
        b"text\n\n\xe2\x80\x94  AAAAAAE=\n",  # empty name
        b"text\n\n\xe2\x80\x94 a+b AAAAAAE=\n",  # plus in the name
        b"text\n\n\xe2\x80\x94 a\xc2\xa0b AAAAAAE=\n",  # a Unicode space in the name
        b"text\n\n\xe2\x80\x94 a.example AAAAAA==\n",  # 4 bytes: a key ID, no signature
        b"text\n\n\xe2\x80\x94 a.example AAAAAAE\n",  # unpadded
        b"text\n\n\xe2\x80\x94 a.example AAAAAAF=\n",  # non-zero padding bits
        b"text\n\n\xe2\x80\x94 a.example AAAA_AE=\n",  # URL-safe alphabet
        b"text\n\n\xe2\x80\x94 a.example AAAAAAE= \n",
        b"text\n\n\xe2\x80\x94 a.example AAAA AAE=\n",
        b"te\rxt\n\n\xe2\x80\x94 a.example AAAAAAE=\n",  # a control character
        b"te\x00xt\n\n\xe2\x80\x94 a.example AAAAAAE=\n",
        b"te\xffxt\n\n\xe2\x80\x94 a.example AAAAAAE=\n",  # not UTF-8
        b"text\r\n\r\n\xe2\x80\x94 a.example AAAAAAE=\r\n",
        b"text\n\n" + b"\xe2\x80\x94 a.example AAAAAAE=\n" * 101,  # too many signatures
        b"x" * MAX_NOTE_SIZE + b"\n\n\xe2\x80\x94 a.example AAAAAAE=\n",  # too large
    ],
)
def test_malformed_notes_are_rejected(data):
    with pytest.raises(NoteError):
        parse_note(data)


def test_limits_accept_100_signatures():
    line = b"\xe2\x80\x94 a.example AAAAAAE=\n"
    assert len(parse_note(b"text\n\n" + line * 100).signatures) == 100


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "example.com/foo",
        "example.com/foo+530d903a",
        "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # wrong ID
        "example.com/bar+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # other name
        "example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # upper hex
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k=",
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2",
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k+x",
        "example.com/foo+530d903a",
        "example.com+foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903a+Ae==",
    ],
)
def test_malformed_vkeys_are_rejected(vkey):
    with pytest.raises(ValueError):
        parse_vkey(vkey)


def test_unsupported_vkey_types_are_rejected():
    for sig_type in (0x02, 0x03, 0x05, 0xFF):
        with pytest.raises(NoteError):
            parse_vkey(format_vkey("a.example", sig_type, bytes(32)))
    with pytest.raises(NoteError):
        parse_vkey(format_vkey("a.example", 0x01, bytes(31)))  # Ed25519 keys are 32 bytes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parsers_raise_only_value_error(data):
    for parse in (parse_note, lambda d: parse_vkey(d.decode("latin-1"))):
        try:
            parse(data)
        except ValueError:
            pass
    try:
        b64decode_strict(data.decode("latin-1"))
    except ValueError:
        pass
    try:
        parse_signature_line("— a.example " + data.decode("latin-1"))
    except ValueError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), max_size=80)
)
def test_signed_text_round_trips(line):
    signer = Ed25519Signer("a.example", SEED)
    text = line + "\n"
    data = format_note(Note(text, (signer.sign(text),)))
    note = parse_note(data)
    assert note.text == text
    v = signer.verifier()
    assert verify_note(note, [v]) == [v]


def test_signer_arguments():
    with pytest.raises(ValueError):
        Ed25519Signer("a.example", bytes(31))
    with pytest.raises(ValueError):
        Ed25519Signer("a b", SEED)
    with pytest.raises(NoteError):
        format_note(Note("no newline", (Ed25519Signer("a.example", SEED).sign("x"),)))
    with pytest.raises(NoteError):
        format_note(Note("x\n", ()))
