"""Stopping the server ends pending /sync long polls at once (C-S API "Syncing": a long poll
may return early), instead of waiting out each client's timeout — real clients always keep one
open."""

from __future__ import annotations

import threading
import time

from tests.server.harness import Client, ServerThread


def test_stop_answers_pending_long_polls(tmp_path):
    srv = ServerThread(tmp_path / "data").start()
    stopped = False
    try:
        user = Client(srv.base_url).register()
        first = user.request("GET", "/_matrix/client/v3/sync", query={"timeout": "0"})
        assert first.status == 200, first.body
        since = first.body["next_batch"]
        got: list = []
        poll = threading.Thread(
            target=lambda: got.append(
                user.request(
                    "GET", "/_matrix/client/v3/sync",
                    query={"since": since, "timeout": "30000"}, timeout=60,
                )
            )
        )  # fmt: skip
        poll.start()
        time.sleep(0.5)  # the long poll is waiting
        assert not got
        t0 = time.monotonic()
        srv.stop()
        stopped = True
        poll.join(10)
        assert time.monotonic() - t0 < 5
        assert got and got[0].status == 200 and got[0].body["next_batch"], got
    finally:
        if not stopped:
            srv.stop()
