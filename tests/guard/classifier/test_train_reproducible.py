"""The training command is reproducible: trained twice (in two processes, different hash
seeds) on a small subset of the shared datasets, it writes the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.guard.classifier.datasets import ROOT, datasets_dir

SRC = ROOT / "src"


def train(out: Path, seed: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONHASHSEED": seed}
    subprocess.run(
        [sys.executable, "-m", "bastion.guard.classifier.train", "--datasets", str(datasets_dir()),
         "--out", str(out), "--limit", "120"],
        check=True, capture_output=True, env=env, timeout=300,
    )  # fmt: skip


def test_same_bytes_twice(tmp_path: Path) -> None:
    train(tmp_path / "a", "1")
    train(tmp_path / "b", "2")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["eval.json", "model.f32", "model.json"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
