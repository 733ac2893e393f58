"""Helpers for the EDU, query and cross-server E2EE tests: two TLS Bastions, a room shared over
federation, signed federation requests, sync polling."""

from __future__ import annotations

import asyncio
import time
import urllib.parse

import pytest

from bastion.core.x_matrix import authorization_header
from tests.support.federation import https, run, start_fed_server
from tests.support.harness import Client

V3 = "/_matrix/client/v3"
FAST = {"federation_retry_min_ms": 200, "federation_retry_max_ms": 1000}


@pytest.fixture
def pair(tmp_path, test_ca):
    a = start_fed_server(tmp_path, test_ca, "a", **FAST)
    b = start_fed_server(tmp_path, test_ca, "b", **FAST)
    yield a, b
    a.stop()
    b.stop()


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def fed(ca, src, dst, method: str, path: str, body=None):
    """(status, json) of a federation request from ``src`` to ``dst``, signed by ``src``."""
    key = src.hs.signing_key
    auth = authorization_header(
        method, path, src.hs.server_name, dst.hs.server_name, key.key_id, key.key, body
    )
    return https(ca, dst.hs.federation_bound_port, method, path, body, {"Authorization": auth})


def sync_until(c: Client, cond, since: str | None = None, timeout: float = 20.0):
    """Sync until ``cond(responses so far)`` holds; returns (responses, next_batch)."""
    deadline = time.monotonic() + timeout
    seen: list[dict] = []
    while time.monotonic() < deadline:
        query = {"timeout": "500"}
        if since:
            query["since"] = since
        r = c.request("GET", f"{V3}/sync", query=query)
        assert r.status == 200, r.body
        seen.append(r.body)
        since = r.body["next_batch"]
        if cond(seen):
            return seen, since
    pytest.fail(f"sync condition not met for {c.user_id}")


def wait_for(pred, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    pytest.fail("condition not met in time")


def members(c: Client, room_id: str) -> set[str]:
    r = c.request("GET", f"{V3}/rooms/{q(room_id)}/joined_members")
    return set(r.body.get("joined", {})) if r.status == 200 else set()


def shared_room(alice: Client, bob: Client, **create) -> str:
    """alice (server A) creates a room and invites bob (server B), who joins over federation;
    returns once A has bob's join."""
    r = alice.request("POST", f"{V3}/createRoom", {"invite": [bob.user_id], **create})
    assert r.status == 200, r.body
    room_id = r.body["room_id"]
    deadline = time.monotonic() + 20
    while True:
        r = bob.request("POST", f"{V3}/join/{q(room_id)}", {})
        if r.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # the invite may not have reached B yet
    assert r.status == 200, r.body
    wait_for(lambda: bob.user_id in members(alice, room_id))
    return room_id


def idle(srv) -> None:
    """Wait for the server's background EDU work (device-list sends and resyncs)."""

    async def go() -> None:
        await srv.hs.federation.device_lists.wait_idle()
        await srv.hs.federation.edus.wait_idle()
        await asyncio.sleep(0)

    run(srv, go())
