"""Where the database key comes from (issue 10, "Encryption at rest"), and changing it.

One config key turns encryption at rest on: ``at_rest_key``, naming where the key is —
``"file:/path/to/key"`` (a file holding 64 hexadecimal digits, written by
``bastion admin rekey --generate``) or ``"env:NAME"`` (an environment variable holding the
same). The key itself is never in the config file: a value that is not ``file:`` or ``env:``
is refused. A key file others may read is refused too (mode must not give group or others
any access), as ssh does for private keys.

Keys are compared and handled as bytes, never logged.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bastion.storage.sqlite.driver import KEY_BYTES, key_statements, open_sqlcipher

__all__ = [
    "DatabaseInUse",
    "KeyError_",
    "load_key",
    "parse_key_text",
    "rekey_database",
    "shared_lock",
    "write_new_key",
]

_HEX = re.compile(r"[0-9a-fA-F]{64}")


class KeyError_(Exception):  # noqa: N801 - KeyError is a builtin
    """The key cannot be read: a clear sentence for the operator (never the key)."""


def parse_key_text(text: str, where: str) -> bytes:
    """A key from its text form: 64 hexadecimal digits (surrounding whitespace ignored)."""
    value = text.strip()
    if not _HEX.fullmatch(value):
        raise KeyError_(f"{where} must hold {KEY_BYTES * 2} hexadecimal digits (a 256-bit key)")
    return bytes.fromhex(value)


def load_key(spec: str, *, environ: dict[str, str] | None = None) -> bytes:
    """The key named by ``at_rest_key`` (``file:PATH`` or ``env:NAME``)."""
    env = os.environ if environ is None else environ
    if spec.startswith("env:"):
        name = spec[4:]
        if not name:
            raise KeyError_("at_rest_key = 'env:NAME' needs the variable's name")
        value = env.get(name)
        if value is None:
            raise KeyError_(f"the environment variable {name} (at_rest_key) is not set")
        return parse_key_text(value, f"the environment variable {name}")
    if spec.startswith("file:"):
        path = Path(spec[5:])
        try:
            st = path.stat()
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyError_(f"the key file {path} is accessible to others: chmod 600 it")
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise KeyError_(f"cannot read the key file {path}: {e}") from None
        return parse_key_text(text, f"the key file {path}")
    raise KeyError_(
        "at_rest_key must be 'file:PATH' or 'env:NAME': the key itself never goes in the "
        "config file"
    )


def write_new_key(path: Path) -> bytes:
    """A new random key written to a new file ``path`` (mode 600; an existing file is never
    overwritten); the key."""
    key = os.urandom(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return key


class DatabaseInUse(Exception):
    """A server (or another command) has the database open."""


def rekey_database(path: Path, old: bytes | None, new: bytes | None) -> None:
    """Change the database's key from ``old`` to ``new`` (None: plaintext), with no server
    running (:class:`DatabaseInUse` otherwise: a server holds the database's lock while it
    runs). Every change is ``sqlcipher_export`` into a new file (encrypted in the current format,
    :data:`~bastion.storage.sqlite.driver.CIPHER_SETTINGS`, so a rekey also brings a database
    of the legacy format up to date) that replaces the old one, whose bytes are overwritten
    with zeros first (a best effort on flash storage, which may keep old copies of blocks).
    Raises
    :class:`~bastion.storage.sqlite.driver.WrongKey` when ``old`` does not open it."""
    if old == new:
        raise ValueError("the new key is the old one")
    with exclusive_lock(path):
        conn = _sqlcipher(path, old)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            tmp = path.with_name(path.name + ".rekey")
            tmp.unlink(missing_ok=True)
            target = "''" if new is None else f"\"x'{new.hex()}'\""
            conn.execute(f"ATTACH DATABASE ? AS rekeyed KEY {target}", (str(tmp),))
            if new is not None:
                for statement in key_statements(new, schema="rekeyed"):
                    conn.execute(statement)
            conn.execute("SELECT sqlcipher_export('rekeyed')")
            version = conn.execute("PRAGMA main.user_version").fetchone()[0]
            conn.execute(f"PRAGMA rekeyed.user_version = {int(version)}")
            conn.execute("DETACH DATABASE rekeyed")
        finally:
            conn.close()
        done = _sqlcipher(tmp, new)
        try:
            done.execute("PRAGMA journal_mode=WAL")
        finally:
            done.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _overwrite(path)
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sqlcipher(path: Path, key: bytes | None) -> Any:
    """A SQLCipher connection (its export function works on plaintext databases too)."""
    return open_sqlcipher(str(path), key, isolation_level=None)


def _overwrite(path: Path) -> None:
    """Zeros over the whole file, synced (before it is replaced)."""
    size = path.stat().st_size
    block = b"\0" * 65536
    with open(path, "rb+") as f:
        left = size
        while left > 0:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """The database's lock file (``<database>.lock``), taken exclusively: a running server
    holds it shared (:func:`shared_lock`). :class:`DatabaseInUse` when it is held."""
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatabaseInUse(f"{path} is in use (stop the server first)") from None
        yield
    finally:
        os.close(fd)


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def shared_lock(path: Path) -> int:
    """Take the database's lock shared (a server, while it runs): a file descriptor to close
    when done. Waits while a rekey holds it."""
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd
