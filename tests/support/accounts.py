"""Accounts and users for the tests: users made straight in the store (no dependency on the
registration endpoint), logins and UIA bodies, run code on the server's loop, read its database."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import uuid

from tests.support.harness import Client, ServerThread

PASSWORD = "correct horse battery"


def run_on_server(server: ServerThread, coro):
    """Run a coroutine on the server's event loop and return its result."""
    return asyncio.run_coroutine_threadsafe(coro, server.loop).result(30)


on_server = run_on_server  # the name the account tests use


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


def db_rows(server: ServerThread, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    """Rows read from the server's database file (with its key when it is encrypted at
    rest)."""
    from bastion.storage.sqlite.driver import connect

    conn = connect(str(server.config.database_path), key=server.config.database_key)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def make_admin(server: ServerThread, user_id: str) -> None:
    hs = server.hs

    def fn(conn):
        hs.store.set_user_flag_in(conn, user_id, "is_admin", True)

    on_server(server, hs.store.db.write(fn))


def add_registration_token(
    server: ServerThread, token: str, uses: int | None = None, expiry_ts: int | None = None
) -> None:
    hs = server.hs
    on_server(
        server,
        hs.store.db.write(
            lambda conn: hs.store.create_registration_token_in(
                conn, token, uses, expiry_ts, hs.now_ms()
            )
        ),
    )


def login(client: Client, user: str, password: str = PASSWORD, **extra) -> Client:
    r = client.request(
        "POST", "/_matrix/client/v3/login",
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
         "password": password, **extra},
        token=None,
    )  # fmt: skip
    assert r.status == 200, r.body
    c = Client(client.base_url, r.body["access_token"])
    c.user_id, c.device_id = r.body["user_id"], r.body["device_id"]
    return c


def password_auth(user_id: str, session: str, password: str = PASSWORD) -> dict:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
        "session": session,
    }


def assert_error(r, status: int, errcode: str) -> None:
    assert r.status == status, (r.status, r.body)
    assert r.body.get("errcode") == errcode, r.body
