"""The SQLite driver every connection of the store is opened through: the standard library's
``sqlite3``, or SQLCipher (the ``sqlcipher3`` module of the ``sqlcipher3-binary`` wheel, the
same DB-API) when the database is encrypted at rest.

SQLCipher encrypts every page of the database file and of its write-ahead log with AES-256
(CBC, a random IV per page write) and authenticates each page with an HMAC, so a copy of the
data directory (a backup, a stolen disk) yields neither content nor a page that can be changed
unnoticed. The key is a raw 256-bit key (``PRAGMA key = "x'…'"``): no passphrase, so no
key-derivation cost at each connection; it comes from a file or the environment, never from
the config file (:mod:`bastion.storage.sqlite.at_rest`).

The format Bastion writes (:data:`CIPHER_SETTINGS`) differs from SQLCipher 4's defaults in two
settings, both for speed (issue 10 sets the cost of encryption at rest under 15 %; measured
with ``bench/at_rest.py``): pages are authenticated with HMAC-SHA256 instead of HMAC-SHA512
(SHA-256 has CPU instructions of its own, SHA-512 has none: 1.7 GB/s against 0.6 GB/s on the
benchmark machine; an HMAC-SHA256 tag is as strong an authenticator for a page), and pages are
2 KiB instead of 4 KiB (a message send rewrites one leaf page in each of about fifteen B-trees;
halving the page halves the bytes each of them encrypts and authenticates). A database
encrypted in SQLCipher's default format (:data:`LEGACY_CIPHER_SETTINGS`, what Bastion wrote
before) still opens; ``bastion admin rekey`` rewrites it in the current format.

Errors: :data:`Error` and :data:`DatabaseError` are tuples catching both drivers' exceptions
(their classes differ), for ``except`` clauses.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlcipher3.dbapi2 as sqlcipher

__all__ = [
    "CIPHER_SETTINGS",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "KEY_BYTES",
    "LEGACY_CIPHER_SETTINGS",
    "WrongKey",
    "connect",
    "key_statements",
    "open_sqlcipher",
]

#: The length of a database key (AES-256).
KEY_BYTES = 32

Error: tuple[type[Exception], ...] = (sqlite3.Error, sqlcipher.Error)
DatabaseError: tuple[type[Exception], ...] = (sqlite3.DatabaseError, sqlcipher.DatabaseError)
IntegrityError: tuple[type[Exception], ...] = (sqlite3.IntegrityError, sqlcipher.IntegrityError)


class WrongKey(Exception):
    """The database cannot be read with the key given (a wrong key, no key for an encrypted
    database, or a key for a plaintext one)."""


#: The SQLCipher settings of a database Bastion encrypts (set after the key, before the first
#: read; see the module docstring).
CIPHER_SETTINGS: tuple[str, ...] = (
    "cipher_page_size = 2048",
    "cipher_hmac_algorithm = HMAC_SHA256",
)
#: SQLCipher 4's default format, which databases encrypted by earlier versions of Bastion have.
LEGACY_CIPHER_SETTINGS: tuple[str, ...] = (
    "cipher_page_size = 4096",
    "cipher_hmac_algorithm = HMAC_SHA512",
)


def key_statements(key: bytes, settings: tuple[str, ...] = CIPHER_SETTINGS,
                   schema: str | None = None) -> list[str]:  # fmt: skip
    """The statements that key a SQLCipher connection (or, with ``schema``, a database attached
    to it) with ``key`` in the format ``settings``."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"a database key is {KEY_BYTES} bytes")
    prefix = f"{schema}." if schema else ""
    keying = [] if schema else [f"PRAGMA key = \"x'{key.hex()}'\""]
    return keying + [f"PRAGMA {prefix}{setting}" for setting in settings]


def open_sqlcipher(database: str, key: bytes | None, *, uri: bool = False, **kwargs: Any) -> Any:
    """A SQLCipher connection to ``database``: keyed with ``key`` in the current format, or in
    the legacy one when that is what opens the file; unkeyed without ``key`` (SQLCipher reads
    plaintext databases too, and its ``sqlcipher_export`` copies between the two). Rows are
    :class:`sqlite3.Row`-like (by column name). Raises :class:`WrongKey` when the file cannot
    be read with this key."""
    formats = [CIPHER_SETTINGS, LEGACY_CIPHER_SETTINGS] if key is not None else [()]
    failure: Exception | None = None
    for settings in formats:
        conn = sqlcipher.connect(database, uri=uri, **kwargs)
        # (a wrong key is answered below; SQLCipher would also log it to stderr)
        conn.execute("PRAGMA cipher_log_level = NONE")
        if key is not None:
            for statement in key_statements(key, settings):
                conn.execute(statement)
        conn.row_factory = sqlcipher.Row
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlcipher.DatabaseError as e:
            conn.close()
            failure = e
            continue
        return conn
    what = "the key given" if key is not None else "no key (is it encrypted at rest?)"
    raise WrongKey(f"{database} cannot be read with {what}: {failure}")


def connect(database: str, *, key: bytes | None, uri: bool = False, **kwargs: Any) -> Any:
    """A connection to ``database`` (a path, or a ``file:`` URI with ``uri``): plain SQLite
    without ``key``, SQLCipher keyed with it (:func:`open_sqlcipher`). Rows are
    :class:`sqlite3.Row`-like (by column name). Raises :class:`WrongKey` when the file cannot
    be read with this key."""
    if key is not None:
        return open_sqlcipher(database, key, uri=uri, **kwargs)
    conn: Any = sqlite3.connect(database, uri=uri, **kwargs)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except DatabaseError as e:
        conn.close()
        raise WrongKey(
            f"{database} cannot be read with no key (is it encrypted at rest?): {e}"
        ) from None
    return conn
