"""The SQLite driver every connection of the store is opened through: the standard library's
``sqlite3``, or SQLCipher (the ``sqlcipher3`` module of the ``sqlcipher3-binary`` wheel, the
same DB-API) when the database is encrypted at rest.

SQLCipher encrypts every page of the database file and of its write-ahead log with AES-256
(CBC, a random IV per page write) and authenticates each page with HMAC-SHA512, so a copy of
the data directory (a backup, a stolen disk) yields neither content nor a page that can be
changed unnoticed. The key is a raw 256-bit key (``PRAGMA key = "x'…'"``): no passphrase, so no
key-derivation cost at each connection; it comes from a file or the environment, never from
the config file (:mod:`bastion.storage.sqlite.at_rest`).

Errors: :data:`Error` and :data:`DatabaseError` are tuples catching both drivers' exceptions
(their classes differ), for ``except`` clauses.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlcipher3.dbapi2 as sqlcipher  # type: ignore[import-untyped]

__all__ = ["DatabaseError", "Error", "IntegrityError", "KEY_BYTES", "WrongKey", "connect"]

#: The length of a database key (AES-256).
KEY_BYTES = 32

Error: tuple[type[Exception], ...] = (sqlite3.Error, sqlcipher.Error)
DatabaseError: tuple[type[Exception], ...] = (sqlite3.DatabaseError, sqlcipher.DatabaseError)
IntegrityError: tuple[type[Exception], ...] = (sqlite3.IntegrityError, sqlcipher.IntegrityError)


class WrongKey(Exception):
    """The database cannot be read with the key given (a wrong key, no key for an encrypted
    database, or a key for a plaintext one)."""


def connect(database: str, *, key: bytes | None, uri: bool = False, **kwargs: Any) -> Any:
    """A connection to ``database`` (a path, or a ``file:`` URI with ``uri``): plain SQLite
    without ``key``, SQLCipher keyed with it (the key is the connection's first statement, as
    SQLCipher requires). Rows are :class:`sqlite3.Row`-like (by column name). Raises
    :class:`WrongKey` when the file cannot be read with this key."""
    if key is None:
        conn: Any = sqlite3.connect(database, uri=uri, **kwargs)
        conn.row_factory = sqlite3.Row
    else:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a database key is {KEY_BYTES} bytes")
        conn = sqlcipher.connect(database, uri=uri, **kwargs)
        # (a wrong key is answered below; SQLCipher would also log it to stderr)
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        conn.row_factory = sqlcipher.Row
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except DatabaseError as e:
        conn.close()
        what = "the key given" if key is not None else "no key (is it encrypted at rest?)"
        raise WrongKey(f"{database} cannot be read with {what}: {e}") from None
    return conn
