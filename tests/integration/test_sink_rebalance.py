"""Sink workers joining and leaving the group mid-run: a second worker starts (rebalance), then
the first gets SIGTERM (it finishes its calls in flight, flushes, commits, exits 0). Nothing is
lost, nothing applied twice, and each aggregate's operations keep their order."""

from __future__ import annotations

from devtools.bench.sink import AuditReader, feed, prepare_workload
from devtools.processes import wait_until
from kernel.settings import Settings
from schemas.topics import OPERATIONS
from tests.fixtures.cloud import CloudReader
from tests.pipeline import alive_or_fail, components


def test_rebalance_and_sigterm_lose_nothing_and_keep_order(
    catalogued_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = catalogued_settings
    work = prepare_workload(cloud.client, 3000)
    feed(kafka_bootstrap, settings.topic(OPERATIONS.name), work.operations)
    cloud.faults(latency_ms=[100, 150])  # slow enough that the run spans both rebalances
    reader = AuditReader(cloud.client, work)
    # one call of 10 at a time per worker: ~40 s for one worker, so both events land mid-run
    # even when the second worker takes 20-30 s to start and join on a busy machine
    small = {"VUDSYNC_SINK_BATCH_SIZE": "10", "VUDSYNC_SINK_CONCURRENCY": "1"}
    with components(settings, kafka_bootstrap, "sink:worker-1", **small) as first:
        wait_until(lambda: alive_or_fail(first) and reader.poll() >= 100, 120, what="worker-1 applying")
        with components(settings, kafka_bootstrap, "sink:worker-2", **small) as second:
            wait_until(
                lambda: alive_or_fail(first) and alive_or_fail(second) and reader.poll() >= 600,
                120,
                what="both workers applying after the rebalance",
            )
            at_stop = reader.poll()
            assert first["sink:worker-1"].stop(grace=60) == 0, first["sink:worker-1"].tail(30)
            wait_until(
                lambda: alive_or_fail(second) and reader.poll() >= len(work.keys),
                240,
                what="worker-2 finishing alone",
            )
            assert at_stop < len(work.keys), "the SIGTERM must land mid-run"
    cloud.faults()
    check = reader.check()
    assert not check.missing, f"{len(check.missing)} operations lost"
    assert not check.duplicated, f"keys with two effects: {list(check.duplicated.items())[:5]}"
    assert not check.out_of_order, f"aggregates out of order: {check.out_of_order[:5]}"
