"""Composition root of a planner worker process."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from kernel.admin import replicas_of, replication_factor
from kernel.health import PlannerFacts, Readiness, planner_readiness
from kernel.http_status import BrokerCheck, StatusServer, registry_total, status_server
from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.records import Record
from kernel.settings import Settings
from processors.agents import declare_agents
from processors.app import create_app
from processors.engine import Reconciler
from processors.faust_compat import (
    DirectTopic,
    OwnedKeys,
    check_versions,
    committed_offsets,
    deliver_without_tasks,
    drain_buffer_before_commit,
    prime_committed_offsets,
    producer_send_now,
    put_back_stale_fetches,
    skip_before_stream,
)
from processors.handlers import PlannerHandlers
from processors.metrics import PlannerMetrics
from processors.model import PlannerSettings
from processors.tables import TableReads, declare_table
from processors.topics import declare_topics, ensure_planner_topics
from schemas.topics import OPERATIONS_STAGED, RESULTS

log = logging.getLogger(__name__)


def planner_settings(settings: Settings) -> PlannerSettings:
    return PlannerSettings(
        deletes_threshold=settings.planner_deletes_threshold,
        deletes_threshold_percent=settings.planner_deletes_percent,
        deletes_window_seconds=settings.planner_deletes_window,
        deletes_settle_seconds=settings.planner_deletes_settle,
        staging=settings.planner_staging,
    )


class BrokerRange:
    """Reads a range of one partition straight from the broker, with a consumer of its own
    (no group, no commits), for the records Faust lost on their way to the planner
    (:meth:`processors.handlers.PlannerHandlers._handle_missed`). Started at the first use
    and reused while reads follow each other (a rebalance may lose records on several
    partitions); closed after ``idle_close`` seconds without a read, and when the app stops,
    so a worker keeps no idle connection to the broker between rebalances."""

    def __init__(
        self,
        bootstrap: str,
        timeout: float = 30.0,
        idle_close: float = 60.0,
        *,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._timeout = timeout
        self._idle_close = idle_close
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._idle: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None  # referenced while it runs

    @property
    def connected(self) -> bool:
        """A consumer is open (between a read and its idle close)."""
        return self._consumer is not None

    async def __call__(self, topic: str, partition: int, first: int, last: int) -> list[Record]:
        async with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            if self._consumer is None:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self._bootstrap,
                    group_id=None,
                    enable_auto_commit=False,
                    client_id="vudsync-planner-missed",
                    **self._security.for_aiokafka(),
                )
                await consumer.start()
                self._consumer = consumer
            try:
                return await self._read(self._consumer, topic, partition, first, last)
            finally:
                self._idle = asyncio.get_running_loop().call_later(self._idle_close, self._close_when_idle)

    def _close_when_idle(self) -> None:
        self._idle = None
        self._closing = asyncio.ensure_future(self._close_quietly())

    async def _close_quietly(self) -> None:
        try:
            await self.close()
        except Exception as exc:  # an idle consumer that fails to stop is not worth a crash
            log.warning("planner: closing the idle reader of lost records failed: %s", exc)

    async def _read(
        self, consumer: AIOKafkaConsumer, topic: str, partition: int, first: int, last: int
    ) -> list[Record]:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        stop = min(last + 1, end)
        found: list[Record] = []
        if first >= stop:
            return found
        consumer.seek(tp, first)
        deadline = time.monotonic() + self._timeout
        # the position moves past compacted offsets too; the record after ``last`` (the one in
        # the handler's hand) exists, so it reaches ``stop``
        while await consumer.position(tp) < stop:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}[{partition}] {first}-{last} took over {self._timeout}s")
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=500)
            for r in batch.get(tp, ()):
                if r.offset > last:
                    return found
                if r.offset >= first:
                    found.append(Record(r.topic, r.partition, r.offset, r.key, r.value))
        return found

    async def close(self) -> None:
        async with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            if self._consumer is not None:
                consumer, self._consumer = self._consumer, None
                await consumer.stop()


def build_planner(settings: Settings, bootstrap: str, registry: CollectorRegistry) -> faust.App:
    app = create_app(settings, bootstrap)
    drain_buffer_before_commit(app)
    put_back_stale_fetches(app)
    deliver_without_tasks(app)
    # the planner's own records go straight to the Kafka producer (faust_compat.DirectTopic)
    topics = declare_topics(app, settings).with_outputs(lambda topic: DirectTopic(app, topic))
    table = declare_table(app)
    reconciler = Reconciler(
        TableReads(table), planner_settings(settings), settings.topic_partitions, lambda: datetime.now(UTC)
    )
    metrics = PlannerMetrics(registry)
    metrics.staging.set(1 if settings.planner_staging else 0)
    if settings.planner_staging:
        log.warning(
            "planner: staging mode: operations go to %s, nothing to the cloud "
            "(vudsync staging diff | promote | discard)",
            settings.topic(OPERATIONS_STAGED.name),
        )
    handlers = PlannerHandlers(
        reconciler,
        table,
        topics,
        metrics,
        committed_offsets(app),
        topic_prefix=settings.topic_prefix,
        fetch=(missed := BrokerRange(bootstrap, security=settings.kafka_security())),
        send_now=producer_send_now(app),
        owned_keys=OwnedKeys(app, table),
    )
    declare_agents(app, topics, handlers)

    @table.on_recover
    async def walk_the_table_again() -> None:  # recovered keys: the gauges' watched keys are stale
        handlers.table_changed()

    skip_before_stream(app, handlers.skips, handlers.skipped)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types receivers narrowly
    async def close_missed_reader(sender: Any, **kwargs: Any) -> None:
        await missed.close()

    return app


SHUTDOWN_DEADLINE = 60.0  # seconds a stop may take before the worker exits without finishing it
EXIT_SHUTDOWN_STUCK = 75  # EX_TEMPFAIL: run it again


def arm_shutdown_deadline(
    deadline: float = SHUTDOWN_DEADLINE, exit: Callable[[int], object] = os._exit
) -> threading.Timer:
    """Exit the process ``deadline`` seconds from now unless it has ended by then.

    Why: Faust's graceful stop flushes the producer and commits offsets; with the broker gone
    it waits for good (a worker given SIGTERM after its broker died was found still running an
    hour later). Exiting without that commit loses nothing: the uncommitted messages are read
    again by whichever worker takes the partitions, and planning them again yields the same
    operation ids. A daemon timer: a stop that finishes in time ends the process, timer and all.
    """

    def give_up() -> None:
        log.error(
            "planner: stop not finished after %.0fs (broker unreachable?): exiting without the "
            "last commit; the next worker reads the uncommitted messages again",
            deadline,
        )
        logging.shutdown()
        exit(EXIT_SHUTDOWN_STUCK)

    timer = threading.Timer(deadline, give_up)
    timer.daemon = True
    timer.start()
    return timer


class _PlannerWorker(faust.Worker):
    """Faust's worker, with a deadline on the stop that SIGTERM or SIGINT begins."""

    shutdown_deadline = SHUTDOWN_DEADLINE
    logger_levels: dict[str, int] = {}  # replaced per instance, never mutated

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """Faust has just replaced the root logger's handlers with one at the worker's
        ``loglevel``: set the levels of the loggers named in ``log_levels`` (settings) and let
        the handlers pass what those loggers emit."""
        super().on_setup_root_logger(logger, level)
        for name, named_level in self.logger_levels.items():
            logging.getLogger(name).setLevel(named_level)
        lowest = min(self.logger_levels.values(), default=level)
        for handler in logger.handlers:
            if handler.level > lowest:
                handler.setLevel(lowest)

    def _on_sigterm(self) -> None:
        arm_shutdown_deadline(self.shutdown_deadline)
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        arm_shutdown_deadline(self.shutdown_deadline)
        super()._on_sigint()


