"""Consumer lag of the pipeline's consumer groups, read from the broker, for Prometheus.

Exposes (names as in ARCHITECTURE.md; the three read-health metrics are the exporter's own):

* ``vudsync_consumer_lag_messages{group,topic,partition}`` — messages the group has still to
  read: the partition's end offset minus the group's committed offset;
* ``vudsync_consumer_committed_offset{group,topic,partition}`` — the committed offset itself
  (its rate is the group's consumption rate; an offset that stands still while lag > 0 is a
  stalled consumer);
* ``vudsync_consumer_lost_messages{group,topic,partition}`` — work lost to retention: how
  far the partition's log start has passed the group's committed offset (records deleted
  before the group read them); 0 while the committed offset is at or above the log start;
* ``vudsync_consumer_lag_reads_total`` / ``vudsync_consumer_lag_read_errors_total`` and
  ``vudsync_consumer_lag_read_timestamp_seconds`` (the last successful read, Unix time);
* ``vudsync_staged_operations`` — staging mode: records on ``vud.cloud.operations.staged``
  after the staging mark (not yet promoted or discarded; :mod:`vudsync.ops.staging`); absent
  while there is no staged topic. Not a lag: no consumer ever reads that group.

Why a process of its own (``vudsync run lag-exporter``) and not a thread in the planner and
the sink: lag matters most when a consumer is down or stuck, and an exporter inside that
consumer dies or hangs with it; scaled-out workers would each export the same group's lag
(N copies to de-duplicate in every query); and one exporter asks the broker at one rate,
whatever the number of workers.

Contracts:

* A partition the group has never committed counts from the partition's log start offset:
  the consumers use ``auto.offset.reset=earliest``, so everything retained is still to be
  read. A committed offset below the log start (retention deleted what was not read) counts
  from the log start too, and the difference is *lost* (``lost``). Lag is never negative.
* The partitions of a group are those of its input topics (from the settings) plus every
  topic it has committed offsets for. A topic that does not exist yet is left out.
* A scrape never waits on the broker: it reads the last snapshot, which a background loop
  refreshes every ``Settings.lag_interval`` seconds. A snapshot older than three intervals is
  not exported at all — a frozen number would hide a broken read; the read-error counter and
  the vanished series say what happened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kernel.admin import hide_client_secrets, translate
from kernel.health import LagExporterFacts, Readiness, lag_exporter_readiness
from kernel.http_status import StatusServer, registry_by_label, registry_total, status_server
from kernel.kafka_credentials import check_credentials
from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.records import TopicPartition as TopicPartitionKey  # kafka.TopicPartition is the client's
from kernel.settings import Settings
from kernel.signals import run_until_stopped

log = logging.getLogger(__name__)

Offsets = dict[TopicPartitionKey, int]
_T = TypeVar("_T")


@dataclass(frozen=True)
class GroupSpec:
    """A consumer group and the topics it reads."""

    group: str
    topics: tuple[str, ...]


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group never committed this partition
    end: int
    lag: int
    lost: int = 0  # log start - committed, when retention deleted records the group never read


@dataclass(frozen=True)
class LagSnapshot:
    rows: tuple[PartitionLag, ...]
    taken_at: float  # time.monotonic() of the read
    staged: int | None = None  # staging mode: records staged, not promoted or discarded (None: no topic)


def compute_lag(
    groups: Sequence[GroupSpec],
    committed: Mapping[str, Mapping[TopicPartitionKey, int]],
    start: Mapping[TopicPartitionKey, int],
    end: Mapping[TopicPartitionKey, int],
) -> list[PartitionLag]:
    """Per group and partition: what is left to read (pure; see the module's contracts)."""
    rows: list[PartitionLag] = []
    for spec in groups:
        offsets = committed.get(spec.group, {})
        topics = set(spec.topics) | {topic for topic, _ in offsets}
        for tp in sorted(tp for tp in end if tp[0] in topics):
            first, last = start.get(tp, 0), end[tp]
            known = offsets.get(tp)
            at = first if known is None or known < 0 else max(known, first)
            rows.append(
                PartitionLag(
                    spec.group,
                    tp[0],
                    tp[1],
                    known if known is not None and known >= 0 else None,
                    last,
                    max(last - at, 0),
                    first - known if known is not None and 0 <= known < first else 0,
                )
            )
    return rows


class OffsetReader(Protocol):
    """What the exporter needs from the broker."""

    def committed(self, groups: Sequence[str]) -> dict[str, Offsets]:
        """Committed offsets per group (a group that never committed maps to ``{}``)."""
        ...

    def partitions(self, topics: Iterable[str]) -> dict[str, int]:
        """Partition count of each topic that exists (unknown topics are left out)."""
        ...

    def log_offsets(self, partitions: Sequence[TopicPartitionKey]) -> tuple[Offsets, Offsets]:
        """``(start, end)``: the log start and end offsets of each partition."""
        ...

    def close(self) -> None: ...


class KafkaAdminOffsetReader:
    """:class:`OffsetReader` over kafka-python's ``KafkaAdminClient``.

    The client is created on first use and dropped after any error, so that a broker that
    comes back is reconnected to by the next read. kafka-python errors leave as
    :class:`kernel.errors.VudsyncError` (translated once, here).
    """

    def __init__(self, bootstrap: str, *, timeout: float = 10.0, security: KafkaSecurity = PLAINTEXT) -> None:
        self.bootstrap = bootstrap
        self.security = security
        self.timeout_ms = int(timeout * 1000)
        self._client: KafkaAdminClient | None = None

    def _call(self, what: str, fn: Callable[[KafkaAdminClient], _T]) -> _T:
        try:
            if self._client is None:
                hide_client_secrets()
                check_credentials(self.bootstrap, self.security, timeout=self.timeout_ms / 1000)
                self._client = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    client_id="vudsync-lag-exporter",
                    request_timeout_ms=self.timeout_ms,
                    bootstrap_timeout_ms=self.timeout_ms,
                    reconnect_backoff_max_ms=1000,
                    **self.security.for_kafka_python(),
                )
            return fn(self._client)
        except Exception as exc:
            self.close()
            raise translate(exc, what) from exc

    def committed(self, groups: Sequence[str]) -> dict[str, Offsets]:
        raw = self._call(
            f"read committed offsets of {list(groups)}",
            lambda admin: admin.list_group_offsets({g: None for g in groups}),
        )
        return {
            group: {(tp.topic, tp.partition): meta.offset for tp, meta in (raw.get(group) or {}).items()}
            for group in groups
        }

    def partitions(self, topics: Iterable[str]) -> dict[str, int]:
        wanted = sorted(set(topics))
        if not wanted:
            return {}

        def describe(admin: KafkaAdminClient) -> list[dict[str, Any]]:
            existing = set(admin.list_topics())
            names = [t for t in wanted if t in existing]
            return admin.describe_topics(names) if names else []

        return {
            str(t["name"]): len(t["partitions"])
            for t in self._call("describe topics", describe)
            if t.get("error_code") == 0 and t.get("partitions")
        }

    def log_offsets(self, partitions: Sequence[TopicPartitionKey]) -> tuple[Offsets, Offsets]:
        return self._offsets(partitions, OffsetSpec.EARLIEST), self._offsets(partitions, OffsetSpec.LATEST)

    def _offsets(self, partitions: Sequence[TopicPartitionKey], spec: OffsetSpec) -> Offsets:
        if not partitions:
            return {}
        specs = {TopicPartition(t, p): spec for t, p in partitions}
        what = f"list {spec.name.lower()} offsets"
        raw = self._call(what, lambda admin: admin.list_partition_offsets(specs))
        return {(tp.topic, tp.partition): value.offset for tp, value in raw.items()}

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken client must not hide the error that broke it
                log.debug("lag exporter: closing the admin client failed", exc_info=True)


