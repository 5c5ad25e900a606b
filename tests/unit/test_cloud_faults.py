"""Fault decisions from a seeded RNG, and the token bucket, with a fake clock (pure)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from pydantic import ValidationError

from cloud.faults import ERROR_STATUSES, FaultConfig, FaultInjector, FaultKind, decide, parse_latency
from cloud.ratelimit import RateLimiter, TokenBucket, retry_after_header
from tests.fakes import FakeClock


def _kinds(config: FaultConfig, n: int, seed: int = 7) -> Counter[FaultKind]:
    rng = random.Random(seed)
    return Counter(decide(config, rng).kind for _ in range(n))


def test_no_faults_configured_means_no_fault_and_no_rng_draw() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    assert decide(FaultConfig(), rng).kind is FaultKind.NONE
    assert rng.getstate() == state


def test_error_rate_one_always_errors_with_a_5xx() -> None:
    rng = random.Random(3)
    decisions = [decide(FaultConfig(error_rate=1.0), rng) for _ in range(200)]
    assert {d.kind for d in decisions} == {FaultKind.ERROR}
    assert {d.status for d in decisions} <= set(ERROR_STATUSES)


def test_rates_are_respected_roughly() -> None:
    config = FaultConfig(error_rate=0.2, rate_limit_rate=0.1, drop_rate=0.05, timeout_rate=0.05)
    kinds = _kinds(config, 20_000)
    assert kinds[FaultKind.ERROR] / 20_000 == pytest.approx(0.2, abs=0.02)
    assert kinds[FaultKind.RATE_LIMIT] / 20_000 == pytest.approx(0.1, abs=0.015)
    assert kinds[FaultKind.DROP_BEFORE] / 20_000 == pytest.approx(0.05, abs=0.01)
    assert kinds[FaultKind.TIMEOUT] / 20_000 == pytest.approx(0.05, abs=0.01)
    assert kinds[FaultKind.NONE] / 20_000 == pytest.approx(0.6, abs=0.02)


def test_the_same_seed_gives_the_same_sequence() -> None:
    config = FaultConfig(error_rate=0.3, drop_rate=0.3, latency_ms=(1, 9), seed=42)
    first, second = FaultInjector(config), FaultInjector(config)
    assert [first.next_decision() for _ in range(100)] == [second.next_decision() for _ in range(100)]


def test_reconfiguring_restarts_the_rng_from_the_seed() -> None:
    injector = FaultInjector(FaultConfig(error_rate=0.5, seed=5))
    before = [injector.next_decision() for _ in range(20)]
    injector.configure(FaultConfig(error_rate=0.5, seed=5))
    assert [injector.next_decision() for _ in range(20)] == before


def test_drop_after_effect_is_its_own_kind() -> None:
    rng = random.Random(0)
    assert decide(FaultConfig(drop_rate=1.0), rng).kind is FaultKind.DROP_BEFORE
    assert decide(FaultConfig(drop_rate=1.0, drop_after_effect=True), rng).kind is FaultKind.DROP_AFTER


def test_rate_limit_and_timeout_carry_their_parameters() -> None:
    rng = random.Random(0)
    limited = decide(FaultConfig(rate_limit_rate=1.0, retry_after_seconds=2.5), rng)
    assert (limited.status, limited.retry_after_seconds) == (429, 2.5)
    held = decide(FaultConfig(timeout_rate=1.0, timeout_seconds=4.0), rng)
    assert (held.kind, held.hold_seconds) == (FaultKind.TIMEOUT, 4.0)


def test_latency_is_drawn_within_bounds_for_every_outcome() -> None:
    rng = random.Random(9)
    config = FaultConfig(latency_ms=(10, 20))
    latencies = [decide(config, rng).latency_seconds for _ in range(500)]
    assert all(0.010 <= s <= 0.020 for s in latencies)


def test_latency_after_effect_only_for_outcomes_whose_handler_runs() -> None:
    rng = random.Random(3)
    after = {"latency_ms": (10, 20), "latency_after_effect": True}
    handled = [
        decide(FaultConfig(**after), rng),
        decide(FaultConfig(**after, drop_rate=1.0, drop_after_effect=True), rng),
        decide(FaultConfig(**after, timeout_rate=1.0), rng),
    ]
    assert [d.kind for d in handled] == [FaultKind.NONE, FaultKind.DROP_AFTER, FaultKind.TIMEOUT]
    assert all(d.latency_after and d.latency_seconds >= 0.010 for d in handled)
    # no handler runs: nothing to come after, the latency stays in front
    refused = [
        decide(FaultConfig(**after, error_rate=1.0), rng),
        decide(FaultConfig(**after, rate_limit_rate=1.0), rng),
        decide(FaultConfig(**after, drop_rate=1.0), rng),
    ]
    assert not any(d.latency_after for d in refused)
    assert all(d.latency_seconds >= 0.010 for d in refused)
    assert not decide(FaultConfig(latency_ms=(10, 20)), rng).latency_after


@pytest.mark.parametrize(
    "bad",
    [
        {"error_rate": 0.6, "drop_rate": 0.6},
        {"error_rate": 1.5},
        {"latency_ms": (50, 10)},
        {"latency_ms": (-1, 10)},
        {"license_key": "x"},
    ],
)
def test_invalid_configurations_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FaultConfig.model_validate(bad)


# -- the real rate limit -----------------------------------------------------------


def test_bucket_grants_its_burst_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=2.0, capacity=2.0, tokens=2.0, updated=0.0)
    assert bucket.take(0.0) is None
    assert bucket.take(0.0) is None
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) is None  # refilled one token in half a second


def test_limiter_is_per_client_and_off_at_zero() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=1.0, clock=clock)
    assert limiter.check("a") is None
    assert limiter.check("b") is None
    wait = limiter.check("a")
    assert wait == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.check("a") is None
    limiter.configure(0.0, None)
    assert all(limiter.check("a") is None for _ in range(100))


def test_retry_after_header_rounds_up_to_whole_seconds() -> None:
    assert retry_after_header(0.2) == "1"
    assert retry_after_header(1.0) == "1"
    assert retry_after_header(1.01) == "2"
    assert retry_after_header(0.0) == "0"


@pytest.mark.parametrize(("text", "expected"), [("20", (20, 20)), ("10,50", (10, 50)), ("10-50", (10, 50))])
def test_latency_as_written_on_a_command_line(text: str, expected: tuple[int, int]) -> None:
    assert parse_latency(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "1,2,3"])
def test_a_latency_that_is_not_min_max_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_latency(text)
