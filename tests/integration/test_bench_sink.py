"""``vudsync bench sink`` on the real parts: a throwaway warm-up round, then the measured
round, each with a cloud and topics of its own; the measured round's audit check (exactly
once, none missing, in order) and its figures come back, and the warm-up's beside them."""

from __future__ import annotations

import signal

import pytest

from vudsync.bench.sink import run_bench


def test_the_sink_bench_warms_the_broker_up_then_measures_a_round_applied_exactly_once(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VUDSYNC_KAFKA_BOOTSTRAP", kafka_bootstrap)
    previous = signal.getsignal(signal.SIGTERM)  # the bench unwinds on SIGTERM like Ctrl-C
    try:
        result = run_bench(
            ops=300,
            workers=1,
            batch=True,
            faults=0.0,
            concurrency=4,
            batch_size=100,
            timeout=180,
            warm_up=120,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)

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
