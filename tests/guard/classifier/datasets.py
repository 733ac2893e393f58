"""Where the shared labelled datasets are (only the tests that train or evaluate read them):
``$BASTION_DATASETS``, else ``../shared/datasets`` beside the checkout (the main checkout), else
``../../shared/datasets`` (a worktree under ``/work/wt``)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def datasets_dir() -> Path:
    env = os.environ.get("BASTION_DATASETS")
    if env:
        return Path(env)
    for candidate in (
        ROOT.parent / "shared" / "datasets",
        ROOT.parent.parent / "shared" / "datasets",
    ):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the shared datasets are not beside the checkout; set BASTION_DATASETS")