class LagCollector(Collector):
    """Exports the latest :class:`LagSnapshot` while it is fresh (see the module's contracts)."""

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.clock = clock
        self._snapshot: LagSnapshot | None = None

    def update(self, snapshot: LagSnapshot) -> None:
        self._snapshot = snapshot  # one reference assignment: scrapes see the old or the new one

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        labels = ["group", "topic", "partition"]
        return (
            GaugeMetricFamily(
                "vudsync_consumer_lag_messages",
                "Messages a consumer group has still to read (end offset - committed offset)",
                labels=labels,
            ),
            GaugeMetricFamily(
                "vudsync_consumer_committed_offset",
                "The consumer group's committed offset (its rate is the group's consumption rate)",
                labels=labels,
            ),
            GaugeMetricFamily(
                "vudsync_consumer_lost_messages",
                "Records deleted by retention before the group read them (log start - committed "
                "offset; 0 when nothing was lost)",
                labels=labels,
            ),
        )

    @staticmethod
    def _staged_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "vudsync_staged_operations",
            "Staging mode: records on vud.cloud.operations.staged not yet promoted or discarded",
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()
        yield self._staged_family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag, committed, lost = self._families()
        staged = self._staged_family()
        snapshot = self._snapshot
        fresh = snapshot is not None and self.clock() - snapshot.taken_at <= self.max_age
        if snapshot is not None and fresh and snapshot.staged is not None:
            staged.add_metric([], snapshot.staged)
        if snapshot is not None and fresh:
            for row in snapshot.rows:
                labels = [row.group, row.topic, str(row.partition)]
                lag.add_metric(labels, row.lag)
                if row.committed is not None:
                    committed.add_metric(labels, row.committed)
                    lost.add_metric(labels, row.lost)
        yield lag
        yield committed
        yield lost
        yield staged


