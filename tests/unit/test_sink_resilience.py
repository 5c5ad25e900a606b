"""Backoff and circuit breaker: pure logic, an injected clock and RNG."""

from __future__ import annotations

import random

import pytest

from kernel.retry import Backoff
from sinks.errors import CircuitOpen
from sinks.resilience import CircuitBreaker, CircuitState
from tests.fakes import FakeClock


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    backoff = Backoff(base=0.1, cap=2.0, rng=random.Random(7))
    for attempt in range(1, 12):
        ceiling = min(2.0, 0.1 * 2**attempt)
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        # full jitter: spread over the whole range, not clustered at the ceiling
        assert min(delays) < ceiling * 0.1 and max(delays) > ceiling * 0.9


def test_retry_after_is_a_floor() -> None:
    backoff = Backoff(base=0.05, cap=10.0, rng=random.Random(1))
    assert all(backoff.delay(1, retry_after=3.0) >= 3.0 for _ in range(100))
    assert all(backoff.delay(1, retry_after=None) <= 0.1 for _ in range(100))


def test_breaker_opens_after_threshold_consecutive_failures_only() -> None:
    clock = FakeClock()
    changes: list[bool] = []
    breaker = CircuitBreaker(threshold=3, reset_after=2.0, clock=clock, on_change=changes.append)
    breaker.failure()
    breaker.failure()
    breaker.success()  # resets the count
    breaker.failure()
    breaker.failure()
    assert breaker.state is CircuitState.CLOSED
    breaker.before_call()
    breaker.failure()
    assert breaker.state is CircuitState.OPEN and changes == [True]
    with pytest.raises(CircuitOpen) as raised:
        breaker.before_call()
    assert raised.value.retry_after == pytest.approx(2.0)


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, reset_after=2.0, clock=clock)
    breaker.failure()
    clock.advance(2.0)
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # nobody else while it is out
    breaker.success()
    assert breaker.state is CircuitState.CLOSED
    breaker.before_call()


def test_failed_probe_reopens_with_a_longer_cool_down_up_to_max() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, reset_after=1.0, max_open=3.0, clock=clock)
    breaker.failure()
    waits = []
    for _ in range(4):
        wait = breaker.retry_in()
        waits.append(wait)
        clock.advance(wait)
        breaker.before_call()
        breaker.failure()
    assert waits == [1.0, 2.0, 3.0, 3.0]
    assert breaker.openings == 1  # one outage, probed four times


def test_late_failure_of_an_earlier_call_does_not_restart_the_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, reset_after=2.0, clock=clock)
    breaker.failure()
    clock.advance(1.5)
    breaker.failure()  # sent before the circuit opened, failed now
    assert breaker.retry_in() == pytest.approx(0.5)


def test_refused_credentials_open_at_once_for_the_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=8, reset_after=2.0, clock=clock)
    breaker.failure(open_for=30.0)
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_in() == pytest.approx(30.0)
    clock.advance(30.0)
    breaker.before_call()  # one probe after 30 s
    breaker.failure(open_for=30.0)
    assert breaker.retry_in() >= 30.0


def test_a_cancelled_probe_releases_the_half_open_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, reset_after=1.0, clock=clock)
    breaker.failure()
    clock.advance(1.0)
    breaker.before_call()
    breaker.release()
    breaker.before_call()  # another probe may go
