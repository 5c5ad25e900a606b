"""A token bucket per client: the cloud's real rate limit (as opposed to injected 429s)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` saved up; one request = one token."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, now: float) -> float | None:
        """Take a token: ``None`` if granted, else the seconds until one is available."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` is whole seconds: round up, so a client that waits it is let in."""
    return str(max(0, math.ceil(seconds - 1e-9)))


class RateLimiter:
    """Buckets per client id; ``rate == 0`` turns limiting off. Thread-safe."""

    def __init__(self, rate: float, burst: float | None, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._rate = 0.0
        self._burst: float | None = None
        self.configure(rate, burst)

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst if self._burst is not None else max(1.0, self._rate)

    def configure(self, rate: float, burst: float | None) -> None:
        with self._lock:
            self._rate = rate
            self._burst = burst
            self._buckets.clear()

    def check(self, client_id: str) -> float | None:
        """``None`` if the request may go on, else seconds to wait."""
        if self._rate <= 0:
            return None
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(client_id)
            if bucket is None:
                bucket = TokenBucket(self._rate, self.burst, self.burst, now)
                self._buckets[client_id] = bucket
            return bucket.take(now)