class LagMetrics:
    """The exporter's metrics: the lag collector and its own read health."""

    def __init__(self, registry: CollectorRegistry, max_age: float) -> None:
        self.lag = LagCollector(max_age)
        registry.register(self.lag)
        self.reads = Counter(
            "vudsync_consumer_lag_reads_total", "Reads of consumer offsets from the broker", registry=registry
        )
        self.read_errors = Counter(
            "vudsync_consumer_lag_read_errors_total",
            "Reads of consumer offsets that failed (the lag series vanish when reads keep failing)",
            registry=registry,
        )
        self.read_timestamp = Gauge(
            "vudsync_consumer_lag_read_timestamp_seconds",
            "Unix time of the last successful read of consumer offsets",
            registry=registry,
        )


class LagExporter:
    """Reads the groups' lag every ``interval`` seconds and hands it to :class:`LagMetrics`."""

    def __init__(
        self,
        reader: OffsetReader,
        groups: Sequence[GroupSpec],
        metrics: LagMetrics,
        interval: float,
        staging: GroupSpec | None = None,
    ) -> None:
        self.reader = reader
        self.groups = tuple(groups)
        self.metrics = metrics
        self.interval = interval
        self.staging = staging  # the staging mark's group: its "lag" is what is staged

    def read_once(self) -> LagSnapshot:
        extra = (self.staging,) if self.staging is not None else ()
        committed = self.reader.committed([g.group for g in (*self.groups, *extra)])
        topics = {t for g in (*self.groups, *extra) for t in g.topics}
        topics |= {topic for offsets in committed.values() for topic, _ in offsets}
        counts = self.reader.partitions(topics)
        partitions = [(topic, p) for topic, n in sorted(counts.items()) for p in range(n)]
        start, end = self.reader.log_offsets(partitions)
        rows = tuple(compute_lag(self.groups, committed, start, end))
        staged = None
        if self.staging is not None and any(t in counts for t in self.staging.topics):
            staged = sum(r.lag for r in compute_lag([self.staging], committed, start, end))
        return LagSnapshot(rows, time.monotonic(), staged)

    def refresh(self) -> bool:
        """One read; True when it succeeded. Never raises: a failed read is logged and counted."""
        self.metrics.reads.inc()
        try:
            snapshot = self.read_once()
        except Exception as exc:  # no exception escapes the loop; the next read retries
            self.metrics.read_errors.inc()
            log.warning("lag exporter: reading offsets failed: %s", exc)
            return False
        self.metrics.lag.update(snapshot)
        self.metrics.read_timestamp.set(time.time())
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.refresh()
            stop.wait(self.interval)


