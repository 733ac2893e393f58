"""Stopping the server ends pending /sync long polls at once (C-S API "Syncing": a long poll
may return early), instead of waiting out each client's timeout — real clients always keep one
open. It then drains every background service (services/lifecycle.py) before federation stops
and the store closes."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from bastion.config import Config
from bastion.server import HomeServer
from tests.support.harness import Client, ServerThread


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


# -- the service lifecycle: stop drains background work before the store closes ---------------

#: What a background task meeting a closed store looks like in the logs.
_CLOSED_STORE_SIGNS = ("closed database", "ProgrammingError", "database is not open",
                       "Task was destroyed", "was never awaited")  # fmt: skip


def _config(tmp_path, **overrides) -> Config:
    return Config(
        server_name="localhost", data_dir=tmp_path / "data", listen_host="127.0.0.1",
        listen_port=0, registration="open", argon2_time_cost=1, argon2_memory_cost=8192,
        **overrides,
    )  # fmt: skip


#: With a federation listener, so that the federation's background services run too.
FEDERATION = {"federation_listen": "127.0.0.1:0", "tls_self_signed": True}


def _pending_tasks() -> list[asyncio.Task]:
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not me and not t.done()]


def _assert_clean_logs(caplog) -> None:
    for record in caplog.records:
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        text += record.exc_info[0].__name__ if record.exc_info else ""
        assert not any(sign in text for sign in _CLOSED_STORE_SIGNS), text


def test_stop_drains_background_work_before_closing_the_store(tmp_path, caplog):
    """Each background service has work in flight when stop is called: a task that waits,
    then writes and reads the store (what E2EE, device-list, EDU and presence tasks do). Stop
    lets every one finish before the store closes; nothing is left pending or meets a closed
    database."""
    caplog.set_level(logging.DEBUG)

    async def main() -> tuple[list, list, float]:
        hs = HomeServer(_config(tmp_path, **FEDERATION))
        await hs.start()
        await asyncio.to_thread(Client(f"http://127.0.0.1:{hs.bound_port}").register)
        finished: list = []

        async def work(name: str, delay: float) -> None:
            await asyncio.sleep(delay)
            count = await hs.store.db.write(
                lambda conn: conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]
            )
            hs.store.get_local_memberships("@nobody:localhost")  # a read on the loop
            finished.append((name, count))

        services = hs.background_services()
        for i, service in enumerate(services):
            delay = 0.1 if service is hs.federation.sender else 1.0 + 0.1 * i
            service.spawn(work(type(service).__name__, delay))
        t0 = asyncio.get_running_loop().time()
        await hs.stop()
        took = asyncio.get_running_loop().time() - t0
        return finished, _pending_tasks(), took, len(services)

    finished, pending, took, n = asyncio.run(main())
    assert pending == []
    assert len(finished) == n and all(count == 1 for _, count in finished), finished
    assert took < 5
    _assert_clean_logs(caplog)


def test_stop_cancels_work_past_the_deadline_and_refuses_new_work(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)

    async def main():
        hs = HomeServer(_config(tmp_path, shutdown_drain_seconds=1, **FEDERATION))
        await hs.start()
        outcome: list = []

        async def forever() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise

        async def chained() -> None:
            # Work that starts more work while the server drains: the follow-up runs too.
            await asyncio.sleep(0.1)
            hs.federation.device_lists.spawn(follow_up())

        async def follow_up() -> None:
            await asyncio.sleep(0.1)
            await hs.store.db.write(lambda conn: None)
            outcome.append("follow-up done")

        hs.presence.spawn(forever())
        hs.e2ee.spawn(chained())
        # Open-ended network work (a device-list resync) is cancelled as draining begins.
        resync = hs.federation.device_lists.spawn(asyncio.sleep(3600), cancel_on_stop=True)
        t0 = asyncio.get_running_loop().time()
        await hs.stop()
        took = asyncio.get_running_loop().time() - t0
        late = hs.e2ee.spawn(asyncio.sleep(0))
        await asyncio.sleep(0)
        return outcome, took, resync.cancelled(), late.cancelled(), _pending_tasks()

    outcome, took, resync_cancelled, late_cancelled, pending = asyncio.run(main())
    assert sorted(outcome) == ["cancelled", "follow-up done"]
    assert 0.9 < took < 5
    assert resync_cancelled and late_cancelled
    assert pending == []
    _assert_clean_logs(caplog)


def test_after_commit_hook_runs_on_the_loop_and_never_after_close(tmp_path):
    async def main():
        hs = HomeServer(_config(tmp_path))
        await hs.start()
        loop = asyncio.get_running_loop()
        calls: list = []

        def fn(conn):
            hs.store.run_after_commit(
                lambda tag: calls.append((tag, asyncio.get_running_loop())), "a"
            )
            hs.store.run_after_commit(calls.append, "b")
            hs.store.run_after_commit(calls.append, "b")  # equal calls in one batch: once

        await hs.store.db.write(fn)
        assert calls == [("a", loop), "b"]
        await hs.stop()
        # A commit racing the close: its callback is dropped, not run against a closed store.
        hs.store._run_loop_calls({(calls.append, ("late",)): None})  # noqa: SLF001
        return calls

    calls = asyncio.run(main())
    assert len(calls) == 2 and calls[1] == "b"  # nothing ran after the store closed
