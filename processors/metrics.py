"""Prometheus metrics of the planner process (names as in ARCHITECTURE.md).

Gauges are per worker and count only what the partitions it owns *now* hold (a revoked
partition's table entries leave its gauges at once); sum them over workers. One gauge per
state, each operation in exactly one (:class:`processors.parking.Waiting`):

- ``vudsync_parked_operations``: operations waiting for facts (cloud ids, catalogue entries);
- ``vudsync_held_operations``: operations of held deletions (deactivations, revokes) waiting
  for the accidental-delete gate or an operator;
- ``vudsync_blocked_operations``: operations waiting for their application to match the cloud;
- ``vudsync_held_deletions``: the deletions the gate holds — one per user or company, however
  many operations each has (non-zero only on the worker that owns partition 0);
- ``vudsync_application_blocked{application}``: 1 while the application's instance differs
  from the cloud's registration (partition 0's verdict; every worker exports every application,
  0 unless it owns partition 0);
- ``vudsync_review_waiting_companies``: the companies waiting for review (their assignments
  wait; non-zero only on the worker that owns partition 0, which has every review fact).

``vudsync_planner_staging`` is 1 while the worker runs in staging mode; what it stages counts
in ``vudsync_operations_staged_total`` (what is staged and not yet promoted or discarded is the
lag exporter's ``vudsync_staged_operations``).

``vudsync_parked_oldest_age_seconds`` is this worker's oldest parked operation's age: take the
maximum over workers.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from kernel.metrics import dlq_counter, writeback_rejected_counter
from schemas.topics import DIRECTORY_DLQ


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
        self.staged = Counter(
            "vudsync_operations_staged_total",
            "Cloud operations staged instead of sent (staging mode), by kind",
            ["kind"],
            registry=registry,
        )
        self.staging = Gauge(
            "vudsync_planner_staging",
            "1 while this planner worker runs in staging mode (plans, but sends nothing to the sink)",
            registry=registry,
        )
        self.parked = Gauge(
            "vudsync_parked_operations",
            "Operations waiting until their prerequisites exist in the cloud (not held, not blocked)",
            registry=registry,
        )
        self.held_operations = Gauge(
            "vudsync_held_operations",
            "Operations of held deletions (deactivations, revokes) waiting for the accidental-delete gate",
            registry=registry,
        )
        self.blocked = Gauge(
            "vudsync_blocked_operations",
            "Operations waiting for their application's instance to match the cloud's registry",
            registry=registry,
        )
        self.parked_oldest_age = Gauge(
            "vudsync_parked_oldest_age_seconds",
            "Age of the oldest parked operation of this worker: seconds since the change it "
            "carries was committed on premise (0 when nothing is parked)",
            registry=registry,
        )
        self.dlq = dlq_counter(registry, DIRECTORY_DLQ.name)
        self.held_deletions = Gauge(
            "vudsync_held_deletions",
            "Deletions (one per user or company) held for an operator's decision "
            "(accidental-delete protection)",
            registry=registry,
        )
        self.review_waiting = Gauge(
            "vudsync_review_waiting_companies",
            "Companies linked to a cloud company that existed before, whose assignments of access "
            "wait for an operator's review (`vudsync review list`)",
            registry=registry,
        )
        self.application_blocked = Gauge(
            "vudsync_application_blocked",
            "1 while the application's on-premise instance differs from the cloud's registration "
            "(after a license change): its assignments are held",
            ["application"],
            registry=registry,
        )
        self.journal = Counter(
            "vudsync_journal_entries_total",
            "Journal entries written by the planner",
            ["code"],
            registry=registry,
        )
        self.messages = Counter(
            "vudsync_planner_messages_total",
            "Messages the planner handled, by input (directory, results, facts, control)",
            ["input"],
            registry=registry,
        )
        self.skipped = Counter(
            "vudsync_planner_skipped_total",
            "Records the planner skipped unread, by input: results it learns nothing from "
            "(its own journal entries, applied access), judged by their headers",
            ["input"],
            registry=registry,
        )
        self.retries = Counter(
            "vudsync_planner_retries_total",
            "Messages handled again: the broker refused a record (reason: exception class), or a "
            "partition read again after a delivery was lost (undelivered) or it stalled (stalled)",
            ["reason"],
            registry=registry,
        )
        # writeback (issue 16): the cloud's access changes on their way to the directory
        self.writeback_planned = Counter(
            "vudsync_writeback_planned_total",
            "Directory operations planned from the cloud's access changes, by kind",
            ["kind"],
            registry=registry,
        )
        self.writeback_rejected = writeback_rejected_counter(registry)
        self.writeback_conflicts = Counter(
            "vudsync_writeback_conflicts_total",
            "Entries changed on both sides before either saw the other's change (settled by the "
            "later change, ties to the directory; each journalled)",
            registry=registry,
        )
        self.writeback_echo_suppressed = Counter(
            "vudsync_writeback_echo_suppressed_total",
            "Entries of the cloud's change feed that were vudsync's own writes (origin directory): "
            "never written back",
            registry=registry,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def count_writeback(self, code: str) -> None:
        """The writeback's counters, from a journal code of :mod:`processors.writeback`."""
        if code == "writeback_conflict":
            self.writeback_conflicts.inc()
        elif code == "writeback_echo_suppressed":
            self.writeback_echo_suppressed.inc()
        elif code.startswith("writeback_rejected_"):
            self.child(self.writeback_rejected, code.removeprefix("writeback_rejected_")).inc()

    def child(self, metric: Counter, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: ``labels()`` takes a lock and checks its
        arguments at every call, and the planner counts several times per message."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found
