"""Test users made straight in the store (no dependency on the registration endpoint)."""

from __future__ import annotations

import asyncio
import secrets
import uuid

from tests.server.harness import Client, ServerThread


def run_on_server(server: ServerThread, coro):
    """Run a coroutine on the server's event loop and return its result."""
    return asyncio.run_coroutine_threadsafe(coro, server.loop).result(30)


def call_on_server(server: ServerThread, fn, *args):
    """Run a plain function on the server's event loop thread (the store's read connection and
    the services live there) and return its result."""

    async def wrap():
        return fn(*args)

    return run_on_server(server, wrap())


def make_user(server: ServerThread, localpart: str | None = None, *, admin: bool = False) -> Client:
    """A logged-in Client for a new user created directly in the store."""
    hs = server.hs
    assert hs is not None
    localpart = localpart or "u" + uuid.uuid4().hex[:10]
    user_id = f"@{localpart}:{hs.server_name}"
    device_id = "D" + uuid.uuid4().hex[:8].upper()
    token = secrets.token_urlsafe(24)

    async def create():
        await hs.store.create_user(user_id, None, hs.now_ms(), is_admin=admin)
        await hs.store.db.write(
            lambda conn: hs.store.add_device_sync(conn, user_id, device_id, None, token, 0)
        )

    run_on_server(server, create())
    c = Client(server.base_url, token)
    c.user_id, c.device_id = user_id, device_id
    return c
