"""The sink under a misbehaving cloud and a crash, on real parts: a Kafka broker, the cloud API
in a subprocess, ``vudsync run sink`` as a child process. Operations are written straight to
``vud.cloud.operations`` (built with the ``schemas`` models), so the planner is not involved.

The proof is the cloud's own audit: one effect per idempotency key, none missing, and the
effects of each aggregate in the order of its operations.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from typing import Any

import pytest

from devtools.bench.sink import AuditReader, feed, prepare_workload
from devtools.broker import free_port
from devtools.processes import wait_until
from kernel.scrape import total
from kernel.settings import Settings
from schemas.codec import decode_model
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import OPERATIONS, RESULTS
from sinks.service import sink_group
from tests.fixtures.cloud import CloudReader
from tests.kafka_read import committed, read_all
from tests.pipeline import SINK_FAILOVER, components, metrics_of, wait_for
from vudsync.topics import ensure_catalogue


def _results(bootstrap: str, topic: str, expected: int) -> dict[str, OperationResult]:
    """The latest result per operation id, once ``expected`` operations have one."""
    latest: dict[str, OperationResult] = {}

    def enough(records: list[Any]) -> bool:
        for record in records[len(latest_seen) :]:
            result = decode_model(OperationResult, record.value)
            latest[result.operation_id] = result
        latest_seen[:] = records
        return len(latest) >= expected

    latest_seen: list[Any] = []
    read_all(bootstrap, topic, until=enough, timeout=180)
    return latest


@pytest.mark.timeout(600)
def test_ten_thousand_operations_through_5xx_429_and_latency_apply_exactly_once(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    """20% 5xx, 10% 429 (Retry-After 1 s) and 0-30 ms added latency on every /v1 request,
    batches on: every one of 10,000 operations has exactly one effect, in order per aggregate,
    a result on vud.cloud.results, and the retries show in the sink's metrics."""
    settings = pipeline_settings
    ensure_catalogue(settings, kafka_bootstrap)
    work = prepare_workload(cloud.client, 10_000)
    feed(kafka_bootstrap, settings.topic(OPERATIONS.name), work.operations)
    cloud.faults(error_rate=0.2, rate_limit_rate=0.1, retry_after_seconds=1, latency_ms=[0, 30], seed=7)
    reader = AuditReader(cloud.client, work)
    port = free_port()
    with components(settings, kafka_bootstrap, "sink", metrics_ports={"sink": port}) as procs:
        wait_for(
            procs,
            lambda: reader.poll() >= len(work.keys),
            420,
            interval=0.5,
            what="every operation applied in the cloud",
        )
        metrics = metrics_of(port)
        stats = cloud.stats()
    cloud.faults()  # a healthy cloud for reading the audit back
    check = reader.check()
    assert not check.missing, f"{len(check.missing)} operations never applied"
    assert not check.duplicated, f"keys with two effects: {list(check.duplicated.items())[:5]}"
    assert not check.out_of_order, f"aggregates applied out of order: {check.out_of_order[:5]}"
    assert check.effects == len(work.operations) == 10_000

    # the cloud really misbehaved, and the sink's metrics say how often it retried and why
    assert stats["faults_injected"].get("error", 0) > 0 and stats["faults_injected"].get("rate_limit", 0) > 0
    assert total(metrics, "vudsync_sink_retries_total", reason="server_error") > 0
    assert total(metrics, "vudsync_sink_retries_total", reason="rate_limited") > 0
    assert total(metrics, "vudsync_dlq_messages_total") == 0
    assert total(metrics, "vudsync_sink_batch_operations_count") > 0  # it batched

    results = _results(kafka_bootstrap, settings.topic(RESULTS.name), len(work.operations))
    assert {r.outcome for r in results.values()} <= {ResultOutcome.APPLIED, ResultOutcome.ALREADY_APPLIED}
    assert any(r.attempts > 1 for r in results.values())
    sampled = list(work.last_first_name)[:50]
    final = {cid: cloud.client.get(f"/v1/users/{cid}").json()["first_name"] for cid in sampled}
    assert final == {cid: work.last_first_name[cid] for cid in sampled}  # the last version won


