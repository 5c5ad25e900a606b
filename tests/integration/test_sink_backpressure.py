"""Back-pressure of the sink while the cloud is down: it holds at most
``VUDSYNC_SINK_MAX_OUTSTANDING`` operations, pauses its partitions when that lasts
``VUDSYNC_SINK_HOLD_TIMEOUT``, and applies everything exactly once when the cloud is back.

Real parts: a Kafka broker, the cloud API in a subprocess (every /v1 request answered 503),
``vudsync run sink`` as a child process; the sink's own /metrics say what it holds.
"""

from __future__ import annotations

from typing import Any

import pytest

from devtools.bench.sink import AuditReader, feed, prepare_workload
from devtools.broker import free_port
from kernel.settings import Settings
from schemas.topics import OPERATIONS
from tests.fixtures.cloud import CloudReader
from tests.pipeline import components, metrics_of, wait_for

LIMIT = 40


def _gauges(port: int) -> dict[str, float]:
    """The sink's two back-pressure gauges, from one scrape; none while it is not serving.

    One scrape for both, and both or nothing: with a scrape per gauge, a scrape that failed left
    a sample with one gauge only (a CI run: KeyError on the outstanding gauge)."""
    names = ("vudsync_sink_outstanding_operations", "vudsync_sink_paused")
    samples = metrics_of(port)
    if not all(samples.get(name) for name in names):
        return {}
    return {name: sum(v for _, v in samples[name]) for name in names}


@pytest.mark.timeout(300)
def test_a_down_cloud_bounds_what_the_sink_holds_and_nothing_is_lost(
    catalogued_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = catalogued_settings
    work = prepare_workload(cloud.client, 400)
    cloud.faults(error_rate=1.0)  # down: every /v1 request is a 5xx without effect
    feed(kafka_bootstrap, settings.topic(OPERATIONS.name), work.operations)
    reader = AuditReader(cloud.client, work)
    port = free_port()
    env = {
        "VUDSYNC_SINK_MAX_OUTSTANDING": str(LIMIT),
        "VUDSYNC_SINK_HOLD_TIMEOUT": "1",
        "VUDSYNC_SINK_BATCH_SIZE": "10",
    }
    samples: list[dict[str, float]] = []

    def sampled(condition: Any) -> Any:
        def check() -> bool:
            gauges = _gauges(port)
            if gauges:
                samples.append(gauges)
            return bool(gauges) and bool(condition(gauges))

        return check

    with components(settings, kafka_bootstrap, "sink", metrics_ports={"sink": port}, **env) as procs:
        # it takes what it may, holds, and after the hold time pauses its partitions
        wait_for(
            procs,
            sampled(lambda g: g["vudsync_sink_paused"] == 1 and g["vudsync_sink_outstanding_operations"] > 0),
            90,
            what="the sink pausing its partitions while the cloud is down",
        )
        assert "partitions paused" in procs["sink"].log_path.read_text(errors="replace")
        cloud.faults()  # the cloud is back
        wait_for(
            procs,
            sampled(lambda g: reader.poll() >= len(work.keys)),
            180,
            interval=0.5,
            what="every operation applied after the cloud came back",
        )
        wait_for(
            procs,
            sampled(lambda g: g["vudsync_sink_outstanding_operations"] == 0),
            30,
            what="nothing outstanding once everything is applied",
        )
        final = _gauges(port)

    held = [s["vudsync_sink_outstanding_operations"] for s in samples]
    # a paused worker may take one record of a partition assigned meanwhile: limit + 1 at most
    assert LIMIT <= max(held) <= LIMIT + 1, f"the sink held {max(held)} operations (limit {LIMIT})"
    assert final["vudsync_sink_paused"] == 0  # resumed once half were done
    check = reader.check()
    assert not check.missing, f"{len(check.missing)} operations never applied"
    assert not check.duplicated, f"keys with two effects: {list(check.duplicated.items())[:5]}"
    assert not check.out_of_order
    assert check.effects == len(work.operations) == 400
