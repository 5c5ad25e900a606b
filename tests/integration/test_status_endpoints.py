"""The components' ``/healthz``, ``/readyz`` and ``/status`` on the real broker and cloud: ready
when they work, not ready with the reason when the broker is down or the cloud's circuit open.

The broker-down test has a broker of its own (stopped by the test), so the session's stays up.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge

from cloud.server import CloudServer
from devtools.bench.sink import feed, prepare_workload
from devtools.broker import LocalKafkaBroker, free_port
from devtools.secrets import with_run_secrets
from kernel.health import Readiness
from kernel.http_status import StatusServer
from kernel.settings import Settings
from schemas.topics import OPERATIONS
from tests.fixtures.cloud import CloudReader
from tests.pipeline import components, wait_for
from vudsync.topics import ensure_catalogue


@pytest.fixture
def server() -> Iterator[tuple[StatusServer, list[Readiness]]]:
    registry = CollectorRegistry()
    Gauge("vudsync_example", "an example", registry=registry).set(7)
    answer = [Readiness()]

    def readiness() -> Readiness:
        if answer[0].reasons == ("boom",):
            raise RuntimeError("secret=hunter2")
        return answer[0]

    s = StatusServer(
        registry,
        component="sink",
        worker="sink-1",
        readiness=readiness,
        figures=lambda: {"circuit": "closed"},
    ).start()
    try:
        yield s, answer
    finally:
        s.close()


def _get_text(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_endpoints(server: tuple[StatusServer, list[Readiness]]) -> None:
    s, answer = server
    code, body = _get_text(s.port, "/metrics")
    assert code == 200 and "vudsync_example 7.0" in body
    assert _get_text(s.port, "/healthz") == (200, "ok\n")
    code, body = _get_text(s.port, "/readyz")
    assert (code, json.loads(body)) == (200, {"ready": True, "reasons": []})
    answer[0] = Readiness(("the circuit to the cloud is open",))
    code, body = _get_text(s.port, "/readyz")
    assert (code, json.loads(body)) == (
        503,
        {"ready": False, "reasons": ["the circuit to the cloud is open"]},
    )
    code, body = _get_text(s.port, "/status")
    assert code == 200
    assert json.loads(body) == {
        "component": "sink",
        "worker": "sink-1",
        "ready": False,
        "reasons": ["the circuit to the cloud is open"],
        "figures": {"circuit": "closed"},
    }
    assert _get_text(s.port, "/nope")[0] == 404


def test_a_failing_check_is_a_reason_without_its_message(
    server: tuple[StatusServer, list[Readiness]],
) -> None:
    s, answer = server
    answer[0] = Readiness(("boom",))
    code, body = _get_text(s.port, "/readyz")
    assert code == 503
    assert json.loads(body)["reasons"] == ["the readiness check failed: RuntimeError"]
    assert "hunter2" not in body


def _get(port: int, path: str) -> tuple[int, Any] | None:
    """(status, JSON body), or None while nothing serves the port yet."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    except httpx.TransportError:
        return None
    return response.status_code, response.json()


def _ready(port: int) -> bool:
    answer = _get(port, "/readyz")
    return answer is not None and answer[0] == 200


def _phase(port: int) -> str | None:
    answer = _get(port, "/status")
    return None if answer is None else answer[1]["figures"]["phase"]


def _not_ready_because(port: int, words: str) -> bool:
    answer = _get(port, "/readyz")
    return answer is not None and answer[0] == 503 and any(words in r for r in answer[1]["reasons"])


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafkaBroker]:
    broker = LocalKafkaBroker(
        tmp_path / "broker-home", version=Settings().kafka_version, heap="256m", bind_to_parent=True
    )
    try:
        broker.up(timeout=120)
        yield broker
    finally:
        broker.down()