def pipeline_groups(settings: Settings) -> tuple[GroupSpec, ...]:
    """The planner's, the sink's and the directory sink's consumer groups with their input
    topics (the planner's: the directory topics, results, facts, control and the cloud's
    changes — what it writes to itself counts too)."""
    from processors.app import app_id
    from processors.topics import PLANNER_INPUTS
    from schemas.topics import DIRECTORY_OPERATIONS, OPERATIONS
    from sinks.directory_service import directory_sink_group
    from sinks.service import sink_group

    return (
        GroupSpec(app_id(settings), tuple(settings.topic(name) for name in PLANNER_INPUTS)),
        GroupSpec(sink_group(settings), (settings.topic(OPERATIONS.name),)),
        GroupSpec(directory_sink_group(settings), (settings.topic(DIRECTORY_OPERATIONS.name),)),
    )


class GroupOffsets(Protocol):
    """What :func:`read_pipeline_lag` reads (``vudsync.ops.kafka_admin.KafkaGroupAdmin``)."""

    def committed(self, group: str) -> dict[TopicPartitionKey, int]: ...

    def partitions(self, topics: Iterable[str]) -> list[TopicPartitionKey]: ...

    def start_offsets(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]: ...

    def end_offsets(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]: ...


def read_pipeline_lag(admin: GroupOffsets, settings: Settings) -> list[PartitionLag]:
    """Every pipeline group's lag now, as ``vudsync status`` shows it and ``vudsync replay``
    waits for. The committed offsets are read *before* the end offsets: each stage flushes
    its output before it commits, so whatever a committed message produced is in the ends
    read afterwards — a read with no lag anywhere means nothing is in flight between stages."""
    groups = pipeline_groups(settings)
    committed = {g.group: admin.committed(g.group) for g in groups}
    topics = {t for g in groups for t in g.topics} | {t for c in committed.values() for t, _ in c}
    tps = admin.partitions(topics)
    return compute_lag(groups, committed, admin.start_offsets(tps), admin.end_offsets(tps))


def build_lag_exporter(settings: Settings, bootstrap: str, registry: CollectorRegistry) -> LagExporter:
    return LagExporter(
        KafkaAdminOffsetReader(bootstrap, security=settings.kafka_security()),
        pipeline_groups(settings),
        LagMetrics(registry, max_age=3 * settings.lag_interval),
        settings.lag_interval,
        staging_spec(settings),
    )


def staging_spec(settings: Settings) -> GroupSpec:
    """The staging mark's group and the staged topic (:mod:`vudsync.ops.staging`)."""
    from schemas.topics import OPERATIONS_STAGED
    from vudsync.ops.staging import staging_group

    return GroupSpec(staging_group(settings), (settings.topic(OPERATIONS_STAGED.name),))


def lag_exporter_status_server(registry: CollectorRegistry, settings: Settings, port: int) -> StatusServer:
    """``/metrics``, ``/healthz``, ``/readyz``, ``/status`` of the lag exporter
    (:mod:`kernel.http_status`): ready while its last successful read is recent."""

    def readiness() -> Readiness:
        read = registry_total(registry, "vudsync_consumer_lag_read_timestamp_seconds") or None
        return lag_exporter_readiness(
            LagExporterFacts(None if read is None else max(time.time() - read, 0.0)),
            stale_after=3 * settings.lag_interval,
        )

    def figures() -> dict[str, Any]:
        by_group = registry_by_label(registry, "vudsync_consumer_lag_messages", "group")
        return {"lag": {"by_group": {g: int(n) for g, n in sorted(by_group.items())}}}

    return status_server(settings, registry, port, "lag-exporter", readiness, figures)


def run_lag_exporter(settings: Settings, bootstrap: str, *, metrics_port: int | None = None) -> None:
    """Export consumer lag until SIGTERM/SIGINT."""
    registry = CollectorRegistry()
    exporter = build_lag_exporter(settings, bootstrap, registry)
    run_until_stopped(
        "lag exporter",
        exporter.run,
        status_port=metrics_port,
        status=lambda port: lag_exporter_status_server(registry, settings, port),
        close=(exporter.reader.close,),
    )
