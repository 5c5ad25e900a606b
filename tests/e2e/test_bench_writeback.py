"""``vudsync bench writeback`` as an operator runs it, at a tiny size: correctness facts only
(every grant and revoke applied to the store once, each one's path recorded stage by stage, CPU measured),
no timings."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.bench_cli import run_bench


def test_the_writeback_bench_applies_every_grant_and_revoke_once_and_measures_each_stage(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    done = run_bench(
        kafka_bootstrap, tmp_path,
        "writeback", "--users", "30", "--paced", "10", "--rate", "20", "--burst", "20",
        "--revokes", "2", "--poll-interval", "0.2", "--timeout", "240", "--json",
        timeout=900,
        VUDSYNC_PLANNER_DELETES_SETTLE="1",  # the gate's settle, short for a test
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert "paced:" in done.stderr and "burst:" in done.stderr and "revokes:" in done.stderr
    # every grant and revoke went the whole way — published, planned, sent, committed — once
    grants, revokes = result["grants"], result["revokes"]
    assert grants["paced"]["count"] == 10 and grants["burst"]["count"] == 20
    assert revokes["one_at_a_time"]["count"] == 2 and revokes["burst"]["count"] == 20
    assert result["store_writes"] == {"directory_operations_applied": 52, "grants": 30, "revokes": 22}
    # the settle is the settings' (given to every worker); revokes are also reported without it
    assert revokes["gate"]["settle_s"] == 1.0
    for figures in (grants["paced"], grants["burst"], revokes["one_at_a_time"], revokes["burst"]):
        assert math.isfinite(figures["latency_p50_ms"]) and figures["latency_p99_ms"] > 0
        assert set(figures["stages"]) == {"capture", "plan", "gate", "apply"}
        assert all(math.isfinite(s["p50_ms"]) for s in figures["stages"].values())
        assert figures["dominant_stage"] in figures["stages"]
    for figures in (revokes["one_at_a_time"], revokes["burst"]):
        less = figures["minus_settle"]
        assert less["latency_p50_ms"] == round(figures["latency_p50_ms"] - 1000, 1)
        # a revoke waited at the gate for the settle, at least: its gate stage holds it
        assert figures["stages"]["gate"]["p50_ms"] >= 1000 - 50
    assert grants["burst"]["applied_per_s"] > 0 and revokes["burst"]["applied_per_s"] > 0
    # /proc counts CPU in 10 ms ticks: 20 changes may cost less than one
    for burst in (grants["burst"], revokes["burst"]):
        cpu = burst["cpu_ms_per_change"]
        assert set(cpu) == {"cloud", "cloud-capture", "planner", "directory-sink", "producer"}
        assert min(cpu.values()) >= 0
    assert set(result["load_average"]) == {"before", "after"}