def test_planner_and_sink_ready_then_not_ready_when_the_broker_is_down(
    own_broker: LocalKafkaBroker, tmp_path: Path, unique_topic_prefix: str
) -> None:
    bootstrap = own_broker.status().bootstrap
    assert bootstrap is not None
    # a broker of the test's own (it is stopped): per-run secrets as the session fixtures make them
    settings = with_run_secrets(
        Settings(home=tmp_path, kafka_bootstrap=bootstrap, topic_prefix=unique_topic_prefix)
    )
    ensure_catalogue(settings, bootstrap)
    ports = {"planner": free_port(), "sink": free_port()}
    with components(settings, bootstrap, "planner", "sink", metrics_ports=ports) as procs:
        for name, port in ports.items():
            wait_for(procs, lambda port=port: _ready(port), 120, what=f"the {name} ready")
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).text == "ok\n"
        status = _get(ports["planner"], "/status")
        assert status is not None and status[0] == 200
        assert status[1]["component"] == "planner" and status[1]["ready"] is True
        assert status[1]["figures"]["assigned_partitions"] >= 1
        assert set(status[1]["figures"]) >= {"parked_operations", "held_deletions"}
        assert "vudsync_parked_operations" in httpx.get(f"http://127.0.0.1:{ports['planner']}/metrics").text

        own_broker.down()
        for name, port in ports.items():
            wait_for(
                procs,
                lambda port=port: _not_ready_because(
                    port, f"the Kafka broker does not answer at {bootstrap}"
                ),
                60,
                what=f"the {name} not ready, broker down",
            )
        # alive all the same: liveness is not readiness (a restart would not bring the broker back)
        assert httpx.get(f"http://127.0.0.1:{ports['sink']}/healthz", timeout=10).status_code == 200


def test_sink_not_ready_while_the_circuit_to_the_cloud_is_open(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud_server: CloudServer, cloud: CloudReader
) -> None:
    ensure_catalogue(pipeline_settings, kafka_bootstrap)
    work = prepare_workload(cloud.client, 60)
    port = free_port()
    with components(pipeline_settings, kafka_bootstrap, "sink", metrics_ports={"sink": port}) as procs:
        wait_for(procs, lambda: _ready(port), 120, what="the sink ready")
        status = _get(port, "/status")
        assert status is not None
        assert status[1]["figures"]["circuit"] == "closed"

        cloud_server.stop()  # the cloud's outage: every call fails to connect
        feed(kafka_bootstrap, pipeline_settings.topic(OPERATIONS.name), work.operations)
        wait_for(
            procs,
            lambda: _not_ready_because(port, "the circuit to the cloud is open"),
            120,
            what="the sink not ready, circuit open",
        )
        status = _get(port, "/status")
        assert status is not None and status[0] == 200
        assert status[1]["ready"] is False and status[1]["figures"]["circuit"] == "open"


def test_cloud_capture_ready_then_not_ready_while_the_cloud_is_down(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud_server: CloudServer
) -> None:
    from producers.service import open_store_migrations

    ensure_catalogue(pipeline_settings, kafka_bootstrap)
    open_store_migrations(pipeline_settings.resolved_store_url())
    port = free_port()
    with components(
        pipeline_settings, kafka_bootstrap, "cloud-capture", metrics_ports={"cloud-capture": port}
    ) as procs:
        wait_for(procs, lambda: _ready(port), 120, what="cloud-capture ready")
        # ready as soon as the cloud answers, which is already during the first full read (a
        # long read is work, not unreadiness): streaming comes when its cursor is saved
        wait_for(procs, lambda: _phase(port) == "streaming", 120, what="cloud-capture streaming")
        status = _get(port, "/status")
        assert status is not None and status[1]["component"] == "cloud-capture"
        assert status[1]["ready"] is True and status[1]["figures"]["phase"] == "streaming"
        assert status[1]["figures"]["full_reads"] == {"first_start": 1.0, "cursor_expired": 0.0}

        cloud_server.stop()  # the cloud's outage: every poll fails to connect
        wait_for(
            procs,
            lambda: _not_ready_because(port, f"the last read of the cloud at {cloud_server.url}"),
            60,
            what="cloud-capture not ready, the cloud down",
        )
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert "vudsync_writeback_cloud_reachable 0.0" in metrics
