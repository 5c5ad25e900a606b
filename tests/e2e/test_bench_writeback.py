"""``vudsync bench writeback`` as an operator runs it, at a tiny size: correctness facts only
(every grant published, latencies and CPU measured), no timings."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.bench_cli import run_bench


def test_the_writeback_bench_publishes_every_grant_and_measures_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    done = run_bench(
        kafka_bootstrap, tmp_path,
        "writeback", "--users", "40", "--paced", "10",
        "--rate", "50", "--burst", "20", "--poll-interval", "0.1", "--timeout", "120", "--json",
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert "paced:" in done.stderr and "burst:" in done.stderr  # progress goes to stderr
    assert result["paced"]["grants"] == 10 and result["burst"]["grants"] == 20
    assert result["events_received"] >= 30  # every grant reached vud.cloud.changes
    for figure in ("latency_p50_ms", "latency_p99_ms"):
        assert math.isfinite(result["paced"][figure]) and result["paced"][figure] > 0
    # /proc counts CPU in 10 ms ticks: 20 grants may cost less than one
    assert result["burst"]["capture_cpu_ms_per_grant"] >= 0 and result["burst"]["grants_per_s"] > 0
    assert set(result["load_average"]) == {"before", "after"}
