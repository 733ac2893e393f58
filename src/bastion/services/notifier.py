"""Wakes long-polling /sync requests when something they care about commits (C-S API "Syncing").

Waiters register under keys — a user ID (to-device, account data, device lists, invites) or a
room ID (timeline, state, receipts, typing) — *before* they look for news, so nothing committed
in between is missed. No sleep loops: a waiter is a future resolved by the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterable, Iterator


class Listener:
    __slots__ = ("future", "keys")

    def __init__(self, future: asyncio.Future, keys: frozenset[str]) -> None:
        self.future = future
        self.keys = keys

    async def wait(self, timeout_s: float) -> bool:
        """True if woken, False on timeout."""
        if timeout_s <= 0:
            return self.future.done()
        try:
            await asyncio.wait_for(asyncio.shield(self.future), timeout_s)
        except TimeoutError:
            return False
        return True


class Notifier:
    def __init__(self) -> None:
        self._waiters: dict[str, set[Listener]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @contextlib.contextmanager
    def listen(self, keys: Iterable[str]) -> Iterator[Listener]:
        loop = asyncio.get_running_loop()
        listener = Listener(loop.create_future(), frozenset(keys))
        for k in listener.keys:
            self._waiters[k].add(listener)
        try:
            yield listener
        finally:
            for k in listener.keys:
                bucket = self._waiters.get(k)
                if bucket is not None:
                    bucket.discard(listener)
                    if not bucket:
                        del self._waiters[k]

    def notify(self, keys: Iterable[str]) -> None:
        """Wake every listener on any of ``keys``. Call on the event loop thread."""
        for k in keys:
            for listener in self._waiters.get(k, ()):
                if not listener.future.done():
                    listener.future.set_result(None)

    def notify_threadsafe(self, _position: int, keys: set[str]) -> None:
        """Store commit listener: runs on the writer thread, hops to the loop."""
        if self._loop is not None and keys:
            self._loop.call_soon_threadsafe(self.notify, keys)
