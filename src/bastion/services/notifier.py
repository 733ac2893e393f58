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

#: A listener's future resolves to this when the server shuts down: the long poll answers at once.
_CLOSED = object()


class Listener:
    __slots__ = ("future", "keys")

    def __init__(self, future: asyncio.Future, keys: frozenset[str]) -> None:
        self.future = future
        self.keys = keys

    async def wait(self, timeout_s: float) -> bool:
        """True if woken, False on timeout (or when the server is shutting down)."""
        if timeout_s <= 0:
            return self.future.done() and self.future.result() is not _CLOSED
        try:
            await asyncio.wait_for(asyncio.shield(self.future), timeout_s)
        except TimeoutError:
            return False
        return self.future.result() is not _CLOSED


class Notifier:
    def __init__(self) -> None:
        self._waiters: dict[str, set[Listener]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @contextlib.contextmanager
    def listen(self, keys: Iterable[str]) -> Iterator[Listener]:
        loop = asyncio.get_running_loop()
        listener = Listener(loop.create_future(), frozenset(keys))
        if self._closed:
            listener.future.set_result(_CLOSED)
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

    def close(self) -> None:
        """Shutting down: every long poll, waiting or yet to wait, ends as if timed out, so
        stopping the server does not wait out the clients' /sync timeouts."""
        self._closed = True
        for bucket in self._waiters.values():
            for listener in bucket:
                if not listener.future.done():
                    listener.future.set_result(_CLOSED)

    def notify_threadsafe(self, _position: int, keys: set[str]) -> None:
        """Store commit listener: runs on the writer thread, hops to the loop."""
        if self._loop is not None and keys:
            self._loop.call_soon_threadsafe(self.notify, keys)
