"""The dependency direction of the shell: ``services/`` never imports ``bastion.federation``
(the federation parts implement the interfaces of ``bastion.services.remote`` and are handed to
the services when the homeserver is wired). Every import counts, at module level or inside a
function, relative or absolute."""

from __future__ import annotations

import ast
from pathlib import Path

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