@pytest.mark.timeout(600)
def test_sink_killed_while_a_batch_is_in_flight_has_no_second_effect(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    """The sink sends a batch, the cloud applies it, the sink dies before it reads the answer
    (SIGSTOP while the batch is in flight, SIGKILL once the cloud has answered). The restarted
    sink sends those operations again: the cloud answers from its idempotency store, so the
    audit shows no key with two effects and none missing."""
    settings = pipeline_settings
    ensure_catalogue(settings, kafka_bootstrap)
    work = prepare_workload(cloud.client, 3000)
    ops_topic = settings.topic(OPERATIONS.name)
    feed(kafka_bootstrap, ops_topic, work.operations)
    # slow batches: every call waits 300-400 ms before the cloud applies it
    cloud.faults(latency_ms=[300, 400])
    reader = AuditReader(cloud.client, work)
    port = free_port()
    group = sink_group(settings)
    # small batches, two at a time: the run lasts ~25 s, so the kill lands well inside it
    sink_env = {"VUDSYNC_SINK_BATCH_SIZE": "20", "VUDSYNC_SINK_CONCURRENCY": "2", **SINK_FAILOVER}
    with components(settings, kafka_bootstrap, "sink", metrics_ports={"sink": port}, **sink_env) as procs:

        def batch_in_flight() -> bool:  # the sink's own metrics: fast to read, unlike the audit
            metrics = metrics_of(port)
            done = total(metrics, "vudsync_sink_operations_total")
            return done >= 300 and total(metrics, "vudsync_sink_in_flight_operations") > 1

        wait_for(procs, batch_in_flight, 180, what="a batch in flight after some were applied")
        pid = procs["sink"].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # frozen with its batches sent and unanswered
        seen: list[int] = []

        def cloud_done() -> bool:  # the cloud applied what it was sent: the count stops moving
            seen.append(reader.poll())
            return len(seen) >= 4 and seen[-1] == seen[-4]

        wait_until(cloud_done, 60, interval=0.5, what="the cloud finishing the batches in flight")
        procs["sink"].kill()
        applied_at_kill = reader.poll()
        ledger = sqlite3.connect(settings.home / "sink" / f"{settings.topic_prefix}ledger.db")
        in_ledger = ledger.execute("SELECT COUNT(*) FROM applied").fetchone()[0]
        ledger.close()
        committed_at_kill = committed(kafka_bootstrap, group, ops_topic, settings.topic_partitions)
    assert in_ledger < applied_at_kill, (
        "the kill must land after the cloud applied a batch the sink never saw"
    )
    assert committed_at_kill < applied_at_kill < len(work.keys)
    replays_before = cloud.stats()["idempotent_replays"]

    cloud.faults()
    with components(settings, kafka_bootstrap, "sink", **sink_env) as procs:
        wait_for(
            procs,
            lambda: committed(kafka_bootstrap, group, ops_topic, settings.topic_partitions) >= len(work.keys),
            240,
            what="every operation committed after the restart",
        )
    check = reader.check()
    assert not check.duplicated, f"keys with two effects: {list(check.duplicated.items())[:5]}"
    assert not check.missing, f"{len(check.missing)} operations never applied"
    assert not check.out_of_order
    # what the killed sink never heard about was sent again and answered from the idempotency store
    assert cloud.stats()["idempotent_replays"] - replays_before >= applied_at_kill - in_ledger
    results = _results(kafka_bootstrap, settings.topic(RESULTS.name), len(work.operations))
    assert (
        sum(r.outcome is ResultOutcome.ALREADY_APPLIED for r in results.values())
        >= applied_at_kill - in_ledger
    )
