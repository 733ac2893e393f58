"""Helpers of the login attack simulations: requests from a chosen loopback address (the whole
of 127.0.0.0/8 is the loopback interface, so a client may bind 127.0.0.2, 127.0.0.3, ...), a
fake clock for the login defence, the ledger's action records and captured alerts."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.support.accounts import call_on_server

V3 = "/_matrix/client/v3"
LOGIN = f"{V3}/login"
REGISTER = f"{V3}/register"
THROTTLES = "/_bastion/admin/v1/guard/throttles"
DAY_MS = 86_400_000


@dataclass
class Answer:
    status: int
    body: dict


def request(base_url: str, method: str, path: str, body: object = None, *,
            source: str | None = None, token: str | None = None) -> Answer:  # fmt: skip
    """One request over a new connection whose client end is bound to ``source``."""
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(
        url.hostname, url.port, timeout=60,
        source_address=(source, 0) if source else None,
    )  # fmt: skip
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        return Answer(resp.status, json.loads(payload) if payload else {})
    finally:
        conn.close()


def password_login(base_url: str, user: str, password: str, *, source: str | None = None,
                   device_id: str | None = None) -> Answer:  # fmt: skip
    body: dict = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
                  "password": password}  # fmt: skip
    if device_id is not None:
        body["device_id"] = device_id
    return request(base_url, "POST", LOGIN, body, source=source)


class FakeClock:
    """The login defence's clock, moved by the test (no sleeps)."""

    def __init__(self, server, start_ms: int) -> None:
        self.now = start_ms
        server.hs.guard.login.now_ms = lambda: self.now

    def advance(self, ms: int) -> None:
        self.now += ms


def action_records(server, action: str | None = None) -> list[dict]:
    """The ledger's action records (of one ``action``), in order."""

    def read() -> list[dict]:
        out = []
        for row in server.hs.store.ledger_iter_entries():
            if row.kind == "action":
                rec = json.loads(row.entry)
                if action is None or rec["action"] == action:
                    out.append(rec)
        return out

    return call_on_server(server, read)


def capture_alerts(server) -> list[tuple[str, str, dict]]:
    """Alerts raised by the guard from now on (kind, summary, details), also passed on."""
    alerts = server.hs.guard.alerts
    seen: list[tuple[str, str, dict]] = []
    original = alerts.alert

    async def alert(kind, summary, details):
        seen.append((kind, summary, dict(details)))
        await original(kind, summary, details)

    alerts.alert = alert
    return seen


def wait_for(predicate, timeout: float = 10.0) -> None:
    """Poll until ``predicate()`` is true (background work such as alerts after a commit)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def decisions(server, source: str) -> list[dict]:
    """The ``guard.decision`` ledger records of one source."""
    return [r for r in action_records(server, "guard.decision") if r["details"]["source"] == source]


def count_password_checks(server) -> list[int]:
    """A counter (``[n]``) of the argon2 verifications the server runs from now on."""
    passwords = server.hs.passwords
    counter = [0]
    original = passwords.verify

    def verify(password_hash, password):
        counter[0] += 1
        return original(password_hash, password)

    passwords.verify = verify
    return counter
