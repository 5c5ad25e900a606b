"""A wrong client secret: the sink opens its circuit with one clear error, sends no request
storm (counted by the cloud itself over a fixed window), dead-letters nothing, and applies
everything once it runs with the right secret."""

from __future__ import annotations

import time
from typing import Any

from pydantic import SecretStr

from devtools.bench.sink import AuditReader, feed, prepare_workload
from devtools.broker import free_port
from devtools.processes import wait_until
from kernel.settings import Settings
from schemas.topics import OPERATIONS
from tests.fixtures.cloud import CloudReader
from tests.pipeline import alive_or_fail, components, gauge
from vudsync.topics import ensure_catalogue

WINDOW = 10.0  # seconds of observation
WRONG = "not-the-secret-4f1c"


def _v1_requests(stats: dict[str, Any]) -> int:
    return sum(sum(c.values()) for route, c in stats["requests"].items() if " /v1/" in route)


def test_a_wrong_client_secret_opens_the_circuit_without_a_request_storm(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    ensure_catalogue(pipeline_settings, kafka_bootstrap)
    work = prepare_workload(cloud.client, 200)
    feed(kafka_bootstrap, pipeline_settings.topic(OPERATIONS.name), work.operations)
    wrong = pipeline_settings.model_copy(update={"cloud_client_secret": SecretStr(WRONG)})
    port = free_port()
    setup = cloud.stats()  # the workload's set-up calls, before the sink starts
    with components(wrong, kafka_bootstrap, "sink", metrics_ports={"sink": port}) as procs:
        log = procs["sink"].log_path

        def refused_and_open() -> bool:
            alive_or_fail(procs)
            return "refused the client credentials" in log.read_text(errors="replace") and (
                gauge(port, "vudsync_cloud_circuit_open") == 1.0
            )

        wait_until(refused_and_open, 90, what="the circuit open after refused credentials")
        before = cloud.stats()
        window_ends = time.monotonic() + WINDOW
        # the observation window: the sink must stay up, and is counted by the cloud afterwards
        wait_until(
            lambda: alive_or_fail(procs) and time.monotonic() >= window_ends,
            WINDOW + 30,
            interval=0.5,
            what="the end of the observation window",
        )
        after = cloud.stats()
        assert gauge(port, "vudsync_cloud_circuit_open") == 1.0
        text = log.read_text(errors="replace")

    assert before["token_requests"] - setup["token_requests"] <= 2  # the first refusal: one or two
    token_requests = after["token_requests"] - before["token_requests"]
    assert token_requests <= 3, f"{token_requests} token requests in {WINDOW:.0f}s: a storm"
    assert _v1_requests(after) == _v1_requests(before), "no API call may go out without a token"
    errors = [line for line in text.splitlines() if "refused the client credentials" in line]
    assert 1 <= len(errors) <= 3, errors  # one clear line per cool-down, not one per operation
    assert "VUDSYNC_CLOUD_CLIENT_SECRET" in errors[0] and "ERROR" in errors[0]
    assert WRONG not in text and "dead-lettered" not in text

    # the right secret: everything waits in Kafka, nothing was dead-lettered, all of it applies
    reader = AuditReader(cloud.client, work)
    with components(pipeline_settings, kafka_bootstrap, "sink") as procs:
        wait_until(
            lambda: alive_or_fail(procs) and reader.poll() >= len(work.keys),
            120,
            what="every operation applied with the right secret",
        )
    assert reader.check().exactly_once
