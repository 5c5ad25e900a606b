"""Composition root of a sink worker process."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from kernel.errors import ConfigurationError
from kernel.health import Readiness, Since, SinkFacts, sink_readiness
from kernel.http_status import BrokerCheck, StatusServer, registry_total, status_server
from kernel.publishing.confluent import ConfluentRecordPublisher
from kernel.settings import Settings
from schemas.topics import OPERATIONS
from sinks.http_cloud import HttpCloudDirectory
from sinks.kafka_consumer import ConfluentOperationsConsumer
from sinks.ledger import SqliteLedger
from sinks.metrics import SinkMetrics
from sinks.ports import Ledger
from sinks.worker import SinkConfig, SinkWorker

log = logging.getLogger(__name__)


def sink_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}vudsync-sink"


def open_ledger(settings: Settings) -> Ledger:
    """The ledger of applied operation ids: PostgreSQL when ``sink_ledger_url`` names one,
    else SQLite (``sqlite:///path``, or ``<home>/sink/<prefix>ledger.db`` when unset)."""
    url = settings.sink_ledger_url
    if url.startswith(("postgresql://", "postgres://")):
        from sinks.ledger_postgres import PostgresLedger

        return PostgresLedger(url, scope=settings.topic_prefix)
    if url and not url.startswith("sqlite:///"):
        raise ConfigurationError(
            f"VUDSYNC_SINK_LEDGER_URL: unsupported scheme in {url.split(':', 1)[0]!r}",
            hint="use sqlite:///path/ledger.db or postgresql://user@host/db",
        )
    path = (
        url.removeprefix("sqlite:///")
        if url
        else settings.home / "sink" / f"{settings.topic_prefix}ledger.db"
    )
    return SqliteLedger(path)


def build_sink(settings: Settings, bootstrap: str, registry: CollectorRegistry) -> SinkWorker:
    client_secret = settings.require_secret("cloud_client_secret")  # before opening anything
    config = SinkConfig(
        topic_prefix=settings.topic_prefix,
        concurrency=settings.sink_concurrency,
        batch=settings.sink_batch,
        batch_size=settings.sink_batch_size,
        max_attempts=settings.sink_max_attempts,
        retry_timeout=settings.sink_retry_timeout,
        auth_cooldown=settings.sink_auth_cooldown,
        max_outstanding=settings.sink_max_outstanding,
        hold_timeout=settings.sink_hold_timeout,
        drain_timeout=settings.sink_http_timeout + 5,
    )
    consumer = ConfluentOperationsConsumer(
        bootstrap,
        sink_group(settings),
        client_id=f"vudsync-sink-{settings.worker_name}",
        security=settings.kafka_security(),
        session_timeout=settings.sink_session_timeout,
    )
    cloud = HttpCloudDirectory(
        settings.cloud_url,
        settings.cloud_client_id,
        client_secret,
        timeout=settings.sink_http_timeout,
        max_connections=config.concurrency * 2,
        auth_cooldown=settings.sink_auth_cooldown,
    )
    ledger = open_ledger(settings)
    return SinkWorker(
        consumer,
        settings.topic(OPERATIONS.name),
        # librdkafka: kafka-python's pure-Python send was a third of the sink's CPU per result
        ConfluentRecordPublisher(
            bootstrap, client_id=f"vudsync-sink-{settings.worker_name}", security=settings.kafka_security()
        ),
        cloud,
        ledger,
        SinkMetrics(registry),
        config,
        lambda: datetime.now(UTC),
    )


async def _serve(worker: SinkWorker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    try:
        await worker.run()
    finally:
        await worker.cloud.aclose()


def _run(main: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed (less CPU per socket write and thread hand-off), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def sink_status_server(
    registry: CollectorRegistry, settings: Settings, bootstrap: str, port: int
) -> StatusServer:
    """``/metrics``, ``/healthz``, ``/readyz``, ``/status`` of a sink worker
    (:mod:`kernel.http_status`); the circuit and the pause are read from the worker's gauges,
    so the server needs nothing of the worker's loop. How long the partitions have been paused
    is measured from the first probe that saw them paused."""
    broker = BrokerCheck(bootstrap)
    paused = Since()

    def gauge(name: str) -> float:
        return registry_total(registry, name) or 0.0

    def readiness() -> Readiness:
        return sink_readiness(
            SinkFacts(
                bootstrap,
                broker(),
                circuit_open=gauge("vudsync_cloud_circuit_open") >= 1,
                paused_for=paused.observe(gauge("vudsync_sink_paused") >= 1, time.monotonic()),
            )
        )

    def figures() -> dict[str, Any]:
        return {
            "circuit": "open" if gauge("vudsync_cloud_circuit_open") >= 1 else "closed",
            "paused": gauge("vudsync_sink_paused") >= 1,
            "outstanding_operations": int(gauge("vudsync_sink_outstanding_operations")),
            "in_flight_operations": int(gauge("vudsync_sink_in_flight_operations")),
        }

    return status_server(settings, registry, port, "sink", readiness, figures)


def run_sink(settings: Settings, bootstrap: str, *, metrics_port: int | None = None) -> None:
    """Run one sink worker until SIGTERM/SIGINT: calls in flight finish, results are flushed,
    offsets committed, then the consumer leaves its group."""
    registry = CollectorRegistry()
    worker = build_sink(settings, bootstrap, registry)
    server = None
    if metrics_port is not None:
        server = sink_status_server(registry, settings, bootstrap, metrics_port).start()
    log.info(
        "sink %s: cloud %s, batch=%s (≤ %d), concurrency %d",
        settings.worker_name,
        settings.cloud_url,
        settings.sink_batch,
        settings.sink_batch_size,
        settings.sink_concurrency,
    )
    try:
        _run(_serve(worker))
    finally:
        if server is not None:
            server.close()
        worker.publisher.close()
        worker.consumer.close()
        worker.ledger.close()
        log.info("sink: stopped")
