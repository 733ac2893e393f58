"""Helpers for the guard core's tests: a scripted signal source standing in for a detector, the
classifier or the policy lists (monkeypatched onto ``hs.guard.<part>.signals``), and small
client helpers. The guard's own path (combine, record, carry out, review) is the real one."""

from __future__ import annotations

import sqlite3
import urllib.parse
import uuid
from collections.abc import Callable

import orjson

from bastion.guard.signals import EventContext, Signal
from tests.support.accounts import make_admin, on_server
from tests.support.harness import Client, ServerThread

V3 = "/_matrix/client/v3"
GUARD = "/_bastion/admin/v1/guard"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


class Scripted:
    """A signal source: ``rules`` maps a message body (or, for members, the membership) to the
    signal it raises; every context it is asked about is kept in ``seen``."""

    def __init__(self, rules: dict[str, Signal] | None = None,
                 when: Callable[[EventContext], Signal | None] | None = None) -> None:  # fmt: skip
        self.rules = rules or {}
        self.when = when
        self.seen: list[EventContext] = []

    def __call__(self, ctx: EventContext) -> list[Signal]:
        self.seen.append(ctx)
        if self.when is not None:
            s = self.when(ctx)
            return [s] if s is not None else []
        key = ctx.content.get("body") if ctx.readable else None
        if ctx.membership is not None:
            key = f"member:{ctx.membership}"
        s = self.rules.get(key) if isinstance(key, str) else None
        return [s] if s is not None else []


def hold(reason: str = "looks like spam", action: str | None = None) -> Signal:
    return Signal("detector.test", "hold", 0.8, reason, {"n": 1}, action)


def block(reason: str = "spam", action: str | None = None, **evidence) -> Signal:
    return Signal("detector.test", "block", 0.95, reason, evidence, action)


def warn(reason: str = "a bit much") -> Signal:
    return Signal("detector.test", "warn", 0.4, reason)


def script_detectors(server: ServerThread, source: Scripted) -> Scripted:
    server.hs.guard.detectors.signals = source  # type: ignore[method-assign]
    return source


def admin_client(server: ServerThread) -> Client:
    admin = Client(server.base_url).register("admin" + uuid.uuid4().hex[:6])
    make_admin(server, admin.user_id)
    return admin


def create_room(c: Client, **body) -> str:
    r = c.request("POST", V3 + "/createRoom", body)
    assert r.status == 200, r.body
    return r.body["room_id"]


def send(c: Client, room_id: str, body: str, txn: str | None = None, **extra):
    return c.request(
        "PUT", f"{V3}/rooms/{q(room_id)}/send/m.room.message/{txn or uuid.uuid4().hex}",
        {"msgtype": "m.text", "body": body, **extra},
    )  # fmt: skip


def bodies(c: Client, room_id: str) -> list[str]:
    r = c.request("GET", f"{V3}/rooms/{q(room_id)}/messages", query={"dir": "b", "limit": "50"})
    assert r.status == 200, r.body
    return [e["content"].get("body") for e in r.body["chunk"] if e["type"] == "m.room.message"]


def decisions(server: ServerThread, **filters) -> list[dict]:
    return on_server(server, _list(server, filters))


async def _list(server: ServerThread, filters: dict) -> list[dict]:
    return server.hs.store.list_guard_decisions(**filters)


def ledger_actions(server: ServerThread, action: str) -> list[dict]:
    """The ledger's action records of one kind, oldest first (read from the database file)."""
    conn = sqlite3.connect(str(server.config.database_path))
    try:
        rows = conn.execute(
            "SELECT entry FROM ledger_entries WHERE kind = 'action' AND action = ? ORDER BY idx",
            (action,),
        ).fetchall()
    finally:
        conn.close()
    return [orjson.loads(r[0]) for r in rows]


def count_rows(server: ServerThread, table: str) -> int:
    conn = sqlite3.connect(str(server.config.database_path))
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
    finally:
        conn.close()
