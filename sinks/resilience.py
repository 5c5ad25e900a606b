"""A circuit breaker. Pure apart from the injected clock.

:class:`kernel.retry.Backoff` is re-exported here: the sink worker imports it from this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from kernel.retry import Backoff as Backoff
from sinks.errors import CircuitOpen


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops calls to a cloud that is down, and probes it.

    * closed: calls go out; ``threshold`` consecutive failures open the circuit.
    * open: :meth:`before_call` raises :class:`CircuitOpen` (no request) until the cool-down
      has passed; the cool-down doubles after each failed probe, up to ``max_open``.
    * half-open: exactly one call (the probe) may go out; its success closes the circuit,
      its failure opens it again.

    ``failure(open_for=…)`` opens at once for at least that long (refused credentials: no
    number of retries will help until an operator acts). A call that ends without a
    verdict (cancelled) calls :meth:`release` so the next probe may go.
    """

    def __init__(
        self,
        threshold: int = 8,
        reset_after: float = 2.0,
        max_open: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self.max_open = max_open
        self._clock = clock
        self._on_change = on_change or (lambda _open: None)
        self._failures = 0
        self._opened_at: float | None = None
        self._open_for = reset_after
        self._probing = False
        self.openings = 0  # how many times the circuit opened (for logs and tests)

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._probing or self._clock() - self._opened_at >= self._open_for:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def retry_in(self) -> float:
        """Seconds until a call may go out (0 when one may go now)."""
        if self._opened_at is None:
            return 0.0
        if self._probing:
            return self.reset_after
        return max(0.0, self._open_for - (self._clock() - self._opened_at))

    def before_call(self) -> None:
        """Raise :class:`CircuitOpen` unless a call may go out now (a half-open probe counts)."""
        if self._opened_at is None:
            return
        wait = self.retry_in()
        if wait > 0 or self._probing:
            raise CircuitOpen("circuit to the cloud is open", retry_after=max(wait, 0.05))
        self._probing = True

    def success(self) -> None:
        """The cloud answered (any answer that is not a server failure counts)."""
        self._failures = 0
        self._probing = False
        if self._opened_at is not None:
            self._opened_at = None
            self._open_for = self.reset_after
            self._on_change(False)

    def failure(self, open_for: float | None = None) -> None:
        """A server failure; ``open_for`` opens the circuit at once for at least that long."""
        self._failures += 1
        was_probe, self._probing = self._probing, False
        if open_for is None and self._failures < self.threshold and not was_probe:
            return
        was_open = self._opened_at is not None
        if was_open and was_probe:
            self._open_for = min(self.max_open, self._open_for * 2)
        elif not was_open:
            self._open_for = self.reset_after
        if open_for is not None:
            self._open_for = max(self._open_for, open_for)
        if was_open and not was_probe and open_for is None:
            return  # a late failure of a call sent before the circuit opened: keep the timer
        self._opened_at = self._clock()
        if not was_open:
            self.openings += 1
            self._on_change(True)

    def release(self) -> None:
        """A call ended without a verdict: let the next probe go."""
        self._probing = False
