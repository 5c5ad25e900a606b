"""Composition root of a sink worker process."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import UTC, datetime

from kafka import KafkaConsumer
from prometheus_client import CollectorRegistry, start_http_server

from producers.kafka_publisher import KafkaRecordPublisher
from schemas.topics import OPERATIONS
from sinks.http_cloud import HttpCloudDirectory
from sinks.ledger import SqliteLedger
from sinks.metrics import SinkMetrics
from sinks.worker import SinkConfig, SinkWorker
from vudsync.settings import Settings

log = logging.getLogger(__name__)


def sink_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}vudsync-sink"


def build_sink(settings: Settings, bootstrap: str, registry: CollectorRegistry) -> SinkWorker:
    config = SinkConfig(
        topic_prefix=settings.topic_prefix,
        concurrency=settings.sink_concurrency,
        max_attempts=settings.sink_max_attempts,
    )
    consumer = KafkaConsumer(
        settings.topic(OPERATIONS.name),
        bootstrap_servers=bootstrap,
        group_id=sink_group(settings),
        client_id=f"vudsync-sink-{settings.worker_name}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=config.max_poll_records,
        isolation_level="read_committed",
    )
    cloud = HttpCloudDirectory(
        settings.cloud_url,
        settings.cloud_client_id,
        settings.cloud_client_secret.get_secret_value(),
        max_connections=config.concurrency * 2,
    )
    ledger = SqliteLedger(settings.home / "sink" / f"{settings.topic_prefix}ledger.db")
    return SinkWorker(
        consumer,
        KafkaRecordPublisher(bootstrap, client_id="vudsync-sink"),
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


def run_sink(settings: Settings, bootstrap: str, *, metrics_port: int | None = None) -> None:
    """Run one sink worker until SIGTERM/SIGINT: in-flight work is finished and committed."""
    registry = CollectorRegistry()
    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.metrics_host, registry=registry)
    worker = build_sink(settings, bootstrap, registry)
    try:
        asyncio.run(_serve(worker))
    finally:
        worker.publisher.close()
        worker.consumer.close()
        worker.ledger.close()
        log.info("sink: stopped")
