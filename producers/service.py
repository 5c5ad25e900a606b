"""Composition root of the producer process: settings → change log, publisher, capture."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from kernel.errors import ConfigurationError
from kernel.health import ProducerFacts, Readiness, producer_readiness
from kernel.http_status import BrokerCheck, StatusServer, registry_total, status_server
from kernel.publishing import RecordPublisher
from kernel.publishing.confluent import SNAPSHOT_OVERRIDES, ConfluentRecordPublisher
from kernel.publishing.kafka_python import KafkaRecordPublisher
from kernel.settings import Settings
from kernel.signals import run_until_stopped
from producers.adhoc import AdhocSnapshots
from producers.capture import CaptureConfig, ChangeCapture, ProgressFn, PublisherFactory, Reemitted
from producers.metrics import ProducerMetrics
from producers.ports import ChangeLog
from producers.signal_table import open_signal_table
from producers.sqlite_changelog import SqliteChangeLog, sqlite_path
from schemas.directory import EntityType
from schemas.events import Repair

log = logging.getLogger(__name__)


def open_change_log(url: str, *, read_only: bool = False) -> ChangeLog:
    """The change-log adapter for a store URL (``sqlite:///…`` or ``postgresql://…``);
    ``read_only``: an existing store, opened for reading only (no file or schema created)."""
    if url.startswith("sqlite:///"):
        return SqliteChangeLog(sqlite_path(url), read_only=read_only)
    if url.startswith(("postgresql://", "postgres://")):
        from producers.postgres_changelog import PostgresChangeLog

        return PostgresChangeLog(url, read_only=read_only)
    raise ConfigurationError(
        f"unsupported store URL scheme in {url.split('://')[0]!r}",
        hint="use sqlite:///path/to/directory.db or postgresql://user@host/db",
    )


def open_store_migrations(url: str) -> list[str]:
    """Apply pending migrations to a store; returns the versions applied now."""
    if url.startswith("sqlite:///"):
        from producers.migrations import apply_sqlite_migrations
        from producers.sqlite_changelog import connect_sqlite

        path = sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect_sqlite(path)
        try:
            return apply_sqlite_migrations(conn)
        finally:
            conn.close()
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        from producers.migrations import apply_postgres_migrations

        with psycopg.connect(url, autocommit=True) as pg:
            return apply_postgres_migrations(pg)
    raise ConfigurationError(f"unsupported store URL scheme in {url.split('://')[0]!r}")


def build_capture(
    settings: Settings,
    bootstrap: str,
    registry: CollectorRegistry | None = None,
    *,
    read_only: bool = False,
    signals: bool = False,
) -> ChangeCapture:
    """The capture of the store in ``settings``; ``signals``: it serves ad-hoc snapshot requests
    from the store's signal table (the running producer's)."""
    fingerprint_key = settings.require_secret("fingerprint_key").encode()  # before opening anything
    registry = registry or CollectorRegistry()
    change_log = open_change_log(settings.resolved_store_url(), read_only=read_only)
    publisher: RecordPublisher
    snapshot_publisher: PublisherFactory | None = None
    security = settings.kafka_security()
    if settings.capture_client == "confluent":
        publisher = ConfluentRecordPublisher(bootstrap, security=security)

        def snapshot_publisher() -> RecordPublisher:
            return ConfluentRecordPublisher(
                bootstrap, client_id="vudsync-snapshot", security=security, **SNAPSHOT_OVERRIDES
            )

    else:
        publisher = KafkaRecordPublisher(bootstrap, security=security)
    metrics = ProducerMetrics(registry)
    config = CaptureConfig(
        topic_prefix=settings.topic_prefix,
        batch_size=settings.capture_batch_size,
        fingerprint_key=fingerprint_key,
    )
    adhoc = None
    if signals and not read_only:
        # ad-hoc snapshots: a publisher of their own, of streaming's client library (same partitions)
        own_publisher = snapshot_publisher or (lambda: KafkaRecordPublisher(bootstrap, security=security))

        def worker() -> ChangeCapture:
            return ChangeCapture(change_log, own_publisher(), metrics, config)

        adhoc = AdhocSnapshots(open_signal_table(settings.resolved_store_url()), worker)
    return ChangeCapture(
        change_log, publisher, metrics, config, snapshot_publisher=snapshot_publisher, adhoc=adhoc
    )


def reemit_current_state(
    settings: Settings,
    bootstrap: str,
    entity: EntityType,
    ids: Sequence[str],
    *,
    repairs: Mapping[str, Repair] | None = None,
    removed: Mapping[str, dict[str, Any]] | None = None,
) -> Reemitted:
    """Send the current state of these entities through the pipeline again (provision on
    demand, re-snapshot, verify's repairs): :meth:`ChangeCapture.reemit` on the store opened
    read-only, through the producer's own Kafka client (``VUDSYNC_CAPTURE_CLIENT``), so each
    key lands on the partition the running producer puts it on, where the planner keeps that
    entity's state."""
    capture = build_capture(settings, bootstrap, read_only=True)
    try:
        return capture.reemit(entity, ids, repairs=repairs, removed=removed)
    finally:
        capture.publisher.close()
        capture.log.close()


def producer_status_server(
    capture: ChangeCapture, registry: CollectorRegistry, settings: Settings, bootstrap: str, port: int
) -> StatusServer:
    """``/metrics``, ``/healthz``, ``/readyz``, ``/status`` of the producer (:mod:`kernel.http_status`)."""
    broker = BrokerCheck(bootstrap)

    def readiness() -> Readiness:
        read = capture.last_read
        return producer_readiness(
            ProducerFacts(bootstrap, broker(), None if read is None else time.monotonic() - read)
        )

    def figures() -> dict[str, Any]:
        return {
            "checkpoint": registry_total(registry, "vudsync_source_checkpoint_seq"),
            "capture_lag_seconds": registry_total(registry, "vudsync_source_capture_lag_seconds"),
            "changes_captured": registry_total(registry, "vudsync_source_changes_captured_total"),
        }

    return status_server(settings, registry, port, "producer", readiness, figures)


def run_producer(
    settings: Settings,
    bootstrap: str,
    *,
    metrics_port: int | None = None,
    progress: ProgressFn | None = None,
) -> None:
    """Run capture until SIGTERM/SIGINT; the batch in flight is finished and checkpointed."""
    registry = CollectorRegistry()
    capture = build_capture(settings, bootstrap, registry, signals=True)
    closing = [capture.publisher.close, capture.log.close]
    if capture.adhoc is not None:
        closing.append(capture.adhoc.signals.close)
    run_until_stopped(
        "producer",  # the batch in flight is finished and checkpointed
        lambda stop: capture.run(stop, progress),
        status_port=metrics_port,
        status=lambda port: producer_status_server(capture, registry, settings, bootstrap, port),
        close=closing,
    )
