"""Composition root of a planner worker process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP
from prometheus_client import CollectorRegistry, start_http_server

from kernel.admin import replication_factor
from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.records import Record
from kernel.settings import Settings
from processors.agents import declare_agents
from processors.app import create_app
from processors.engine import Reconciler
from processors.handlers import Committed, PlannerHandlers, SendNow
from processors.metrics import PlannerMetrics
from processors.model import PlannerSettings
from processors.tables import TableReads, declare_table
from processors.topics import declare_topics, ensure_planner_topics

log = logging.getLogger(__name__)


def planner_settings(settings: Settings) -> PlannerSettings:
    return PlannerSettings(
        deletes_threshold=settings.planner_deletes_threshold,
        deletes_threshold_percent=settings.planner_deletes_percent,
        deletes_window_seconds=settings.planner_deletes_window,
    )


def committed_offsets(app: faust.App) -> Committed:
    """The committed offset of a topic partition, as this worker's consumer knows it (None: not
    known).

    Faust keeps it in ``Consumer._committed_offset`` (set when partitions are assigned and
    after each commit) and has no public accessor; faust-streaming is pinned, and
    tests/integration/test_planner_faust.py pins this behaviour.
    """

    def committed(topic: str, partition: int) -> int | None:
        offsets = getattr(app.consumer, "_committed_offset", None)
        tp = TP(topic, partition)
        if offsets is None or tp not in offsets:
            return None
        # Faust keeps a committed 0 as None (``perform_seek``): a record lost at offset 0 of a
        # partition (a quiet control partition's first) is then found at the next delivery,
        # not by the stall watchdog half a minute later
        return offsets[tp] or 0

    return committed


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


def producer_send_now(app: faust.App) -> SendNow:
    """Send the records the producer holds now, without their linger (a release waits for the
    acks of its sends before its table write: ``planner_linger`` per fact was what paced an
    initial sync). aiokafka 0.14.0 (pinned) has no public call for it; ``flush_for_commit``
    closes the open batches, wakes the sender and waits for them."""

    async def send_now() -> None:
        producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
        await producer._message_accumulator.flush_for_commit()

    return send_now


def drain_buffer_before_commit(app: faust.App, warn_after: float = 10.0) -> None:
    """Make the producer flush that precedes every offset commit wait for *every* record in
    Faust's producer buffer, not only until the buffer stops moving.

    Why: before it commits offsets, Faust flushes its producer (``Consumer._commit_offsets``),
    but ``ProducerBuffer.flush`` gives up as soon as no record has left the buffer for 0.1 s
    (``flush_atmost``) — an event loop starved of CPU for that long is enough. The commit then
    passes records still in the buffer, and a SIGKILL loses them. The planner's own sends do
    not use the buffer (:meth:`processors.handlers.PlannerHandlers.perform`), but every table
    write does (``Table._send_changelog`` → ``send_soon``): a worker taking the partitions
    over could recover a table without the parked operations of messages already committed,
    never to be released (loops under load saw Faust's flush leave a record behind).
    faust-streaming 0.15.3 (pinned);
    tests/unit/test_planner_commit_flush.py pins both Faust's behaviour and this fix.
    """
    buffer: Any = app.producer.buffer  # ProducerBufferT declares neither of what is replaced
    sending = 0
    send_one = buffer._send_pending
    fausts_flush = buffer.flush

    async def counted(fut: Any) -> None:
        # the record has left the queue but not yet reached the Kafka producer: still ours
        nonlocal sending
        sending += 1
        try:
            await send_one(fut)
        finally:
            sending -= 1

    async def flush() -> None:
        await fausts_flush()
        if not (buffer.size or sending):
            return
        started = time.monotonic()
        log.info(
            "planner: Faust's flush before a commit left %d records in its buffer: waiting for them",
            buffer.size + sending,
        )
        warned = False
        while buffer.size or sending:
            if buffer.state != "running" and buffer.size:
                raise RuntimeError("Cannot flush: Producer not Running")  # as Faust's own flush
            buffer.message_sent.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(buffer.message_sent.wait(), timeout=1.0)
            if not warned and time.monotonic() - started > warn_after:
                warned = True
                log.warning(
                    "planner: %d records still in the producer buffer after %.0fs: the commit "
                    "waits for them (broker slow or unreachable?)",
                    buffer.size + sending,
                    warn_after,
                )

    buffer._send_pending = counted
    buffer.flush = flush


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
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id=f"{group}-primer",
            **settings.kafka_security().for_kafka_python(),
        )
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
    drain_buffer_before_commit(app)
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
        fetch=(missed := BrokerRange(bootstrap, security=settings.kafka_security())),
        send_now=producer_send_now(app),
    )
    declare_agents(app, topics, handlers)

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
    # the table's changelog gets as many replicas as the catalogue's topics (0 = from the cluster)
    settings = settings.model_copy(
        update={
            "topic_replication": replication_factor(
                bootstrap, settings.topic_replication, security=settings.kafka_security()
            )
        }
    )
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
