"""Running the matrix-js-sdk scripts of tests/js: Node.js, and ``npm ci`` on first use."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

JS_DIR = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with tests/js/node_modules installed from the pinned lock file. Fails
    (never skips) when Node.js >= 20 and npm are not on PATH: the js-sdk tests need them."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed for the matrix-js-sdk tests (not on PATH)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < 20:
        pytest.fail(f"matrix-js-sdk needs Node.js >= 20 here (found {version.stdout.strip()})")
    if not (JS_DIR / "node_modules" / ".package-lock.json").exists():
        r = subprocess.run(
            [npm, "ci", "--prefix", str(JS_DIR), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout}\n{r.stderr}"
    return node


def run_script(node: str, script: str, *args: str, timeout: float = 90) -> dict:
    """Run tests/js/<script> and return its final ``{"result": ...}`` object."""
    r = subprocess.run(
        [node, str(JS_DIR / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=JS_DIR,
    )
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert lines and "result" in lines[-1], r.stdout + r.stderr[-4000:]
    result = lines[-1]["result"]
    assert result["ok"], f"{result.get('error')}\n{result.get('data')}\n{r.stderr[-4000:]}"
    assert r.returncode == 0
    return result
