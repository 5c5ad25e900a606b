"""Prometheus metrics of cloud-capture (``vudsync_writeback_*``; registry injected)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

FEED_RESOURCES = ("user", "company", "access")
UNLINKED_RESOURCES = ("user", "company", "service")
FULL_READ_REASONS = ("first_start", "cursor_expired")


class CaptureMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.changes_read = Counter(
            "vudsync_writeback_changes_read_total",
            "Items read from the cloud's change feed",
            ["resource"],
            registry=registry,
        )
        self.published = Counter(
            "vudsync_writeback_published_total",
            "Cloud access events on vud.cloud.changes, acknowledged by the broker",
            registry=registry,
        )
        self.unlinked = Counter(
            "vudsync_writeback_unlinked_total",
            "Cloud access not published: its user or company has no on-premise id (external_id), "
            "or its service is no on-premise application (entries left out)",
            ["resource"],
            registry=registry,
        )
        self.full_reads = Counter(
            "vudsync_writeback_full_reads_total",
            "Full reads of the cloud's access (first start, or the feed's cursor expired)",
            ["reason"],
            registry=registry,
        )
        self.feed_lag = Gauge(
            "vudsync_writeback_feed_lag_seconds",
            "Now minus the time of the newest feed item read; 0 when the feed has no more changes",
            registry=registry,
        )
        self.last_advance = Gauge(
            "vudsync_writeback_feed_last_advance_timestamp_seconds",
            "When capture last made progress: a page of the feed (or of a full read) published "
            "and its cursor saved, or the feed answered that it has no more changes",
            registry=registry,
        )
        self.cloud_reachable = Gauge(
            "vudsync_writeback_cloud_reachable",
            "1 when the cloud answered the last request (whatever the status), 0 when it did not",
            registry=registry,
        )
        self.position = Gauge(
            "vudsync_writeback_feed_position",
            "Feed position of the saved cursor",
            registry=registry,
        )
        for resource in FEED_RESOURCES:
            self.changes_read.labels(resource=resource)
        for resource in UNLINKED_RESOURCES:
            self.unlinked.labels(resource=resource)
        for reason in FULL_READ_REASONS:
            self.full_reads.labels(reason=reason)
