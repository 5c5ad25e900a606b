"""Composition root of cloud-capture: settings → feed, cursor store, publisher, capture."""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from cloudcapture.capture import CloudCapture, CloudCaptureConfig
from cloudcapture.http_feed import HttpCloudFeed
from cloudcapture.metrics import CaptureMetrics
from cloudcapture.ports import CursorStore
from kernel.errors import ConfigurationError
from kernel.health import CloudCaptureFacts, Readiness, cloud_capture_readiness
from kernel.http_status import BrokerCheck, StatusServer, registry_by_label, registry_total, status_server
from kernel.publishing import RecordPublisher
from kernel.publishing.confluent import ConfluentRecordPublisher
from kernel.publishing.kafka_python import KafkaRecordPublisher
from kernel.settings import Settings
from kernel.signals import run_until_stopped

log = logging.getLogger(__name__)


def open_cursor_store(url: str) -> CursorStore:
    """The cursor's place in the directory store at ``url`` (``sqlite:///…`` or ``postgresql://…``)."""
    if url.startswith("sqlite:///"):
        from cloudcapture.sqlite_cursor import SqliteCursorStore

        return SqliteCursorStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from cloudcapture.postgres_cursor import PostgresCursorStore

        return PostgresCursorStore(url)
    raise ConfigurationError(
        f"unsupported store URL scheme in {url.split('://')[0]!r}",
        hint="use sqlite:///path/to/directory.db or postgresql://user@host/db",
    )


def capture_publisher(settings: Settings, bootstrap: str) -> RecordPublisher:
    """The producer's Kafka client (``VUDSYNC_CAPTURE_CLIENT``): its partitioner places a user
    id on the same partition of ``vud.cloud.changes`` as the producer places it on
    ``vud.directory.users`` (librdkafka's CRC32 and kafka-python's murmur2 differ), so the
    planner reads a user's cloud changes where it keeps the user's state."""
    security = settings.kafka_security()
    if settings.capture_client == "confluent":
        return ConfluentRecordPublisher(bootstrap, client_id="vudsync-cloud-capture", security=security)
    return KafkaRecordPublisher(bootstrap, security=security)


def build_cloud_capture(
    settings: Settings, bootstrap: str, registry: CollectorRegistry | None = None
) -> CloudCapture:
    secret = SecretStr(settings.require_secret("cloud_client_secret"))  # before opening anything
    cursors = open_cursor_store(settings.resolved_store_url())
    feed = HttpCloudFeed(
        settings.cloud_url,
        settings.cloud_client_id,
        secret,
        timeout=settings.sink_http_timeout,
        auth_cooldown=settings.sink_auth_cooldown,
    )
    return CloudCapture(
        feed,
        cursors,
        capture_publisher(settings, bootstrap),
        CaptureMetrics(registry or CollectorRegistry()),
        CloudCaptureConfig(
            topic_prefix=settings.topic_prefix,
            page_limit=settings.writeback_page_limit,
            poll_interval=settings.writeback_poll_interval,
        ),
    )


def cloud_capture_status_server(
    capture: CloudCapture, registry: CollectorRegistry, settings: Settings, bootstrap: str, port: int
) -> StatusServer:
    """``/metrics``, ``/healthz``, ``/readyz``, ``/status`` of cloud-capture."""
    broker = BrokerCheck(bootstrap)

    def readiness() -> Readiness:
        health = capture.health
        polled = health.last_poll
        return cloud_capture_readiness(
            CloudCaptureFacts(
                bootstrap,
                broker(),
                settings.cloud_url,
                None if polled is None else time.monotonic() - polled,
                health.error,
            )
        )

    def figures() -> dict[str, Any]:
        return {
            "phase": capture.health.phase,
            "feed_position": registry_total(registry, "vudsync_writeback_feed_position"),
            "feed_lag_seconds": registry_total(registry, "vudsync_writeback_feed_lag_seconds"),
            "published": registry_total(registry, "vudsync_writeback_published_total"),
            "unlinked": registry_by_label(registry, "vudsync_writeback_unlinked_total", "resource"),
            "full_reads": registry_by_label(registry, "vudsync_writeback_full_reads_total", "reason"),
        }

    return status_server(settings, registry, port, "cloud-capture", readiness, figures)


def run_cloud_capture(settings: Settings, bootstrap: str, *, metrics_port: int | None = None) -> None:
    """Run cloud-capture until SIGTERM/SIGINT; the page in flight is finished and its cursor saved."""
    registry = CollectorRegistry()
    capture = build_cloud_capture(settings, bootstrap, registry)
    run_until_stopped(
        "cloud-capture",
        capture.run,
        status_port=metrics_port,
        status=lambda port: cloud_capture_status_server(capture, registry, settings, bootstrap, port),
        close=(capture.publisher.close, capture.feed.close, capture.cursors.close),
    )
