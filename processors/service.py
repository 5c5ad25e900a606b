"""Composition root of a planner worker process."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import faust
from faust.types import TP
from prometheus_client import CollectorRegistry, start_http_server

from processors.agents import declare_agents
from processors.app import create_app
from processors.engine import Reconciler
from processors.handlers import Committed, PlannerHandlers, Seek, SendNow
from processors.metrics import PlannerMetrics
from processors.model import PlannerSettings
from processors.tables import TableReads, declare_table
from processors.topics import declare_topics, ensure_planner_topics
from vudsync.settings import Settings

log = logging.getLogger(__name__)


def planner_settings(settings: Settings) -> PlannerSettings:
    return PlannerSettings(
        deletes_threshold=settings.planner_deletes_threshold,
        deletes_threshold_percent=settings.planner_deletes_percent,
        deletes_window_seconds=settings.planner_deletes_window,
    )


def committed_offsets(app: faust.App) -> Committed:
    """The committed offset of a topic partition, as this worker's consumer knows it.

    Faust keeps it in ``Consumer._committed_offset`` (set when partitions are assigned and
    after each commit) and has no public accessor; faust-streaming is pinned, and
    tests/integration/test_planner_faust.py pins this behaviour.
    """

    def committed(topic: str, partition: int) -> int | None:
        offsets = getattr(app.consumer, "_committed_offset", None)
        return offsets.get(TP(topic, partition)) if offsets is not None else None

    return committed


def partition_seek(app: faust.App) -> Seek:
    """Seek one partition of the worker's consumer (Faust's ``Consumer.seek``: aiokafka's seek,
    and the read offset Faust keeps, so that the records are delivered again)."""

    async def seek(topic: str, partition: int, offset: int) -> None:
        await app.consumer.seek(TP(topic, partition), offset)

    return seek


def producer_send_now(app: faust.App) -> SendNow:
    """Send the records the producer holds now, without their linger (a release waits for the
    acks of its sends before its table write: ``planner_linger`` per fact was what paced an
    initial sync). aiokafka 0.14.0 (pinned) has no public call for it; ``flush_for_commit``
    closes the open batches, wakes the sender and waits for them."""

    async def send_now() -> None:
        producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
        await producer._message_accumulator.flush_for_commit()

    return send_now


def prime_committed_offsets(settings: Settings, bootstrap: str) -> int:
    """Give every input partition of the planner's group a committed offset (its beginning)
    where it has none yet; returns how many were primed.

    Why: faust-streaming 0.15.3 drops a message whose delivery to the stream was interrupted by
    a rebalance (``Consumer._drain_messages``: the read offset advances although the
    delivery was cancelled) and relies on the seek to the committed offset after the rebalance
    to read it again — a partition without a committed offset is not rewound, and the message
    is lost. Quiet partitions (the control topic's) are the ones that have none. Only possible
    while the group has no member: a worker primes before it joins, so the first one does it.
    """
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.errors import (
        CoordinatorLoadInProgressError,
        CoordinatorNotAvailableError,
        KafkaError,
        NoError,
        NotCoordinatorError,
    )
    from kafka.structs import OffsetAndMetadata

    from processors.app import app_id
    from processors.topics import PLANNER_INPUTS

    logging.getLogger("kafka.admin").setLevel(logging.ERROR)  # it cannot decode faust's member data
    group = app_id(settings)
    wanted = [
        TopicPartition(settings.topic(name), p)
        for name in PLANNER_INPUTS
        for p in range(settings.topic_partitions)
    ]
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{group}-primer")
    except KafkaError as exc:
        log.warning("planner: cannot prime committed offsets (%s)", exc)
        return 0
    try:
        primed = 0
        for attempt in range(30):
            try:
                described = admin.describe_groups([group]).get(group) or {}
                if described.get("members"):
                    return primed  # live members primed when they started
                committed = admin.list_group_offsets({group: None}).get(group, {})
                missing = {tp: OffsetAndMetadata(0, "", -1) for tp in wanted if tp not in committed}
                if not missing:
                    return primed
                # per-partition errors come back as values, not exceptions: a partition the
                # coordinator does not know yet (topics just created) stays unprimed unless
                # it is tried again
                answers = admin.alter_group_offsets(group, missing)
                refused = {tp: err for tp, err in answers.items() if err is not NoError}
                primed += len(missing) - len(refused)
                if not refused:
                    return primed
                log.debug("planner: priming offsets, attempt %d refused: %s", attempt, refused)
            except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError) as exc:
                # a new group's coordinator takes a moment to come up (and to load its offsets)
                log.debug("planner: priming offsets, attempt %d: %s", attempt, exc)
            time.sleep(min(2.0, 0.1 * 2**attempt))
        log.warning("planner: committed offsets not primed on every input partition (see -vv)")
        return primed
    except KafkaError as exc:  # e.g. another worker joined meanwhile: it primed
        log.info("planner: committed offsets not primed (%s)", exc)
        return 0
    finally:
        admin.close()


def build_planner(settings: Settings, bootstrap: str, registry: CollectorRegistry) -> faust.App:
    app = create_app(settings, bootstrap)
    topics = declare_topics(app, settings)
    table = declare_table(app)
    reconciler = Reconciler(
        TableReads(table), planner_settings(settings), settings.topic_partitions, lambda: datetime.now(UTC)
    )
    handlers = PlannerHandlers(
        reconciler,
        table,
        topics,
        PlannerMetrics(registry),
        committed_offsets(app),
        topic_prefix=settings.topic_prefix,
        seek=partition_seek(app),
        send_now=producer_send_now(app),
    )
    declare_agents(app, topics, handlers)
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

    def _on_sigterm(self) -> None:
        arm_shutdown_deadline(self.shutdown_deadline)
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        arm_shutdown_deadline(self.shutdown_deadline)
        super()._on_sigint()


def run_planner(
    settings: Settings, bootstrap: str, *, metrics_port: int | None = None, loglevel: str = "warning"
) -> None:
    """Run one planner worker until SIGTERM/SIGINT (Faust stops gracefully and commits; a stop
    that cannot finish within ``planner_shutdown_deadline`` exits without the last commit)."""
    ensure_planner_topics(settings, bootstrap)
    prime_committed_offsets(settings, bootstrap)
    registry = CollectorRegistry()
    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.metrics_host, registry=registry)
    app = build_planner(settings, bootstrap, registry)
    worker = _PlannerWorker(app, loglevel=loglevel, quiet=True)
    worker.shutdown_deadline = settings.planner_shutdown_deadline
    # Faust's terminal spinner sets the *root* logger to DEBUG (so that every record turns it):
    # aiokafka then builds a debug record per message sent — a tenth of the worker's time
    worker.spinner = None
    worker.execute_from_commandline()
