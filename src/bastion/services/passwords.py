"""Password hashing with argon2id (memory-hard), and constant-time verification.

Hashing runs on a thread pool of its own (:class:`Passwords` ``hash_async`` / ``verify_async``),
never on the event loop's default executor: a flood of logins must not queue media and file I/O
behind seconds of argon2. The pool is bounded twice — ``threads`` computations at once (each
holds ``memory_cost`` KiB while it runs) and at most ``queue`` more waiting — and a request that
finds the queue full is refused at once with 429 ``M_LIMIT_EXCEEDED`` (C-S API "Rate limiting")
instead of waiting or growing the queue.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import ARGON2_VERSION

from bastion.errors import M_LIMIT_EXCEEDED, MatrixError

MAX_PASSWORD_LENGTH = 512

#: ``retry_after_ms`` of the 429 when the hashing queue is full: about one queue's worth of work.
BUSY_RETRY_AFTER_MS = 1000


def default_hash_threads() -> int:
    """Half the CPUs (at least one): argon2 is pure CPU work, and the event loop, the SQLite
    writer and media I/O need the other half to stay responsive during a login flood."""
    return max(1, (os.cpu_count() or 2) // 2)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


class PasswordHashingBusy(MatrixError):
    """Every hashing thread is busy and the queue is full."""

    def __init__(self) -> None:
        super().__init__(
            M_LIMIT_EXCEEDED, "too many password checks in progress; try again shortly", 429,
            retry_after_ms=BUSY_RETRY_AFTER_MS,
        )  # fmt: skip


class Passwords:
    def __init__(self, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 1,
                 *, threads: int = 0, queue: int = 16) -> None:  # fmt: skip
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism
        )
        # Verifying against this when the user does not exist keeps timing uniform: an encoded
        # argon2id hash with our parameters, a random salt and a random digest (which no password
        # matches), made without running argon2 at startup.
        h = self._hasher
        self._dummy = (
            f"$argon2id$v={ARGON2_VERSION}$m={h.memory_cost},t={h.time_cost},p={h.parallelism}"
            f"${_b64(os.urandom(h.salt_len))}${_b64(os.urandom(h.hash_len))}"
        )
        self.threads = threads if threads > 0 else default_hash_threads()
        self.queue = max(0, queue)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._in_flight = 0  # running plus queued (event-loop thread only)

    # -- synchronous (command-line tools, and the hashing threads) ------------------------------
    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Constant-time check (argon2 compares digests in constant time); a missing hash still
        costs one full verification so that unknown users cannot be told apart by timing."""
        try:
            return self._hasher.verify(password_hash or self._dummy, password) and bool(
                password_hash
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    # -- asynchronous, on the hashing pool -------------------------------------------------------
    async def hash_async(self, password: str) -> str:
        """:meth:`hash` on the hashing pool; 429 ``M_LIMIT_EXCEEDED`` when its queue is full."""
        return await self._run(self.hash, password)

    async def verify_async(self, password_hash: str | None, password: str) -> bool:
        """:meth:`verify` on the hashing pool; 429 ``M_LIMIT_EXCEEDED`` when its queue is full."""
        return await self._run(self.verify, password_hash, password)

    @property
    def in_flight(self) -> int:
        """Computations running or queued."""
        return self._in_flight

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="argon2")
            return self._executor

    async def _run(self, fn, *args):
        if self._in_flight >= self.threads + self.queue:
            raise PasswordHashingBusy()
        self._in_flight += 1
        try:
            # Shielded: a client that disconnects does not free the slot before the thread does.
            fut = asyncio.get_running_loop().run_in_executor(self._pool(), fn, *args)
            fut.add_done_callback(self._release)
        except BaseException:
            self._in_flight -= 1
            raise
        return await asyncio.shield(fut)

    def _release(self, _fut: asyncio.Future) -> None:
        self._in_flight -= 1

    def close(self) -> None:
        """Shutting down: let running computations finish, drop queued ones."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
