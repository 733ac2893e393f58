"""The lifecycle shared by every service that works in the background: start, stop, drain.

A service that does work nobody awaits — a write after a /sync answered, a device-list update
sent to other servers, a presence change on an idle timer, a thumbnail being generated — starts
it with :meth:`BackgroundService.spawn` (never a bare ``create_task``) and arms timers with
:meth:`BackgroundService.call_later`, so the service knows what it has in flight.

Shutdown (``HomeServer.stop``) stops accepting requests, then *drains* every service — waits for
the tasks in flight, including tasks they spawn while finishing, up to a deadline, then cancels
what is left — and only then stops federation and closes the store: no background task ever
meets a closed database. A service that has stopped refuses new work (a task spawned then is
cancelled before it runs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)

RUNNING, DRAINING, STOPPED = "running", "draining", "stopped"


class BackgroundService:
    """Base of services that spawn background tasks. Subclasses call ``super().__init__()``."""

    #: Named in log lines about failed tasks.
    background_name = "background"

    def __init__(self) -> None:
        self._bg_tasks: set[asyncio.Task] = set()
        self._bg_cancel_on_stop: set[asyncio.Task] = set()
        self._bg_timers: set[asyncio.TimerHandle] = set()
        self._bg_state = RUNNING

    # -- spawning -----------------------------------------------------------------------------
    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, cancel_on_stop: bool = False
    ) -> asyncio.Task:
        """Run ``coro`` in the background, tracked until it ends (its failure is logged). At
        shutdown it may finish, unless ``cancel_on_stop`` (open-ended network work, e.g. asking
        another server): then it is cancelled when draining begins. Once the service has
        stopped, the task is cancelled before it runs."""
        task = asyncio.get_running_loop().create_task(coro)
        if self._bg_state == STOPPED or (cancel_on_stop and self._bg_state == DRAINING):
            task.cancel()
            return task
        self._bg_tasks.add(task)
        if cancel_on_stop:
            self._bg_cancel_on_stop.add(task)
        task.add_done_callback(self._bg_task_done)
        return task

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        """``loop.call_later``, tracked: timers are cancelled when the service stops (they are
        future work, not work in flight). A stopped service arms no timer."""
        loop = asyncio.get_running_loop()
        holder: list[asyncio.TimerHandle] = []

        def fire() -> None:
            self._bg_timers.discard(holder[0])
            fn(*args)

        handle = loop.call_later(delay, fire)
        holder.append(handle)
        if self._bg_state == STOPPED:
            handle.cancel()
        else:
            self._bg_timers.add(handle)
        return handle

    def cancel_timer(self, handle: asyncio.TimerHandle | None) -> None:
        if handle is not None:
            handle.cancel()
            self._bg_timers.discard(handle)

    def _bg_task_done(self, task: asyncio.Task) -> None:
        self._bg_tasks.discard(task)
        self._bg_cancel_on_stop.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s task failed", self.background_name, exc_info=task.exception())

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def background_tasks(self) -> frozenset[asyncio.Task]:
        """The tasks in flight."""
        return frozenset(self._bg_tasks)

    @property
    def stopped(self) -> bool:
        return self._bg_state == STOPPED

    def start(self) -> None:
        """Accept work (again)."""
        self._bg_state = RUNNING

    async def wait_idle(self) -> None:
        """Wait until no task is in flight (tests; it does not stop the service)."""
        while self._bg_tasks:
            await asyncio.gather(*list(self._bg_tasks), return_exceptions=True)

    async def stop(self, timeout: float = 10.0) -> None:
        """Drain this service alone (see :func:`drain`)."""
        await drain([self], timeout)

    def begin_draining(self) -> None:
        """Shutdown has begun: cancel the timers and the open-ended tasks; the others may
        still finish (and spawn more)."""
        self._bg_state = DRAINING
        for handle in list(self._bg_timers):
            handle.cancel()
        self._bg_timers.clear()
        for task in list(self._bg_cancel_on_stop):
            task.cancel()

    def mark_stopped(self) -> None:
        """No more work: whatever is spawned from now on is cancelled before it runs."""
        self._bg_state = STOPPED


async def drain(services: Iterable[BackgroundService], timeout: float) -> None:
    """Stop ``services`` together: cancel their timers, wait up to ``timeout`` seconds for every
    task in flight — including tasks one service spawns on another while finishing — then cancel
    what is left and mark them stopped."""
    services = list(services)
    for s in services:
        s.begin_draining()
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        pending = {t for s in services for t in s.background_tasks}
        remaining = deadline - time.monotonic()
        if not pending or remaining <= 0:
            break
        await asyncio.wait(pending, timeout=remaining)
    for s in services:
        s.mark_stopped()
    leftover = [t for s in services for t in s.background_tasks]
    if leftover:
        log.warning("cancelling %d background task(s) still running at shutdown", len(leftover))
        for t in leftover:
            t.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)
