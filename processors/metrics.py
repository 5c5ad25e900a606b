"""Prometheus metrics of the planner process (names as in ARCHITECTURE.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class PlannerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "vudsync_planner_events_total",
            "Directory events by planning outcome",
            ["entity", "outcome"],
            registry=registry,
        )
        self.planned = Counter(
            "vudsync_operations_planned_total",
            "Cloud operations planned, by kind",
            ["kind"],
            registry=registry,
        )
        self.parked = Gauge(
            "vudsync_parked_operations",
            "Operations held until their prerequisites exist in the cloud",
            registry=registry,
        )
        self.dlq = Counter(
            "vudsync_dlq_messages_total",
            "Messages sent to a dead-letter topic",
            ["topic"],
            registry=registry,
        )
        self.journal = Counter(
            "vudsync_journal_entries_total",
            "Journal entries written by the planner",
            ["code"],
            registry=registry,
        )
