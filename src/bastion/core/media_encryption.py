"""Media files encrypted at rest (issue 10), pure: bytes in, bytes out, no I/O.

Each uploaded file has its own random 256-bit key, kept in the database beside the file's row
(``local_media.file_key``), so deleting the row's key makes the file unreadable wherever a copy
of it lies, backups included (crypto-shredding). The database itself is encrypted with SQLCipher
when encryption at rest is on (:mod:`bastion.storage.sqlite.driver`).

File format (version 1)::

    header   = MAGIC (16 bytes) || salt (16 random bytes)
    file key = HKDF-SHA256(media key, salt, info = "bastion media file v1"), 32 bytes
    chunk i  = AES-256-GCM(file key, nonce_i, plaintext chunk i, aad = header)
    nonce_i  = i as 11 bytes big-endian || 0x01 for the last chunk, else 0x00

Every chunk but the last holds :data:`CHUNK` bytes of plaintext (:data:`CHUNK` + 16 stored);
the last holds 0 to :data:`CHUNK` bytes, so an empty file is one empty chunk. The chunk index
in the nonce stops chunks being reordered or moved between positions, the last-chunk flag stops
a file being cut at a chunk boundary, the header in the associated data ties every chunk to its
salt, and the per-file salt gives the original and each thumbnail of one media (encrypted with
the same media key) a key of its own, so counter nonces never repeat under one key (the
STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár, "Online Authenticated-Encryption
and its Nonce-Reuse Misuse-Resistance", 2015).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["CHUNK", "HEADER_SIZE", "KEY_SIZE", "MAGIC", "Corrupt", "Decryptor", "Encryptor",
           "decrypt_bytes", "encrypt_bytes", "new_key"]  # fmt: skip

MAGIC = b"BASTION-MEDIA1\n\0"
KEY_SIZE = 32
_SALT = 16
HEADER_SIZE = len(MAGIC) + _SALT
#: Plaintext bytes per chunk.
CHUNK = 64 * 1024
_TAG = 16
_INFO = b"bastion media file v1"


class Corrupt(Exception):
    """The file is not a media file of this format, was changed, or was cut short."""


def new_key() -> bytes:
    """A new random media key."""
    return os.urandom(KEY_SIZE)


def _file_cipher(key: bytes, header: bytes) -> AESGCM:
    if len(key) != KEY_SIZE:
        raise ValueError("a media key is 32 bytes")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=header[len(MAGIC) :], info=_INFO)
    return AESGCM(hkdf.derive(key))


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class Encryptor:
    """Encrypts one file as it is written: :meth:`header`, then :meth:`update` with each
    piece of plaintext (ciphertext out, possibly empty), then :meth:`finish`."""

    def __init__(self, key: bytes, salt: bytes | None = None) -> None:
        self._header = MAGIC + (os.urandom(_SALT) if salt is None else salt)
        self._aead = _file_cipher(key, self._header)
        self._buf = bytearray()
        self._index = 0
        self._done = False

    def header(self) -> bytes:
        return self._header

    def update(self, data: bytes) -> bytes:
        """Ciphertext of every whole chunk now available; one full chunk is always held back
        (it may be the last)."""
        if self._done:
            raise ValueError("the file is finished")
        self._buf += data
        out = bytearray()
        while len(self._buf) > CHUNK:
            out += self._seal(bytes(self._buf[:CHUNK]), last=False)
            del self._buf[:CHUNK]
        return bytes(out)

    def finish(self) -> bytes:
        """The last chunk (what is left, 0 to :data:`CHUNK` bytes)."""
        if self._done:
            raise ValueError("the file is finished")
        self._done = True
        out = self._seal(bytes(self._buf), last=True)
        self._buf.clear()
        return out

    def _seal(self, chunk: bytes, *, last: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._index, last), chunk, self._header)
        self._index += 1
        return sealed


class Decryptor:
    """Decrypts one file as it is read: :meth:`feed` the stored bytes in pieces (plaintext
    out), then :meth:`finish` (raises :class:`Corrupt` unless the last chunk was seen)."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._aead: AESGCM | None = None
        self._header = b""
        self._buf = bytearray()
        self._index = 0
        self._done = False

    def feed(self, data: bytes) -> bytes:
        if self._done:
            if data:
                raise Corrupt("bytes after the last chunk")
            return b""
        self._buf += data
        out = bytearray()
        if self._aead is None:
            if len(self._buf) < HEADER_SIZE:
                return b""
            self._header = bytes(self._buf[:HEADER_SIZE])
            if not self._header.startswith(MAGIC):
                raise Corrupt("not an encrypted media file")
            del self._buf[:HEADER_SIZE]
            self._aead = _file_cipher(self._key, self._header)
        # A full stored chunk followed by more bytes is not the last one.
        while len(self._buf) > CHUNK + _TAG:
            out += self._open(bytes(self._buf[: CHUNK + _TAG]), last=False)
            del self._buf[: CHUNK + _TAG]
        return bytes(out)

    def finish(self) -> bytes:
        """The plaintext of the last chunk (what is left)."""
        if self._done:
            return b""
        if self._aead is None or len(self._buf) < _TAG:
            raise Corrupt("the file is cut short")
        out = self._open(bytes(self._buf), last=True)
        self._buf.clear()
        self._done = True
        return out

    def _open(self, sealed: bytes, *, last: bool) -> bytes:
        assert self._aead is not None
        try:
            plain = self._aead.decrypt(_nonce(self._index, last), sealed, self._header)
        except InvalidTag:
            raise Corrupt("the file was changed, cut short or has the wrong key") from None
        self._index += 1
        return plain


def encrypt_bytes(key: bytes, data: bytes) -> bytes:
    """A whole file's stored bytes (thumbnails: small, made in memory)."""
    enc = Encryptor(key)
    return enc.header() + enc.update(data) + enc.finish()


def decrypt_bytes(key: bytes, stored: bytes) -> bytes:
    """A whole file's plaintext."""
    dec = Decryptor(key)
    return dec.feed(stored) + dec.finish()


def decrypt_stream(key: bytes, pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Plaintext pieces of a file read in ``pieces`` (raises :class:`Corrupt` on the way)."""
    dec = Decryptor(key)
    for piece in pieces:
        out = dec.feed(piece)
        if out:
            yield out
    last = dec.finish()
    if last:
        yield last
