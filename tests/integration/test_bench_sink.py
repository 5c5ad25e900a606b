"""``vudsync bench sink`` on the real parts: a throwaway warm-up round, then the measured
round, each with a cloud and topics of its own; the measured round's audit check (exactly
once, none missing, in order) and its figures come back, and the warm-up's beside them."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from devtools.bench.sink import run_bench


def _bench(**round_: Any) -> dict[str, Any]:
    """``run_bench`` with SIGTERM's handler put back afterwards (the bench unwinds on it like Ctrl-C)."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        return run_bench(batch=True, concurrency=4, batch_size=100, **round_)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_sink_bench_warms_the_broker_up_then_measures_a_round_applied_exactly_once(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VUDSYNC_KAFKA_BOOTSTRAP", kafka_bootstrap)
    result = _bench(ops=300, workers=1, faults=0.0, timeout=180, warm_up=120)

    assert result["exactly_once"], result
    assert (result["missing"], result["duplicated"], result["out_of_order_aggregates"]) == (0, 0, 0)
    assert result["operations"] >= 300
    assert result["ops_per_second"] > 0 and result["cloud_cpu_ms_per_op"] > 0
    warm = result["broker_warm_up"]
    assert warm["operations"] == 120 and warm["ops_per_second"] > 0
    assert result["command"].endswith("--warm-up 120")
    # a given broker: its pid is not known, so no CPU figure is made up for it
    assert result["broker"].startswith("given")
    assert "broker_cpu_ms_per_op" not in result and warm["broker_cpu_ms_per_op"] is None


def test_a_two_worker_round_ends_when_the_cloud_has_every_effect(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second worker joins while the first is applying: the partitions it takes over are
    finished again (already applied) from their last commit, so the sinks' counters reach the
    round's size before the cloud has every effect. The round ends on the audit, not on them.
    A faulty cloud (10 % 5xx, 5 % 429 with Retry-After 1 s) keeps the round going long enough
    for the second worker to join half-way: the bench that stopped on the counters ended
    such rounds with 59 and 95 operations not applied yet."""
    monkeypatch.setenv("VUDSYNC_KAFKA_BOOTSTRAP", kafka_bootstrap)
    result = _bench(ops=8000, workers=2, faults=0.1, timeout=300, warm_up=0)

    assert (result["missing"], result["duplicated"], result["out_of_order_aggregates"]) == (0, 0, 0), result
    assert result["exactly_once"] and result["workers"] == 2
