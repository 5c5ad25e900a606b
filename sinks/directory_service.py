"""Composition root of the directory sink process (``vudsync run directory-sink``)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from kernel.health import BROKER_DOWN, Readiness
from kernel.http_status import BrokerCheck, StatusServer, registry_by_label, registry_total, status_server
from kernel.publishing.confluent import ConfluentRecordPublisher
from kernel.settings import Settings
from kernel.signals import stop_on_signals
from schemas.topics import DIRECTORY_DLQ, DIRECTORY_OPERATIONS, RESULTS
from sinks.directory_metrics import DirectorySinkMetrics
from sinks.directory_sink import DirectorySink
from sinks.directory_store import DirectoryStore, open_directory_store
from sinks.kafka_consumer import ConfluentOperationsConsumer

log = logging.getLogger(__name__)


def directory_sink_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}vudsync-directory-sink"


def build_directory_sink(
    settings: Settings, bootstrap: str, registry: CollectorRegistry, stop: threading.Event | None = None
) -> DirectorySink:
    store = open_directory_store(settings.resolved_store_url())  # before joining the group
    client_id = f"vudsync-directory-sink-{settings.worker_name}"
    security = settings.kafka_security()
    return DirectorySink(
        ConfluentOperationsConsumer(
            bootstrap,
            directory_sink_group(settings),
            client_id,
            security=security,
            session_timeout=settings.sink_session_timeout,
        ),
        settings.topic(DIRECTORY_OPERATIONS.name),
        ConfluentRecordPublisher(bootstrap, client_id=client_id, security=security),
        store,
        DirectorySinkMetrics(registry),
        lambda: datetime.now(UTC),
        results_topic=settings.topic(RESULTS.name),
        dlq_topic=settings.topic(DIRECTORY_DLQ.name),
        stop=stop,
    )


def directory_sink_status_server(
    registry: CollectorRegistry, settings: Settings, bootstrap: str, port: int, store: DirectoryStore
) -> StatusServer:
    """``/metrics``, ``/healthz``, ``/readyz`` (the broker and the store answer), ``/status``."""
    broker = BrokerCheck(bootstrap)

    def readiness() -> Readiness:
        reasons = [] if broker() else [BROKER_DOWN.format(bootstrap=bootstrap)]
        try:
            store.ping()
        except Exception as exc:
            reasons.append(f"the directory store does not answer ({type(exc).__name__})")
        return Readiness(tuple(reasons))

    def figures() -> dict[str, Any]:
        return {
            "applied": registry_by_label(registry, "vudsync_writeback_applied_total", "effect"),
            "rejected": registry_by_label(registry, "vudsync_writeback_rejected_total", "reason"),
            "last_applied_at": registry_total(
                registry, "vudsync_directory_sink_last_applied_timestamp_seconds"
            ),
        }

    return status_server(settings, registry, port, "directory-sink", readiness, figures)


def run_directory_sink(settings: Settings, bootstrap: str, *, metrics_port: int | None = None) -> None:
    """Run one directory sink until SIGTERM/SIGINT: the operation in hand finishes, its batch's
    results are flushed and offsets committed, then the consumer leaves its group."""
    registry = CollectorRegistry()
    sink = build_directory_sink(settings, bootstrap, registry, stop_on_signals("directory sink"))
    server = None
    if metrics_port is not None:
        server = directory_sink_status_server(registry, settings, bootstrap, metrics_port, sink.store).start()
    log.info(
        "directory sink %s: store %s", settings.worker_name, settings.resolved_store_url().split("://")[0]
    )
    try:
        sink.run()
    finally:
        if server is not None:
            server.close()
        sink.publisher.close()
        sink.consumer.close()
        sink.store.close()
        log.info("directory sink: stopped")
