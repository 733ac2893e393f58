"""What the attack simulations share: capturing notices and alerts, and checking the victims'
side (the room's other members still talk and sync)."""

from __future__ import annotations

import time

from tests.guard.core_support import bodies, send
from tests.support.harness import Client, ServerThread
from tests.support.rooms import sync


class Told:
    """Captures server notices and alerts (their delivery is the notices part's, tested there)."""

    def __init__(self, server: ServerThread) -> None:
        self.notices: list[tuple[str, str]] = []
        self.alerts: list[tuple[str, str]] = []
        hs = server.hs
        assert hs is not None

        async def send_notice(user_id, body, *, notice_type=None, extra=None):
            self.notices.append((user_id, body))
            return "$notice"

        async def alert(kind, summary, details):
            self.alerts.append((kind, summary))

        hs.server_notices.send_notice = send_notice  # type: ignore[method-assign]
        hs.guard.alerts.alert = alert  # type: ignore[method-assign]


def victims_still_talk(room_id: str, *members: Client) -> list[str]:
    """Each member sends a message and syncs; every message is visible to all of them. The
    room's message bodies (newest first)."""
    said = []
    for i, m in enumerate(members):
        text = f"still talking {i} {time.monotonic_ns()}"
        r = send(m, room_id, text)
        assert r.status == 200, r.body
        said.append(text)
    for m in members:
        resp = sync(m)
        assert room_id in resp["rooms"]["join"]
        seen = bodies(m, room_id)
        assert all(text in seen for text in said)
    return bodies(members[0], room_id)


def wait_for(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")
