"""The suite run with encryption at rest on (issue 10: "the whole existing suite passes with it
on"): ``BASTION_TEST_AT_REST=1 python -m pytest``.

In that mode every :class:`~tests.support.harness.ServerThread` on a new data directory is
started with ``at_rest_key = "env:BASTION_TEST_AT_REST_KEY"`` (a random key for the run), so
its database is SQLCipher and its media files are encrypted; a data directory restored from a
plaintext fixture stays plaintext (as an operator's would until ``bastion admin rekey``).
Tests read databases with ``sqlite3.connect``: :func:`install` makes that open an encrypted
file with the run's key (a SQLCipher connection whose ``row_factory = sqlite3.Row`` is taken as
SQLCipher's row, and whose backup into a new file encrypts it with the same key), so the tests'
own reads and copies need no change.
A test about plaintext storage itself (a byte scan that must first find its strings, a
plaintext database turned encrypted) starts its server with ``at_rest_key=""``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import sqlcipher3.dbapi2 as sqlcipher

from bastion.storage.sqlite.driver import key_statements

ENABLE = "BASTION_TEST_AT_REST"
KEY_ENV = "BASTION_TEST_AT_REST_KEY"
_PLAIN_HEADER = b"SQLite format 3\0"
_connect = sqlite3.connect


def enabled() -> bool:
    return os.environ.get(ENABLE, "") not in ("", "0")


def server_settings(data_dir: Path) -> dict[str, Any]:
    """The settings a test server gets in this mode (none for a plaintext database)."""
    if not enabled():
        return {}
    db = Path(data_dir) / "homeserver.db"
    try:
        with open(db, "rb") as f:
            if f.read(16) == _PLAIN_HEADER:
                return {}
    except FileNotFoundError:
        pass
    return {"at_rest_key": f"env:{KEY_ENV}"}


class _Connection(sqlcipher.Connection):
    """A SQLCipher connection that takes the standard library's row class for its own."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "row_factory" and value is sqlite3.Row:
            value = sqlcipher.Row
        super().__setattr__(name, value)

    def backup(self, target: Any, **kwargs: Any) -> None:
        """A copy into a standard-library connection (a test's backup of the database) is
        made, encrypted with the run's key, into that connection's file."""
        if isinstance(target, sqlite3.Connection):
            name = target.execute("PRAGMA database_list").fetchone()[2]
            keyed = sqlcipher.connect(name)
            try:
                for statement in key_statements(_key()):
                    keyed.execute(statement)
                super().backup(keyed, **kwargs)
            finally:
                keyed.close()
            return
        super().backup(target, **kwargs)


def _encrypted_connect(database: Any, *args: Any, **kwargs: Any) -> Any:
    """``sqlite3.connect``, keyed with the run's key when the file is encrypted."""
    path = database
    uri = kwargs.get("uri", False)
    if uri and isinstance(database, str) and database.startswith("file:"):
        path = database[5:].split("?", 1)[0]
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except (OSError, TypeError, ValueError):
        return _connect(database, *args, **kwargs)
    if len(head) < 16 or head == _PLAIN_HEADER:
        return _connect(database, *args, **kwargs)
    kwargs.setdefault("factory", _Connection)
    conn = sqlcipher.connect(database, *args, **kwargs)
    conn.execute("PRAGMA cipher_log_level = NONE")
    for statement in key_statements(_key()):
        conn.execute(statement)
    return conn


def _key() -> bytes:
    return bytes.fromhex(os.environ[KEY_ENV])


def install() -> None:
    """Turn the mode on for this process (a new random key; ``sqlite3.connect`` patched)."""
    os.environ.setdefault(KEY_ENV, os.urandom(32).hex())
    sqlite3.connect = _encrypted_connect  # type: ignore[assignment]