def planner_status_server(
    app: faust.App, registry: CollectorRegistry, settings: Settings, bootstrap: str, port: int
) -> StatusServer:
    """``/metrics``, ``/healthz``, ``/readyz``, ``/status`` of a planner worker
    (:mod:`kernel.http_status`). Faust's ``rebalancing`` and ``in_recovery`` are plain flags,
    read from the server's threads; membership is the first assignment's signal."""
    broker = BrokerCheck(bootstrap)
    assigned: list[int] = []  # partitions of the latest assignment; empty until the first

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types receivers narrowly
    async def remember_assignment(sender: Any, tps: Any, **kwargs: Any) -> None:
        assigned[:] = [len(tps)]

    def readiness() -> Readiness:
        return planner_readiness(
            PlannerFacts(
                bootstrap,
                broker(),
                joined=bool(assigned),
                rebalancing=bool(getattr(app, "rebalancing", False)),
                recovering=bool(getattr(app, "in_recovery", False)),
            )
        )

    def figures() -> dict[str, Any]:
        def gauge(name: str) -> int | None:
            value = registry_total(registry, name)
            return None if value is None else int(value)

        actives = app.assignor.assigned_actives() if assigned else set()
        changelog = app.tables["state"].changelog_topic.get_topic_name()
        return {
            "assigned_partitions": assigned[0] if assigned else None,
            # the table partitions it owns now: what its gauges count (not every input topic's
            # partitions line up with them in Faust's assignment: the control topic's need not)
            "table_partitions": sorted(tp.partition for tp in actives if tp.topic == changelog),
            "parked_operations": gauge("vudsync_parked_operations"),
            "held_operations": gauge("vudsync_held_operations"),
            "blocked_operations": gauge("vudsync_blocked_operations"),
            "held_deletions": gauge("vudsync_held_deletions"),
            "staging": bool(gauge("vudsync_planner_staging")),
        }

    return status_server(settings, registry, port, "planner", readiness, figures)


