"""Backoff with full jitter, and a circuit breaker. Pure apart from the injected clock/RNG."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sinks.errors import CircuitOpen


@dataclass
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog's "full jitter")."""

    base: float = 0.05
    cap: float = 10.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``; a server's Retry-After wins if longer."""
        jittered = self.rng.uniform(0, min(self.cap, self.base * (2 ** min(attempt, 30))))
        return max(jittered, retry_after or 0.0)


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; half-opens after ``reset_after`` seconds
    to let one probe through; closes on the probe's success."""

    def __init__(
        self,
        threshold: int = 5,
        reset_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._open_for = reset_after
        self._probing = False
        self._on_change = on_change or (lambda _open: None)

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def before_call(self) -> None:
        """Raise :class:`CircuitOpen` unless a call may go out now."""
        if self._opened_at is None:
            return
        waited = self._clock() - self._opened_at
        if waited < self._open_for or self._probing:
            raise CircuitOpen("circuit to the cloud is open", retry_after=max(0.05, self._open_for - waited))
        self._probing = True  # half-open: exactly one probe

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        if self._opened_at is not None:
            self._opened_at = None
            self._on_change(False)

    def failure(self, open_for: float | None = None) -> None:
        self._failures += 1
        self._probing = False
        if self._failures >= self.threshold or open_for is not None:
            was_open = self._opened_at is not None
            self._opened_at = self._clock()
            self._open_for = max(self.reset_after, open_for or 0.0)
            if not was_open:
                self._on_change(True)
