"""Every workaround of faust-streaming / aiokafka behaviour the planner depends on, in one place.

Each one names the upstream behaviour it works around, in the code of the versions in
:data:`TESTED_VERSIONS` (the only ones it was checked against), and the test that fails when
that behaviour changes: ``tests/unit/test_faust_compat.py`` probes the behaviour itself where it
can run without a broker, and otherwise compares the source of every private function relied
on with :data:`CHECKED_SOURCES` — an upgrade that touches one of them fails loudly, and whoever
upgrades re-reads it and this module. :func:`check_versions` refuses to start a worker on other
versions (``VUDSYNC_PLANNER_ALLOW_UNTESTED_FAUST=true`` overrides it, for those who re-checked).

=============================  ==================================================================
workaround                     upstream behaviour (faust-streaming 0.15.3, aiokafka 0.14.0)
=============================  ==================================================================
:func:`prime_committed_offsets`  ``Consumer._drain_messages`` marks a record read
                               (``_read_offset``) even when its delivery to the stream was
                               cancelled by a rebalance (``wait_first(callback(message),
                               suspend_flow.wait())``), counting on ``perform_seek`` after the
                               rebalance to read it again; ``perform_seek`` rewinds only
                               partitions that have a committed offset.
:class:`Deliveries` (and       the same lost delivery on a partition that *is* rewound, or
``PlannerHandlers.             records fetched before a seek delivered after it: the read offset
_handle_missed``)              jumps, ``_add_gap`` records the hole as done and ``_new_offset``
                               commits past it — the records are never handled.
:func:`reread_if_stalled`      a lost delivery that no seek follows: the partition's records are
                               never delivered, its offset never committed. Judged by aiokafka's
                               ``position`` (moved when Faust's drain loop takes records) and
                               Faust's ``seek``, which calls aiokafka's outside its thread.
:func:`committed_offsets`      ``Consumer._committed_offset``: no public accessor; filled by
                               ``perform_seek`` (a committed 0 kept as None) and
                               ``_commit_offsets``, emptied per partition on revocation.
:func:`drain_buffer_before_commit`  ``ProducerBuffer.flush`` (``flush_atmost``) returns once no
                               record left the buffer for 0.1 s; ``_commit_offsets`` commits after
                               it, passing table changelog records (``send_changelog`` →
                               ``send_soon``) still buffered.
:func:`put_back_stale_fetches`  ``AIOKafkaConsumerThread._fetch_records`` fetches with Faust's
                               live set of active partitions and can wait out a rebalance;
                               aiokafka's ``Fetcher.fetched_records`` takes the then empty set
                               for every partition, Faust's ``getmany`` drops what it returns
                               with the flow stopped, and ``perform_seek`` rewinds no changelog.
:class:`OwnedKeys`             the memory store keeps a key's partition only for keys recovered
                               from the changelog (``Store._key_partition``, filled by
                               ``_create_batch_iterator``), not for keys the agent sets; and it
                               keeps a revoked partition's keys until a later recovery's
                               ``on_recovery_completed`` — so ``table.keys()`` still lists them.
:func:`producer_send_now`      aiokafka has no public "send what you hold now";
                               ``MessageAccumulator.flush_for_commit`` closes the open batches and
                               wakes the sender (reached through Faust's ``_ensure_producer``).
:class:`DirectTopic`          ``Topic.send`` wraps every record in a ``FutureMessage`` and a
                               second future, runs the sensors and Faust's ``Producer.send``
                               (≈ half of the planner's send path in its profiles) before
                               aiokafka's ``AIOKafkaProducer.send``; records handed to aiokafka
                               directly are still flushed before every offset commit, because
                               ``Consumer._commit_offsets`` awaits ``Producer.flush``, which
                               flushes aiokafka's producer after Faust's buffer.
:func:`deliver_without_tasks`  ``Consumer._drain_messages`` hands every record over with
                               ``wait_first(callback(message), suspend_flow.wait())``: mode's
                               ``Service.wait_first`` makes four tasks per record (the delivery,
                               the suspension, ``stopped`` and ``crashed``) and an
                               ``asyncio.wait``, although a delivery most often finishes without
                               waiting (the stream's queue has room; a skipped record is acked).
:func:`ack_only_when_handled`  ``Stream.take_events`` acknowledges a batch's events in the
                               ``finally`` around its ``yield``: also when the agent was cancelled
                               (or failed) in the middle of the batch, so the offsets of records
                               not yet handled are committed and never read again.
:func:`skip_before_stream`     every record reaches the agent through the conductor and the
                               stream; ``Consumer._drain_messages`` calls ``self.callback``
                               (read once at its start) per record, ``Consumer.ack`` marks one
                               done for the commit as the conductor does for undecodable ones.
:func:`current_event_as`       a table write goes to the changelog partition (and the store
                               partition) of ``current_event()``, the stream's context variable
                               ``faust.streams._current_event``; a batch (``take_events``) writes
                               for several partitions, after its events were taken.
=============================  ==================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

import faust
from aiokafka.errors import IllegalStateError
from faust.types import TP

from kernel.admin import hide_client_secrets
from kernel.errors import ConfigurationError
from kernel.settings import Settings

if TYPE_CHECKING:
    from processors.handlers import PlannerHandlers

log = logging.getLogger(__name__)

#: the versions every workaround here was read against and tested with
TESTED_VERSIONS: dict[str, str] = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}
ALLOW_UNTESTED_ENV = "VUDSYNC_PLANNER_ALLOW_UNTESTED_FAUST"

#: the first 16 hex digits of the sha256 of the source of each private function relied on, as
#: in :data:`TESTED_VERSIONS` (tests/unit/test_faust_compat.py recomputes them)
CHECKED_SOURCES: dict[str, str] = {
    "faust.transport.consumer.Consumer._drain_messages": "44a2500309e83c63",
    "faust.transport.consumer.Consumer._add_gap": "4df2573ded7c1c2c",
    "faust.transport.consumer.Consumer.ack": "5fcf41cf45153475",
    "faust.transport.consumer.Consumer._new_offset": "1d2c7ea89a7ad4f1",
    "faust.transport.consumer.Consumer.perform_seek": "0e8c130ff4b0afd8",
    "faust.transport.consumer.Consumer.seek": "b86a9fe05f956b30",
    "faust.transport.consumer.Consumer.on_partitions_revoked": "d04b7ae72c6fc206",
    "faust.transport.consumer.Consumer._commit_offsets": "1a69799041188441",
    "faust.transport.producer.ProducerBuffer.flush_atmost": "4966e8c5f9b42eb9",
    "faust.transport.producer.ProducerBuffer._send_pending": "4a9d5f932b56bc68",
    "faust.tables.base.Collection.send_changelog": "3dd3884e1b5fc0e1",
    "faust.transport.drivers.aiokafka.Producer._ensure_producer": "5592a4bbdf251325",
    "faust.transport.drivers.aiokafka.Producer.flush": "36d0cb3615f65b01",
    "aiokafka.producer.message_accumulator.MessageAccumulator.flush_for_commit": "39683730fcffc2a4",
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread.getmany": "26fc5fc9f3b667e1",
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._fetch_records": "39a2c6c79fc1455a",
    "aiokafka.consumer.fetcher.Fetcher.fetched_records": "be4348896b9b66af",
    "faust.transport.consumer.Consumer.getmany": "4b168d84882a70d6",
    "faust.transport.consumer.Consumer.stop_flow": "cf7e875a2b0d40e8",
    "mode.services.Service.wait_first": "feade6a31f8a6789",
    "faust.transport.consumer.Consumer._wait_next_records": "6218e1969a636b3f",
    "aiokafka.consumer.consumer.AIOKafkaConsumer.seek_to_committed": "f6cd85c8b70a4ccf",
    "faust.stores.memory.Store._create_batch_iterator": "b082c8bcc0403823",
    "faust.stores.memory.Store.on_recovery_completed": "a00bef343e139602",
    "faust.tables.base.Collection.partition_for_key": "3b2291811b8dd791",
    "faust.streams.Stream.take_events": "607d48aead118ba8",
    "faust.streams.Stream.ack": "32d7171a89b0931d",
    "faust.types.tuples.Message.ack": "4751b72c4ed84153",
}

#: the committed offset of ``(topic, partition)`` as the worker's consumer knows it (None: not known)
Committed = Callable[[str, int], "int | None"]
SendNow = Callable[[], Awaitable[None]]

STALL_SECONDS = 30.0  # idle this long with records left on an assigned partition: re-read them
# ... or this long, for a partition that has had no delivery at all since its assignment (from
# the first look after the rebalance and table recovery): the record lost in a rebalance is
# most often the only one left (a quiet control partition's). Not less: under load, Faust's
# first delivery after "Worker ready" took 5.5-5.7 s (two-worker kill test, load 5-13 on 2 cores)
FIRST_DELIVERY_SECONDS = 10.0
# a rebalance and table recovery lasting this long is stuck: the watchdog logs every stack once
STUCK_REBALANCE_SECONDS = 90.0
POSITION_TIMEOUT = 10.0  # seconds the watchdog waits for the consumer's position of a partition


def check_versions(
    allow_untested: bool = False, installed: Callable[[str], str] = metadata.version
) -> dict[str, str]:
    """Refuse (``ConfigurationError``) installed faust-streaming / aiokafka versions other than
    :data:`TESTED_VERSIONS` — unless ``allow_untested``, which only logs a warning. Returns
    what differs (package → installed version).

    Why: every workaround in this module leans on private code of exactly those versions; on
    others it may silently stop working (a lost message, a partition stalled for good).
    """
    differ = {}
    for package, tested in TESTED_VERSIONS.items():
        try:
            found = installed(package)
        except metadata.PackageNotFoundError:
            found = "not installed"
        if found != tested:
            differ[package] = found
    if not differ:
        return differ
    found_text = ", ".join(f"{p} {v}" for p, v in differ.items())
    tested_text = ", ".join(f"{p} {v}" for p, v in TESTED_VERSIONS.items())
    if allow_untested:
        log.warning(
            "planner: running on untested %s (tested: %s) because %s is set",
            found_text,
            tested_text,
            ALLOW_UNTESTED_ENV,
        )
        return differ
    raise ConfigurationError(
        f"the planner was tested with {tested_text}, found {found_text}: its workarounds of "
        "private faust-streaming/aiokafka behaviour (processors/faust_compat.py) may not hold",
        hint=f"install the tested versions (pip install -e .), or re-check processors/faust_compat.py "
        f"against these versions (tests/unit/test_faust_compat.py) and set {ALLOW_UNTESTED_ENV}=true",
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


class OwnedKeys:
    """Which of the table's keys belong to a partition this worker owns now — for its gauges.

    After a rebalance, the memory store still holds the keys of the partitions this worker
    lost: the keys it *wrote* stay until the worker restarts (the store records the partition
    only of keys it recovered from the changelog), so a gauge over ``table.keys()`` went on
    counting another worker's parked operations (554 for minutes, 0 only after a restart). The
    planner records the partition of each key it writes (:meth:`wrote`); the store's own record
    covers the keys it recovered. The RocksDB store lists only its active partitions' keys
    anyway; a key whose partition is known from neither is counted.
    """

    def __init__(self, app: faust.App, table: Any) -> None:
        self.app = app
        self.table = table
        self._written: dict[str, int] = {}

    def wrote(self, key: str, partition: int, deleted: bool) -> None:
        """The agent wrote ``key`` (while handling a message of ``partition``)."""
        if deleted:
            self._written.pop(key, None)
        else:
            self._written[key] = partition

    def owned(self, revoked: frozenset[int] = frozenset()) -> frozenset[int]:
        """The table partitions assigned to this worker now (less ``revoked``: the revocation
        signal comes before the assignor forgets them)."""
        topic = self.table.changelog_topic.get_topic_name()
        actives = self.app.assignor.assigned_actives()
        return frozenset(tp.partition for tp in actives if tp.topic == topic) - revoked

    def select(self, keys: Iterable[str], owned: frozenset[int]) -> Iterator[str]:
        """The ``keys`` of partitions in ``owned`` (and those of no known partition)."""
        recovered: Mapping[Any, int] = getattr(self.table.data, "_key_partition", None) or {}
        written = self._written
        for key in keys:
            partition = written.get(key)
            if partition is None:
                partition = recovered.get(key)
            if partition is None or partition in owned:
                yield key


def producer_send_now(app: faust.App) -> SendNow:
    """Send the records the producer holds now, without their linger (a release waits for the
    acks of its sends before its table write: ``planner_linger`` per fact was what paced an
    initial sync). aiokafka 0.14.0 (pinned) has no public call for it; ``flush_for_commit``
    closes the open batches, wakes the sender and waits for them."""

    async def send_now() -> None:
        producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
        await producer._message_accumulator.flush_for_commit()

    return send_now


class DirectTopic:
    """One of the planner's output topics, its records handed straight to aiokafka's producer
    (``AIOKafkaProducer.send``: the record is in the producer's accumulator when it returns;
    the future it returns resolves with the broker's acknowledgement), not through Faust's
    ``Topic.send``.

    Why: ``Topic.send`` (faust-streaming 0.15.3, pinned) builds a ``FutureMessage`` and a
    ``PendingMessage`` per record, runs the sensors and its own ``Producer.send`` before it
    reaches aiokafka's — about half of the 9-12 % of the planner's samples its sends took, for
    records the planner has already encoded (raw key and value serializers) and partitioned.
    The guarantee is unchanged: before every offset commit Faust awaits ``Producer.flush``
    (``Consumer._commit_offsets``), which flushes aiokafka's producer after Faust's buffer, so
    the records of a committed message are durable either way; an acknowledgement the planner
    waits for (``acks_first``) is the same aiokafka future. A send that fails raises aiokafka's
    ``KafkaError`` (retried by the handler) instead of Faust's ``ProducerSendError``.
    tests/unit/test_faust_compat.py pins ``Producer.flush`` and ``_ensure_producer``.
    """

    def __init__(self, app: faust.App, topic: faust.TopicT) -> None:
        self._app = app
        self.topic = topic
        self.name = topic.get_topic_name()

    async def send(
        self,
        *,
        key: bytes | None = None,
        value: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        producer = self._app.producer._ensure_producer()  # type: ignore[attr-defined]
        acked: Awaitable[Any] = await producer.send(
            self.name, value, key=key, partition=partition, headers=headers
        )
        return acked


@contextlib.contextmanager
def ack_only_when_handled(events: Iterable[Any]) -> Iterator[None]:
    """Let a batch's events be acknowledged only if the block that handles them completes.

    Why: ``Stream.take_events`` (faust-streaming 0.15.3, pinned) acknowledges every event of
    the batch it yielded in a ``finally``: when the agent is cancelled in the middle of a batch
    (a SIGTERM while the planner waits for the broker's acknowledgements) the events it has not
    handled are acknowledged too, their offsets committed by the shutdown's commit, and the
    records never read again. Each message holds one more reference while the block runs
    (Faust acknowledges a message to the consumer when its count reaches 0, ``Message.ack``);
    the block's normal end drops it, so ``take_events``' own acknowledgement is the final one.
    A cancelled or failed block keeps it: the messages stay unacknowledged, their offsets are
    not committed, and the next owner of the partition reads them again (the planner's ids
    are deterministic, so what the batch had already sent has no second effect).
    """
    messages = [event.message for event in events]
    for message in messages:
        message.incref()
    yield
    for message in messages:
        message.decref()


@contextlib.contextmanager
def current_event_as(event: Any) -> Iterator[None]:
    """Make ``event`` the current event while the block runs: Faust's table writes it makes go
    to the event's partition of the changelog (and of the store).

    Why: ``Collection.partition_for_key`` (and the RocksDB store) take the partition of a
    write from ``faust.streams.current_event()``, a context variable the stream sets for the
    event it yields. A batch of events (``Stream.take_events``) is handled after all were
    taken — from several partitions — so each partition's writes are made under one of its own
    events. faust-streaming 0.15.3 (pinned); tests/unit/test_faust_compat.py pins the source.
    """
    import weakref

    from faust import streams

    token = streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        streams._current_event.reset(token)


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


def skip_before_stream(
    app: faust.App,
    skips: Callable[[str, Any], bool],
    skipped: Callable[[str, int, int], None],
) -> None:
    """Acknowledge the records ``skips(topic, headers)`` judges useless as Faust's drain loop
    takes them, before the conductor decodes them into events and the stream delivers them;
    tell ``skipped(topic, partition, offset)``.

    Why: every record the agent receives pays Faust's fixed cost (conductor, channel queue,
    event, stream, ``take_events``, ack: several hundred µs of Python on a loaded core, most of
    the planner's CPU in the initial sync) whatever the agent then does with it; half of the
    results the planner reads teach it nothing (its own journal entries, applied access).
    Acknowledged here (``Consumer.ack``, as the conductor acks a record it cannot decode), a
    skipped record's offset is committed in order with the others: Faust commits only up to
    the first offset not acknowledged, so it waits for the records before it that are still
    in the stream. ``Consumer._drain_messages`` reads ``self.callback`` once, when it starts:
    set it before the worker starts."""
    consumer: Any = app.consumer
    deliver = consumer.callback
    ack = consumer.ack

    async def on_message(message: Any) -> None:
        if skips(message.topic, message.headers):
            ack(message)
            skipped(message.topic, message.partition, message.offset)
            return
        await deliver(message)

    consumer.callback = on_message


def deliver_without_tasks(app: faust.App) -> None:
    """Hand a fetched record to the stream in the drain loop's own task when the delivery does
    not wait, instead of racing it, in tasks, against a rebalance.

    Why: ``Consumer._drain_messages`` (faust-streaming 0.15.3, pinned) delivers each record with
    ``await self.wait_first(callback(message), self.suspend_flow.wait())`` so that a rebalance
    (``stop_flow`` sets ``suspend_flow``) interrupts a delivery stuck on a full stream queue.
    mode's ``Service.wait_first`` wraps both coroutines and the service's ``stopped`` and
    ``crashed`` events in four tasks and an ``asyncio.wait`` — per record, whatever the record:
    two thirds of Faust's fetcher in the planner's profiles (7 % of its busy samples at 100,000
    users), for deliveries that mostly finish at once (the stream's queue has room; a record
    :func:`skip_before_stream` judges useless is only acknowledged).

    Here the delivery runs one step in the drain loop's task first. If it finishes there, the
    race had one possible winner anyway: the suspension's coroutine is closed unstarted (it
    only waits on an event) and ``wait_first``'s result is not read by the drain loop. If it
    waits (a full queue), the rest of it is raced against the suspension by mode's own
    ``wait_first``, as before. When the flow is already suspended, the service stopping or
    crashed, or the call is any other, mode's ``wait_first`` does everything, as before. An
    exception of the delivery propagates in both cases, as ``wait_first`` propagates it.
    tests/unit/test_faust_compat.py pins the call and probes both paths.
    """
    consumer: Any = app.consumer
    fausts_wait_first = consumer.wait_first
    suspend_wait = type(consumer.suspend_flow).wait.__code__

    async def wait_first(*coros: Any, timeout: Any = None) -> Any:
        if (
            len(coros) != 2
            or timeout is not None
            or getattr(coros[1], "cr_code", None) is not suspend_wait
            or consumer.suspend_flow.is_set()
            or consumer._stopped.is_set()
            or consumer._crashed.is_set()
        ):
            return await fausts_wait_first(*coros, timeout=timeout)
        delivery, suspended = coros
        try:
            waiting_on = delivery.send(None)
        except StopIteration:
            suspended.close()  # never started: it waits on an event, nothing to undo
            return None
        except BaseException:
            suspended.close()
            raise
        return await fausts_wait_first(_Resumed(delivery, waiting_on), suspended)

    consumer.wait_first = wait_first


class _Resumed:
    """An awaitable that finishes ``coro``, already stepped once (it yielded ``waiting_on``):
    what ``await coro`` would have done from there, so that a task can run the rest of it."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Any, waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Any:
        coro, waiting_on = self._coro, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation, or an error set on the awaited future
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    waiting_on = coro.send(sent)
                except StopIteration as done:
                    return done.value


def put_back_stale_fetches(app: faust.App) -> None:
    """Make every fetch of Faust's consumer take only the partitions it was asked for, and put
    back (seek to their first offset) the records it takes that Faust would drop: those fetched
    while the flow is stopped (a rebalance) or of a partition Faust no longer reads.

    Why: Faust's drain loop asks the consumer thread for records
    (``AIOKafkaConsumerThread.getmany`` → ``_fetch_records``) with its *own*, live set of
    active partitions, and the fetch waits up to a second for data (aiokafka's
    ``Fetcher.fetched_records``; across a group rejoin, ``wait_for_assignment`` without a
    timeout). A fetch started before a rebalance outlives it: by the time data comes in, Faust
    has paused every partition — the set is empty, which ``fetched_records`` takes for *all*
    partitions — so it drains everything aiokafka holds, the table changelog just positioned
    for recovery included, and moves aiokafka's positions past it. Faust's ``getmany`` then
    sees the flow stopped and drops the records, and ``perform_seek`` rewinds only partitions
    with a committed offset above 0 (aiokafka's ``seek_to_committed``): a changelog has none.
    The survivor's table recovery then waits for ever for records already taken (two-worker
    kill test, about one run in ten under load: "No event received for active tp ... since
    recovery start", aiokafka's changelog positions at their end). Putting the records back
    happens in the consumer thread, right after the fetch returns and before anything else can
    move the positions. faust-streaming 0.15.3, aiokafka 0.14.0 (pinned);
    tests/unit/test_planner_stale_fetch.py reproduces the loss and pins the fix.
    """
    _guard_consumer_thread(app.consumer._thread)  # type: ignore[attr-defined]


def _guard_consumer_thread(thread: Any) -> None:
    fausts_getmany = thread.getmany
    fausts_fetch_records = thread._fetch_records
    faust_consumer = thread.consumer

    async def getmany(active_partitions: Any, timeout: float) -> Any:
        # a copy, taken now: Faust's set changes while the fetch waits in the consumer thread
        asked = None if active_partitions is None else frozenset(active_partitions)
        if asked is not None and not asked:
            return {}  # aiokafka would take an empty set for every partition
        return await fausts_getmany(asked, timeout)

    async def fetch_records(consumer: Any, active_partitions: Any, **kwargs: Any) -> Any:
        records = await fausts_fetch_records(consumer, active_partitions, **kwargs)
        if not records:
            return records
        # Faust's getmany yields a record only while the flow is on and its partition is
        # active (or buffered); read here, in the consumer thread, once the fetch is done
        flowing = faust_consumer.flow_active
        active = faust_consumer._active_partitions  # None: every partition
        buffered = faust_consumer._buffered_partitions
        kept = {
            tp: rs
            for tp, rs in records.items()
            if flowing and (active is None or tp in active or tp in buffered)
        }
        stale = {tp: rs for tp, rs in records.items() if tp not in kept and rs}
        for tp, rs in stale.items():
            try:
                consumer.seek(tp, rs[0].offset)
            except IllegalStateError:  # no longer assigned: nothing of it to keep
                continue
        if stale:
            log.info(
                "planner: a fetch returned %d records Faust would drop (flow %s): put back %s",
                sum(len(rs) for rs in stale.values()),
                "on" if flowing else "stopped",
                ", ".join(f"{tp.topic}[{tp.partition}]@{rs[0].offset}" for tp, rs in sorted(stale.items())),
            )
        return kept

    thread.getmany = getmany
    thread._fetch_records = fetch_records


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
    hide_client_secrets()
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


class Deliveries:
    """What the planner was handed, per topic partition: the next offset expected and when.

    Faust delivers a partition's records in offset order, from the committed offset on; a jump
    forward means records the planner never saw: compaction (only in the old, compacted part of
    a directory or facts topic) or a delivery the consumer lost — the handler asks the broker
    which. The first delivery after an assignment is expected at the committed offset
    (``committed``; None: not known, no check). Going back is normal (a seek after a
    rebalance). When the last delivery on a partition was is what the stall watchdog
    (:func:`reread_if_stalled`) judges a partition by. Everything is forgotten when partitions
    are revoked: another worker may move a partition on before it comes back.
    """

    def __init__(
        self,
        committed: Committed = lambda topic, partition: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._committed = committed
        self._clock = clock
        self._next: dict[tuple[str, int], int] = {}
        self._at: dict[tuple[str, int], float] = {}
        self._skipped: dict[tuple[str, int], set[int]] = {}
        self._since = clock()
        self._held = False
        self._held_at = self._since
        self._held_reported = False

    def observe(self, topic: str, partition: int, offset: int) -> tuple[int, int] | None:
        """Note a delivery; the first and last offset skipped right before it, if any. Offsets
        acknowledged unread (:meth:`skipped`) right before it are no gap."""
        key = (topic, partition)
        expected = self._next.get(key)
        if expected is None:
            expected = self._committed(topic, partition)
        self._next[key] = offset + 1
        self._at[key] = self._clock()
        skipped = self._skipped.get(key)
        if skipped:
            while expected is not None and expected < offset and expected in skipped:
                expected += 1
            for old in [o for o in skipped if o <= offset]:
                skipped.discard(old)
        if expected is None or offset <= expected:
            return None
        return expected, offset - 1

    def skipped(self, topic: str, partition: int, offset: int) -> None:
        """A record acknowledged without reaching the handler (:func:`skip_before_stream`): the
        stream may still hold records before it, so it only fills the hole it leaves in the
        offsets :meth:`observe` sees next. A skip it cannot account for is read from the
        broker like any missed delivery, and skipped there."""
        key = (topic, partition)
        self._at[key] = self._clock()
        expected = self._next.get(key)
        if expected is None:
            expected = self._committed(topic, partition)
        if offset == expected:  # everything before it was handled: nothing left to account for
            self._next[key] = offset + 1
        else:  # records before it are still on their way through the stream
            self._skipped.setdefault(key, set()).add(offset)

    def quiet_for(self, topic: str, partition: int) -> float:
        """Seconds since the partition's last delivery (or since the assignment, if none)."""
        return self._clock() - self._at.get((topic, partition), self._since)

    def delivered(self, topic: str, partition: int) -> bool:
        """Whether anything of the partition was delivered (or sought) since the assignment."""
        return (topic, partition) in self._at

    def restart(self, topic: str, partition: int, offset: int) -> None:
        """The partition is read again from ``offset`` (a seek): expected there next."""
        key = (topic, partition)
        self._next[key] = offset
        self._at[key] = self._clock()

    def forget(self) -> None:
        log.debug("planner: deliveries forgotten (partitions revoked)")
        self._next.clear()
        self._at.clear()
        self._skipped.clear()
        self._since = self._clock()

    def hold(self) -> None:
        """The worker is rebalancing or recovering its table: Faust fetches nothing for the
        agent yet; a partition's wait for its first delivery starts at :meth:`resume`."""
        if not self._held:
            self._held = True
            self._held_at = self._clock()
            self._held_reported = False

    def resume(self) -> None:
        """The first look after a :meth:`hold`: the wait for first deliveries starts now."""
        if self._held:
            self._held = False
            self._since = self._clock()

    def held_too_long(self, limit: float) -> bool:
        """True once per hold, when it has lasted ``limit`` seconds."""
        if not self._held or self._held_reported or self._clock() - self._held_at < limit:
            return False
        self._held_reported = True
        return True


async def reread_if_stalled(app: faust.App, handlers: PlannerHandlers, inputs: frozenset[str]) -> None:
    """Read a partition of the agent's ``inputs`` again from its committed offset when it has
    records left but nothing of it reached the planner for ``STALL_SECONDS`` — or for
    ``FIRST_DELIVERY_SECONDS`` when nothing at all did since its assignment, counted from the
    first look after the rebalance and table recovery (not while rebalancing or recovering, nor
    while a message is being handled), and only once Faust's consumer has fetched it past its
    committed offset (:func:`_fetched_past`): a seek while Faust's own first fetch is on its
    way races it (seen in the two-worker kill test: every partition of the survivor sought a
    few seconds after a slow recovery, before Faust's first delivery).

    Why: faust-streaming 0.15.3 marks a record as read when its delivery to the stream was
    cancelled by a rebalance (``Consumer._drain_messages``) and counts on the seek after the
    rebalance to read it again; when that seek does not come, the record is never delivered,
    its offset never committed, and the partition stalls behind its end for good (seen in the
    replay and two-worker e2e tests: one control record never handled). Judged per partition,
    so a stall is found while other partitions keep the worker busy. Reading from the committed
    offset is what Faust does after every rebalance; a record handled twice is re-planned with
    the same ids.
    """
    if app.rebalancing or app.in_recovery:
        log.debug(
            "planner: stall watchdog stands down (rebalancing: %s, recovering: %s)",
            app.rebalancing,
            app.in_recovery,
        )
        handlers.deliveries.hold()
        if handlers.deliveries.held_too_long(STUCK_REBALANCE_SECONDS):
            log.warning(
                "planner: rebalancing or recovering the table for %.0fs (rebalancing: %s, "
                "recovering: %s); where every task and thread waits:\n%s",
                STUCK_REBALANCE_SECONDS,
                app.rebalancing,
                app.in_recovery,
                where_everything_waits(app=app),
            )
        return
    handlers.deliveries.resume()
    if handlers.in_message:
        return
    consumer = app.consumer
    try:
        quiet = [
            tp
            for tp in consumer.assignment()
            if tp.topic in inputs  # not the table's changelog: Faust reads it itself, for recovery
            and handlers.deliveries.quiet_for(tp.topic, tp.partition) >= _patience(handlers, tp)
        ]
        if not quiet:
            return
        ends = await consumer.highwaters(*quiet)
        # Faust keeps a committed 0 as None (every input partition has a committed offset:
        # prime_committed_offsets)
        committed = {tp: handlers.committed(tp.topic, tp.partition) or 0 for tp in quiet}
        lagging = {tp: offset for tp, offset in committed.items() if (ends.get(tp) or 0) > offset}
        stalled = {tp: offset for tp, offset in lagging.items() if await _fetched_past(consumer, tp, offset)}
        for tp, offset in sorted(stalled.items()):
            log.warning(
                "planner: nothing of %s[%d] handled for %.0fs, committed %d of %d "
                "(fetching: %s, paused: %s): reading it again from %d",
                tp.topic,
                tp.partition,
                handlers.deliveries.quiet_for(tp.topic, tp.partition),
                offset,
                ends[tp],
                tp in (getattr(consumer, "_active_partitions", None) or ()),
                tp in getattr(consumer, "_paused_partitions", ()),
                offset,
            )
            await consumer.seek(tp, offset)
            handlers.deliveries.restart(tp.topic, tp.partition, offset)
            handlers.metrics.child(handlers.metrics.retries, "stalled").inc()
    except Exception:  # a watchdog must never take the worker down
        log.exception("planner: checking for stalled partitions failed")


def where_everything_waits(limit: int = 12, app: Any = None) -> str:
    """The stack of every asyncio task of this loop and of every thread (code lines only, no
    values): where a stuck worker waits. For a rebalance that never ends (seen once in 20
    two-worker kill runs: the survivor's table recovery got no changelog record for minutes,
    its fetcher and consumer thread silent), which the log alone could not place. With the
    ``app``, also the tasks of the consumer thread's own event loop (aiokafka's fetcher and the
    calls Faust queued to it, e.g. a ``getmany``) and :func:`consumer_state`."""
    out = [_await_chain(task, limit) for task in asyncio.all_tasks()]
    for thread_id, frame in sys._current_frames().items():
        out.append(f"thread {thread_id}:\n" + "".join(traceback.format_stack(frame, limit=limit)))
    if app is not None:
        out.append(_consumer_thread_tasks(app, limit))
        out.append(consumer_state(app))
    return "\n".join(out)


def _consumer_thread_tasks(app: Any, limit: int) -> str:
    try:
        loop = app.consumer._thread.thread_loop
        # read from this thread, for a diagnosis only: all_tasks copies the loop's task set
        tasks = asyncio.all_tasks(loop)
    except Exception as exc:  # a diagnosis must never fail the worker
        return f"consumer thread tasks: not available ({type(exc).__name__})"
    return "\n".join([f"consumer thread tasks ({len(tasks)}):", *(_await_chain(t, limit) for t in tasks)])


def _await_chain(task: asyncio.Task[Any], limit: int) -> str:
    """Where a task waits, down its chain of awaited coroutines (a task's own stack ends at
    its outermost coroutine: mode's ``await task`` for every service task)."""
    lines = [f"task {task.get_name()}:"]
    awaited: Any = task.get_coro()
    while awaited is not None and len(lines) <= limit:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            lines.append(f"  awaits {type(awaited).__name__}")
            break
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_qualname}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "\n".join(lines)


def consumer_state(app: Any) -> str:
    """What Faust's consumer and aiokafka's fetcher hold now (names and offsets only, never
    values): whether the flow is on, the partitions Faust fetches (``_active_partitions``) and
    pauses, and per assigned partition aiokafka's position, pause and reset state, and whether
    it has fetched records waiting; the group's reassignment flag, fetches in flight and the
    calls queued to the consumer thread. For a stuck rebalance or table recovery."""
    lines = []

    def add(name: str, get: Callable[[], Any]) -> None:
        try:
            lines.append(f"  {name}: {get()}")
        except Exception as exc:  # a diagnosis must never fail the worker
            lines.append(f"  {name}: ? ({type(exc).__name__}: {exc})")

    consumer = app.consumer

    def tps(tp_set: Any) -> list[str]:
        return sorted(f"{tp.topic}[{tp.partition}]" for tp in tp_set or ())

    add("flow active", lambda: consumer.flow_active)
    add("app flow control suspended", lambda: app.flow_control._suspend.is_set())
    add("faust active partitions", lambda: tps(consumer._active_partitions))
    add("faust paused partitions", lambda: tps(consumer._paused_partitions))
    add("faust buffered partitions", lambda: tps(consumer._buffered_partitions))
    add("fetcher service", lambda: f"{app._fetcher.state} drainer={app._fetcher._drainer!r}")
    add("consumer thread queue", lambda: consumer._thread.method_queue._queue.qsize())
    aio = getattr(getattr(consumer, "_thread", None), "_consumer", None)
    if aio is not None:
        subscriptions = aio._subscription
        fetcher = aio._fetcher
        add("aiokafka reassignment in progress", lambda: subscriptions.reassignment_in_progress)
        add("aiokafka assignment waiters", lambda: len(subscriptions._assignment_waiters))
        add("aiokafka fetch waiters", lambda: len(fetcher._fetch_waiters))
        add("aiokafka fetches in flight to nodes", lambda: sorted(fetcher._in_flight))
        add("aiokafka pending fetch tasks", lambda: len(fetcher._pending_tasks))
        add("aiokafka fetch routine", lambda: fetcher._fetch_task)
        add(
            "aiokafka records held",
            lambda: {
                f"{tp.topic}[{tp.partition}]": type(r).__name__ for tp, r in list(fetcher._records.items())
            },
        )

        def positions() -> str:
            assignment = subscriptions.subscription.assignment
            out = []
            for tp in sorted(assignment.tps):
                state = assignment.state_value(tp)
                out.append(
                    f"\n    {tp.topic}[{tp.partition}] position={state._position} "
                    f"paused={state.paused} awaiting_reset={state.awaiting_reset}"
                )
            return f"active={assignment.active}" + "".join(out)

        add("aiokafka assignment", positions)
    return "consumer state:\n" + "\n".join(lines)


async def _fetched_past(consumer: Any, tp: Any, committed: int) -> bool:
    """Whether Faust's consumer has fetched the partition past its committed offset (aiokafka's
    position moves when the fetcher hands records over to Faust's drain loop).

    A lost delivery is a record Faust took from the fetcher and never handed to the agent, so
    it always lies past the position's start. A partition still positioned at its committed
    offset has lost nothing: its first fetch is on its way (slow under load: five seconds after
    table recovery were seen), and seeking it then races that fetch — from another thread:
    Faust's ``seek`` calls aiokafka's directly, not in the consumer's thread.
    """
    try:
        position = await asyncio.wait_for(consumer.position(tp), timeout=POSITION_TIMEOUT)
    except TimeoutError:
        return False  # asked again at the next look
    if position is not None and position <= committed:
        log.debug(
            "planner: %s[%d] not fetched past its committed offset %d yet: nothing lost, no seek",
            tp.topic,
            tp.partition,
            committed,
        )
        return False
    return True


def _patience(handlers: PlannerHandlers, tp: Any) -> float:
    return STALL_SECONDS if handlers.deliveries.delivered(tp.topic, tp.partition) else FIRST_DELIVERY_SECONDS
