"""The ledger in tests: waiting until a signed checkpoint covers every leaf (before a data
directory is verified with ``bastion ledger verify``)."""

from __future__ import annotations

import time

import pytest

from tests.support.accounts import on_server
from tests.support.harness import ServerThread


def wait_covered(srv: ServerThread, timeout: float = 15.0) -> None:
    """Return once the server's latest checkpoint covers every leaf of its ledger."""

    async def size() -> int:
        return srv.hs.store.ledger_size()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = on_server(srv, size())
        cp = srv.hs.ledger.latest
        if cp is not None and cp.size >= n:
            return
        time.sleep(0.05)
    pytest.fail("no checkpoint covers the ledger")
