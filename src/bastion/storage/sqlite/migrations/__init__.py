"""The SQLite schema, as numbered migrations: the one place where the schema is defined.

Every schema change ships as a new numbered migration, with a test
---------------------------------------------------------------------
A migration is a file in this package named ``NNNN_what_it_does.sql`` (SQL statements) or
``NNNN_what_it_does.py`` (a module with ``def up(conn: sqlite3.Connection) -> None``), numbered
from 1 with no gaps. ``0001_initial.sql`` is the schema of commit cbbfc30, the last before
versioning. Rules:

- Never edit a migration that has been merged: databases in the field have already run it. Fix a
  mistake with a new migration.
- A ``.py`` migration runs inside the transaction the runner opened: it must not ``COMMIT``,
  ``ROLLBACK`` or change ``PRAGMA foreign_keys`` (which SQLite ignores inside a transaction).
- Each migration comes with a test in ``tests/storage/`` that builds a database at the previous
  version, with rows, applies it, and checks the rows and what the new code serves from them.

How a database is opened (:func:`migrate`)
------------------------------------------
The version lives in the ``schema_version`` table: one row per applied migration (version, name,
time). The current version is the highest row.

- An empty database gets every migration, in order.
- A database written before versioning (cbbfc30 and earlier: Bastion tables but no
  ``schema_version``) is checked to have every table and column of migration 1, stamped as
  version 1, and then migrated. One that lacks any of them is refused: it is not a database this
  code wrote.
- Each pending migration runs in its own transaction together with its ``schema_version`` row: a
  failing migration leaves the database at the previous version, untouched.
- A database at a version higher than the newest migration here was written by a newer Bastion;
  it is refused (:class:`SchemaTooNew`) before anything is written.
"""

from __future__ import annotations

import importlib
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

VERSION_TABLE = "schema_version"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sql|py)$")


class SchemaError(Exception):
    """The database cannot be opened by this code; the message says why and what to do."""


class SchemaTooNew(SchemaError):
    def __init__(self, path: str, version: int, newest: int) -> None:
        super().__init__(
            f"the database {path} is at schema version {version}, but this version of Bastion "
            f"understands schema versions up to {newest}: it was written by a newer Bastion. "
            "Run that newer version, or restore a backup taken before the upgrade."
        )
        self.version, self.newest = version, newest


class UnknownSchema(SchemaError):
    pass


class MigrationFailed(SchemaError):
    def __init__(self, path: str, migration: Migration, cause: BaseException) -> None:
        super().__init__(
            f"migration {migration.version} ({migration.name}) of {path} failed and was rolled "
            f"back; the database is unchanged at version {migration.version - 1}: {cause}"
        )
        self.migration = migration


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up: Callable[[sqlite3.Connection], None]


def run_script(conn: sqlite3.Connection, sql: str) -> None:
    """Execute each statement of ``sql`` on ``conn`` in the current transaction
    (``executescript`` would commit it first)."""
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            conn.execute(buf)
            buf = ""
    if buf.strip() and not _only_comments(buf):
        raise ValueError(f"incomplete SQL statement at the end of the script: {buf.strip()!r}")


def _only_comments(sql: str) -> bool:
    return all(not ln.strip() or ln.strip().startswith("--") for ln in sql.splitlines())


def sql_migration(version: int, name: str, sql: str) -> Migration:
    return Migration(version, name, lambda conn: run_script(conn, sql))


def load(package: str = __name__) -> list[Migration]:
    """The migrations of ``package`` in order; refuses gaps and duplicate numbers."""
    found: dict[int, Migration] = {}
    for entry in resources.files(package).iterdir():
        m = _NAME.match(entry.name)
        if m is None:
            continue
        version, name, kind = int(m.group(1)), m.group(2), m.group(3)
        if version in found:
            raise RuntimeError(f"two migrations are numbered {version}")
        if kind == "sql":
            found[version] = sql_migration(version, name, entry.read_text(encoding="utf-8"))
        else:
            module = importlib.import_module(f"{package}.{entry.name[:-3]}")
            found[version] = Migration(version, name, module.up)
    versions = sorted(found)
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migrations must be numbered 1, 2, 3, ... without gaps: {versions}")
    return [found[v] for v in versions]


_MIGRATIONS: list[Migration] | None = None


def migrations() -> list[Migration]:
    """This package's migrations (loaded once)."""
    global _MIGRATIONS  # noqa: PLW0603 - a load-once cache
    if _MIGRATIONS is None:
        _MIGRATIONS = load()
    return _MIGRATIONS


def current_version(conn: sqlite3.Connection) -> int | None:
    """The database's schema version; 0 when it is empty, None when it has tables but no
    version (written before versioning)."""
    if _has_table(conn, VERSION_TABLE):
        row = conn.execute(f"SELECT MAX(version) FROM {VERSION_TABLE}").fetchone()  # noqa: S608
        return row[0] or 0
    tables = conn.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchone()[0]
    return None if tables else 0


def migrate(
    conn: sqlite3.Connection, path: str, available: Sequence[Migration] | None = None
) -> int:
    """Bring the database on ``conn`` (autocommit mode, no open transaction) to the newest of
    ``available`` (default: this package's); returns the version reached.

    Each step reads the version and acts on it inside one write transaction, so two processes
    opening the same database at once (the server and an admin command) never apply a
    migration twice."""
    available = list(migrations() if available is None else available)
    newest = available[-1].version if available else 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        step: Migration | None = None
        try:
            version = current_version(conn)
            if version is not None and version > newest:
                raise SchemaTooNew(path, version, newest)
            if version is None:
                _stamp_unversioned(conn, path, available)
            elif version == newest:
                conn.execute("COMMIT")
                return version
            else:
                step = available[version]
                _ensure_version_table(conn)
                step.up(conn)
                _record(conn, step)
        except SchemaError:
            conn.execute("ROLLBACK")
            raise
        except BaseException as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if step is None:
                raise
            raise MigrationFailed(path, step, e) from e
        conn.execute("COMMIT")


def _record(conn: sqlite3.Connection, migration: Migration) -> None:
    conn.execute(
        f"INSERT INTO {VERSION_TABLE} (version, name, applied_ts) VALUES (?, ?, ?)",  # noqa: S608
        (migration.version, migration.name, int(time.time() * 1000)),
    )


def _stamp_unversioned(conn: sqlite3.Connection, path: str, available: Sequence[Migration]) -> None:
    """A database from before versioning must hold every table and column of migration 1
    exactly as that code created them; then it is at version 1. Runs inside the caller's
    transaction."""
    if not available:
        raise UnknownSchema(f"the database {path} has tables but no schema version")
    expected = _tables_of(available[0])
    missing: list[str] = []
    for table, columns in expected.items():
        have = _columns(conn, table)
        if not have:
            missing.append(table)
        else:
            missing += [f"{table}.{c}" for c in columns if c not in have]
    if missing:
        raise UnknownSchema(
            f"the database {path} has tables but no schema version, and is not a Bastion "
            f"database from before versioning: it lacks {', '.join(missing[:10])}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        )
    _ensure_version_table(conn)
    _record(conn, available[0])


def _tables_of(migration: Migration) -> dict[str, list[str]]:
    """The tables and columns a migration creates on an empty database."""
    mem = sqlite3.connect(":memory:", isolation_level=None)
    try:
        migration.up(mem)
        names = [
            r[0]
            for r in mem.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {n: list(_columns(mem, n)) for n in names}
    finally:
        mem.close()


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute("SELECT * FROM pragma_table_info(?)", (table,))}


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def _ensure_version_table(conn: sqlite3.Connection) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ts INTEGER NOT NULL)"
    )
