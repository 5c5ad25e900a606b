"""``vudsync bench pipeline`` as an operator runs it, at a tiny size: correctness facts only
(the cloud holds the store, nothing dead-lettered or parked, latencies measured), no timings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.bench_cli import run_bench

OPERATION_KINDS = {
    "user.upsert", "user.deactivate", "company.upsert", "access.assign", "access.revoke",
    "access.revoke_entry", "catalogue.upsert", "catalogue.remove", "application_instance.register",
}  # fmt: skip


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker-per-stage", "two-planners-two-sinks"])
def test_the_pipeline_bench_connects_then_measures_live_churn_and_the_reference(
    kafka_bootstrap: str, tmp_path: Path, workers: int
) -> None:
    done = run_bench(
        kafka_bootstrap, tmp_path,
        "pipeline", "--users", "200", "--companies", "10",
        "--access-per-user", "3", "--churn-rate", "50", "--churn-seconds", "3", "--interval", "1",
        "--timeout", "300", "--planners", str(workers), "--sinks", str(workers), "--json",
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert "[connect" in done.stderr and "[live" in done.stderr  # progress goes to stderr

    connect = result["connect"]
    assert connect["cloud"]["clean"], connect["cloud"]["drift_sample"]
    assert connect["cloud"]["active_users_in_cloud"] == connect["cloud"]["active_users_in_store"] == 200
    assert connect["cloud"]["assignments_in_cloud"] == connect["cloud"]["assignments_in_store"] > 0
    if workers == 1:
        assert connect["operations_handled"] == connect["operations_planned"] > 0
    else:  # a sink joining takes partitions whose operations were queued, not committed, at
        # the other: its new owner handles them again (already applied), so handled may exceed
        assert connect["operations_handled"] >= connect["operations_planned"] > 0
    if workers == 1:
        assert set(connect["cpu_seconds"]) >= {"producer", "planner", "sink", "cloud"}
        assert connect["workers"] is None
    else:  # separate processes, one consumer group per stage; how evenly they split the work
        # depends on when each joined (at this size one may join after the events are taken):
        # the 10,000-user runs in docs/benchmarks.md show the split, this checks the accounts
        names = {f"{role}-{i}" for role in ("planner", "sink") for i in (1, 2)}
        assert set(connect["cpu_seconds"]) >= {"producer", "cloud"} | names
        assert set(connect["workers"]) == names
        per = connect["workers"]
        assert all(per[name]["cpu_seconds"] > 0 for name in names)
        assert per["planner-1"]["planned"] + per["planner-2"]["planned"] == connect["operations_planned"]
        assert per["sink-1"]["handled"] + per["sink-2"]["handled"] == connect["operations_handled"]
    # users and their access reach the cloud through POST /v1/batch
    assert connect["sink_calls"]["batch_calls"] > 0 and connect["sink_calls"]["batched_operations"] > 0
    requests = connect["cloud_requests"]  # the cloud's own count: batches carry the writes
    assert requests["batch_requests"] >= connect["sink_calls"]["batch_calls"]
    assert requests["batch_items"] >= connect["sink_calls"]["batched_operations"] > 0

    live = result["live"]
    assert live["churn"]["changes"] > 0
    assert live["cloud"]["clean"], live["cloud"]["drift_sample"]
    assert live["cloud"]["active_users_in_cloud"] == live["cloud"]["active_users_in_store"]
    assert live["dead_lettered"] == 0 and live["parked"] == 0
    assert live["operations_applied"] > 0
    for figure in ("latency_p50_ms", "latency_p99_ms", "latency_max_ms"):
        assert not math.isnan(live[figure]) and live[figure] > 0
    # per kind (the kinds the results carry), and apart: what the deletion gate held, what it did not
    by_kind = live["latency_by_kind"]
    assert set(by_kind) <= OPERATION_KINDS and "user.upsert" in by_kind
    assert sum(f["operations"] for f in by_kind.values()) == live["operations_applied"]
    assert all(f["operations"] > 0 and f["latency_max_ms"] > 0 for f in by_kind.values())
    assert max(f["latency_max_ms"] for f in by_kind.values()) == live["latency_max_ms"]
    gated, ungated = live["gated"], live["ungated"]
    assert gated["operations"] + ungated["operations"] == live["operations_applied"]
    assert sum(gated["operations_by_kind"].values()) == gated["operations"]
    assert all(n <= by_kind[kind]["operations"] for kind, n in gated["operations_by_kind"].items())
    assert ungated["operations"] > 0
    if live["churn"]["by_kind"].get("revoke") or live["churn"]["by_kind"].get("delete_user"):
        assert gated["operations"] > 0  # revokes and deletions wait for the gate
    # every gated operation applied was let go by a decision on the control topic
    assert gated["held_unknown"] == 0
    assert (
        gated["held_by_gate"]["operations"] == gated["without_gate_hold"]["operations"] == gated["operations"]
    )
    if gated["operations"]:  # each one's latency less its hold: no quantile can grow
        for figure in ("latency_p50_ms", "latency_p99_ms", "latency_max_ms"):
            assert 0 <= gated["without_gate_hold"][figure] <= gated[figure]
            assert 0 <= gated["held_by_gate"][figure] <= gated[figure]

    reference = result["reference_kafka_python"]
    assert reference["records"] == reference["consumed"] == connect["kafka_records_moved"]
    assert result["pipeline_share_of_reference"] > 0
    assert result["timeline"] and {"captured", "planned", "handled", "parked"} <= set(result["timeline"][-1])
