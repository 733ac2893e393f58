"""Token buckets for rate limits (C-S API "Rate limiting": refusals are 429
``M_LIMIT_EXCEEDED`` with ``retry_after_ms``, see :func:`bastion.errors.limit_exceeded`).

Pure arithmetic on the time the caller passes in: no clock is read here. :class:`TokenBucket` is
one bucket; :class:`TokenBuckets` keeps one per key (an origin server, a client address), at most
``max_keys`` of them, forgetting the least recently used first so that a flood of new keys cannot
grow memory without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["TokenBucket", "TokenBuckets", "retry_after_ms"]


@dataclass
class TokenBucket:
    """A token bucket: ``rate`` tokens a second up to ``burst``. ``take(now_s)`` spends one token
    and returns 0, or returns the seconds until one is available (nothing spent)."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now_s: float) -> float:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now_s
        self.tokens = min(self.burst, self.tokens + (now_s - self.stamp) * self.rate)
        self.stamp = now_s
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate if self.rate > 0 else 60.0

    def refund(self) -> None:
        """Give back the token of the last successful :meth:`take` (a request counted against
        several buckets that a later one refused)."""
        self.tokens = min(self.burst, self.tokens + 1)


class TokenBuckets:
    """One :class:`TokenBucket` per key, each ``rate`` tokens a second up to ``burst``, full when
    first seen; at most ``max_keys`` remembered (least recently used forgotten first)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now_s: float) -> float:
        """Spend one of ``key``'s tokens and return 0, or return the seconds until one is
        available (nothing spent)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now_s)

    def refund(self, key: str) -> None:
        """Give back a token :meth:`take` spent for ``key`` (nothing if it was forgotten)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.refund()

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_ms(wait_s: float) -> int:
    """A wait in seconds as the ``retry_after_ms`` of a 429: whole milliseconds, at least 1."""
    return max(1, int(wait_s * 1000))