def _changelog_replication(settings: Settings, bootstrap: str) -> int:
    """The table's changelog gets as many replicas as the catalogue's topics: the configured
    number, else as many as ``vud.cloud.results`` has (describing a topic the planner reads is
    within its ACLs; describing the cluster is not, and the brokers would log the refusal), else
    what the cluster's size gives."""
    security = settings.kafka_security()
    if settings.topic_replication > 0:
        return settings.topic_replication
    found = replicas_of(bootstrap, settings.topic(RESULTS.name), security=security)
    return found or replication_factor(bootstrap, 0, security=security)


def run_planner(
    settings: Settings, bootstrap: str, *, metrics_port: int | None = None, loglevel: str = "warning"
) -> None:
    """Run one planner worker until SIGTERM/SIGINT (Faust stops gracefully and commits; a stop
    that cannot finish within ``planner_shutdown_deadline`` exits without the last commit)."""
    check_versions(allow_untested=settings.planner_allow_untested_faust)
    ensure_planner_topics(settings, bootstrap)
    settings = settings.model_copy(update={"topic_replication": _changelog_replication(settings, bootstrap)})
    prime_committed_offsets(settings, bootstrap)
    registry = CollectorRegistry()
    app = build_planner(settings, bootstrap, registry)
    if metrics_port is not None:  # a daemon thread: it ends with the process
        planner_status_server(app, registry, settings, bootstrap, metrics_port).start()
    worker = _PlannerWorker(app, loglevel=loglevel, quiet=True)
    worker.shutdown_deadline = settings.planner_shutdown_deadline
    worker.logger_levels = settings.logger_levels()
    # Faust's terminal spinner sets the *root* logger to DEBUG (so that every record turns it):
    # aiokafka then builds a debug record per message sent — a tenth of the worker's time
    worker.spinner = None
    worker.execute_from_commandline()
