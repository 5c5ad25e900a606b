"""``vudsync bench writeback`` as an operator runs it, at a tiny size: correctness facts only
(every grant applied to the store once, each one's path recorded stage by stage, CPU measured),
no timings."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.bench_cli import run_bench


def test_the_writeback_bench_applies_every_grant_once_and_measures_each_stage(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    done = run_bench(
        kafka_bootstrap, tmp_path,
        "writeback", "--users", "30", "--paced", "10",
        "--rate", "20", "--burst", "20", "--poll-interval", "0.2", "--timeout", "240", "--json",
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert "paced:" in done.stderr and "burst:" in done.stderr  # progress goes to stderr
    # every grant went the whole way — published, planned, committed in the store — once
    assert result["paced"]["grants"] == 10 and result["burst"]["grants"] == 20
    assert result["store_writes"] == {"directory_operations_applied": 30, "grants": 30}
    for phase in ("paced", "burst"):
        figures = result[phase]
        assert math.isfinite(figures["latency_p50_ms"]) and figures["latency_p99_ms"] > 0
        assert set(figures["stages"]) == {"capture", "plan", "apply"}
        assert all(math.isfinite(s["p50_ms"]) for s in figures["stages"].values())
        assert figures["dominant_stage"] in figures["stages"]
    assert result["burst"]["grants_applied_per_s"] > 0
    # /proc counts CPU in 10 ms ticks: 20 grants may cost less than one
    cpu = result["burst"]["cpu_ms_per_grant"]
    assert set(cpu) == {"cloud", "cloud-capture", "planner", "directory-sink", "producer"}
    assert min(cpu.values()) >= 0
    assert set(result["load_average"]) == {"before", "after"}
