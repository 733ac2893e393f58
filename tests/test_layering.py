"""The dependency direction of the shell: ``services/`` never imports ``bastion.federation``
(the federation parts implement the interfaces of ``bastion.services.remote`` and are handed to
the services when the homeserver is wired). Every import counts, at module level or inside a
function, relative or absolute. And the storage layer is one interface: outside
``bastion/storage`` nothing imports ``sqlite3``, writes SQL or reaches the database."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import bastion
import bastion.services


def imported_modules(source: str, module: str) -> set[str]:
    """Every module an ``import`` statement anywhere in ``source`` names (``module`` is the
    dotted name of the file, for resolving relative imports)."""
    found: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def _is_federation(name: str) -> bool:
    return name == "bastion.federation" or name.startswith("bastion.federation.")


def test_the_scanner_sees_function_level_and_relative_imports():
    source = "def f():\n    from bastion.federation.edus import x\n"
    assert any(map(_is_federation, imported_modules(source, "bastion.services.a")))
    relative = "from ..federation import client\n"
    assert any(map(_is_federation, imported_modules(relative, "bastion.services.a")))
    assert not any(map(_is_federation, imported_modules("import bastion.services\n", "m")))


def test_services_never_import_federation():
    root = Path(bastion.services.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        module = "bastion.services." + ".".join(path.relative_to(root).with_suffix("").parts)
        names = imported_modules(path.read_text(encoding="utf-8"), module)
        offenders += [f"{path.name}: {n}" for n in sorted(names) if _is_federation(n)]
    assert offenders == []


# -- the storage layer: one interface, no backend outside bastion.storage -----------------------

#: A string that reads as SQL: a query, an insert, an update or a delete (keywords in capitals,
#: as the storage code writes them; prose such as "delete from the list" is not SQL).
_SQL = re.compile(
    r"\bSELECT\b[\s\S]*\bFROM\b|\bINSERT\s+(OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b"
    r"|\bDELETE\s+FROM\b"
)


def storage_leaks(source: str, module: str) -> list[str]:
    """What in ``source`` belongs behind the store: an import of ``sqlite3``, a string literal
    (f-strings included) that reads as SQL, an attribute named ``db`` (the SQLite store's
    database)."""
    leaks = [f"imports {n}" for n in sorted(imported_modules(source, module))
             if n == "sqlite3" or n.startswith("sqlite3.")]  # fmt: skip
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _SQL.search(node.value):
                leaks.append(f"line {node.lineno}: SQL {node.value[:40]!r}")
        elif isinstance(node, ast.JoinedStr):
            text = "".join(
                v.value for v in node.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )  # fmt: skip
            if _SQL.search(text):
                leaks.append(f"line {node.lineno}: SQL {text[:40]!r}")
        elif isinstance(node, ast.Attribute) and node.attr == "db":
            leaks.append(f"line {node.lineno}: .db")
    return leaks


def test_the_storage_scanner_sees_sqlite_sql_and_the_database():
    assert storage_leaks("import sqlite3\n", "m") == ["imports sqlite3"]
    assert storage_leaks("def f():\n    from sqlite3 import Row\n", "m") != []
    assert storage_leaks("x = 'DELETE FROM access_tokens WHERE user_id = ?'\n", "m") != []
    assert storage_leaks("x = 'SELECT MAX(stream_id) FROM device_list_outbound'\n", "m") != []
    prose = "'''Delete from the list, then select one from the rest.'''\n"
    assert storage_leaks(prose, "m") == []
    assert storage_leaks("x = f'UPDATE users SET a = {b}'\n", "m") != []
    assert storage_leaks("x = 'INSERT OR IGNORE INTO t VALUES (1)'\n", "m") != []
    assert storage_leaks("async def f(store):\n    await store.db.write(g)\n", "m") != []
    assert storage_leaks("x = hs.store.db\n", "m") != []
    assert storage_leaks("path = 'homeserver.db'\nawait store.transaction(f)\n", "m") == []


def test_nothing_outside_storage_uses_the_backend():
    """Services, federation, handlers and the shell talk to the store through
    :class:`bastion.storage.interface.Store` only: no ``sqlite3``, no SQL, no ``store.db``."""
    root = Path(bastion.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == "storage":
            continue
        module = "bastion." + ".".join(rel.with_suffix("").parts)
        leaks = storage_leaks(path.read_text(encoding="utf-8"), module)
        offenders += [f"{rel}: {leak}" for leak in leaks]
    assert offenders == []
