"""Password hashing with argon2id (memory-hard), and constant-time verification."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MAX_PASSWORD_LENGTH = 512


class Passwords:
    def __init__(self, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 1) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism
        )
        # Verifying against this when the user does not exist keeps timing uniform.
        self._dummy = self._hasher.hash("not a password")

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
