"""Password hashing with argon2id (memory-hard), and constant-time verification."""

from __future__ import annotations

import base64
import os
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import ARGON2_VERSION

MAX_PASSWORD_LENGTH = 512

#: Most argon2 computations running at once. Each holds ``memory_cost`` KiB (64 MiB by default)
#: while it runs, so without a bound N concurrent logins would take N times that.
MAX_CONCURRENT_HASHES = 2


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


class Passwords:
    def __init__(self, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 1) -> None:
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
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)

    def hash(self, password: str) -> str:
        with self._slots:
            return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Constant-time check (argon2 compares digests in constant time); a missing hash still
        costs one full verification so that unknown users cannot be told apart by timing."""
        try:
            with self._slots:
                return self._hasher.verify(password_hash or self._dummy, password) and bool(
                    password_hash
                )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
