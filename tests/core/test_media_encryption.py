"""The media file format of encryption at rest (core/media_encryption.py): round trips at every
chunk boundary, streaming in any piece size, and every change, cut, reordering or wrong key
detected."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.media_encryption import (
    CHUNK,
    HEADER_SIZE,
    Corrupt,
    Encryptor,
    decrypt_bytes,
    decrypt_stream,
    encrypt_bytes,
    new_key,
)

KEY = bytes(range(32))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7])
def test_round_trip_at_chunk_boundaries(size):
    data = bytes(i % 251 for i in range(size))
    stored = encrypt_bytes(KEY, data)
    chunks = max(1, -(-size // CHUNK))
    assert len(stored) == HEADER_SIZE + size + 16 * chunks
    assert decrypt_bytes(KEY, stored) == data
    if size >= 16:
        assert data[:16] not in stored


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=3 * CHUNK + 100), st.integers(1, CHUNK + 50), st.integers(1, 4000))
def test_streaming_in_any_pieces(data, write_piece, read_piece):
    enc = Encryptor(KEY)
    stored = bytearray(enc.header())
    for i in range(0, len(data), write_piece):
        stored += enc.update(data[i : i + write_piece])
    stored += enc.finish()
    pieces = [bytes(stored[i : i + read_piece]) for i in range(0, len(stored), read_piece)]
    assert b"".join(decrypt_stream(KEY, pieces)) == data


def test_each_file_has_its_own_salt_and_key():
    a, b = encrypt_bytes(KEY, b"same"), encrypt_bytes(KEY, b"same")
    assert a != b and a[HEADER_SIZE:] != b[HEADER_SIZE:]
    assert new_key() != new_key() and len(new_key()) == 32


def _three_chunks() -> tuple[bytes, bytes]:
    data = b"x" * (2 * CHUNK + 10)
    return data, encrypt_bytes(KEY, data)


@pytest.mark.parametrize("tamper", [
    lambda s: s[:-1],  # cut inside the last chunk
    lambda s: s[: HEADER_SIZE + CHUNK + 16],  # cut at a chunk boundary
    lambda s: s[:HEADER_SIZE],  # only the header
    lambda s: s[:10],  # not even a header
    lambda s: s + b"\0",  # a byte added
    lambda s: s[:HEADER_SIZE + 5] + bytes([s[HEADER_SIZE + 5] ^ 1]) + s[HEADER_SIZE + 6:],
    lambda s: s[:20] + bytes([s[20] ^ 1]) + s[21:],  # the salt changed
    lambda s: b"NOT-MEDIA" + s[9:],  # the magic
    # two full chunks swapped
    lambda s: (s[:HEADER_SIZE] + s[HEADER_SIZE + CHUNK + 16 : HEADER_SIZE + 2 * (CHUNK + 16)]
               + s[HEADER_SIZE : HEADER_SIZE + CHUNK + 16] + s[HEADER_SIZE + 2 * (CHUNK + 16):]),
])  # fmt: skip
def test_every_change_is_detected(tamper):
    _, stored = _three_chunks()
    with pytest.raises(Corrupt):
        decrypt_bytes(KEY, tamper(stored))


def test_wrong_key_is_detected():
    _, stored = _three_chunks()
    with pytest.raises(Corrupt):
        decrypt_bytes(bytes(32), stored)
    with pytest.raises(ValueError):
        encrypt_bytes(b"short", b"x")
