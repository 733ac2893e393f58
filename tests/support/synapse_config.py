"""Synapse setup shared by the Synapse interoperability tests and the benchmarks: generating a
homeserver.yaml and the rate limits raised so that they do not throttle a test or a load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LIMIT = {"per_second": 1000, "burst_count": 1000}
SYNAPSE_RATE_LIMITS = {
    "rc_message": LIMIT,
    "rc_registration": LIMIT,
    "rc_login": {"address": LIMIT, "account": LIMIT, "failed_attempts": LIMIT},
    "rc_joins": {"local": LIMIT, "remote": LIMIT},
    "rc_joins_per_room": LIMIT,
    "rc_invites": {"per_room": LIMIT, "per_user": LIMIT, "per_issuer": LIMIT},
    "rc_room_creation": LIMIT,
    "rc_user_directory": LIMIT,
}


def generate_synapse_config(data: Path, name: str) -> Path:
    """Have Synapse write its homeserver.yaml (and signing key) for server ``name`` into the
    existing directory ``data``; returns the config's path."""
    cfg_path = data / "homeserver.yaml"
    subprocess.run(
        [sys.executable, "-m", "synapse.app.homeserver", "--generate-config", "-H", name,
         "-c", str(cfg_path), "--report-stats=no", "--data-directory", str(data)],
        check=True, cwd=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip
    return cfg_path
