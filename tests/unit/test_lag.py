"""The consumer-lag exporter's logic, with a fake broker (the real one: test_prometheus.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, generate_latest

from kernel.errors import RetryableError
from kernel.settings import Settings
from vudsync.ops.lag_exporter import (
    GroupSpec,
    LagCollector,
    LagExporter,
    LagMetrics,
    LagSnapshot,
    Offsets,
    PartitionLag,
    TopicPartitionKey,
    compute_lag,
    pipeline_groups,
)


def test_lag_is_end_minus_committed_and_never_negative() -> None:
    rows = compute_lag(
        [GroupSpec("g", ("t",))],
        {"g": {("t", 0): 7, ("t", 1): 12}},
        start={("t", 0): 0, ("t", 1): 0},
        end={("t", 0): 10, ("t", 1): 12},
    )
    assert [(r.partition, r.committed, r.lag) for r in rows] == [(0, 7, 3), (1, 12, 0)]


def test_a_partition_never_committed_counts_from_the_log_start() -> None:
    (row,) = compute_lag([GroupSpec("g", ("t",))], {"g": {}}, start={("t", 0): 4}, end={("t", 0): 10})
    assert (row.committed, row.lag) == (None, 6)
    (row,) = compute_lag([GroupSpec("g", ("t",))], {"g": {("t", 0): -1}}, {("t", 0): 4}, {("t", 0): 10})
    assert (row.committed, row.lag) == (None, 6)


def test_a_committed_offset_below_the_log_start_counts_from_the_log_start() -> None:
    (row,) = compute_lag([GroupSpec("g", ("t",))], {"g": {("t", 0): 2}}, {("t", 0): 5}, {("t", 0): 9})
    assert (row.committed, row.lag) == (2, 4)


def test_records_deleted_before_the_group_read_them_are_lost_and_nothing_else_is() -> None:
    rows = compute_lag(
        [GroupSpec("g", ("t",))],
        {"g": {("t", 0): 2, ("t", 1): 5, ("t", 2): 7}},  # partition 3: never committed
        start={("t", 0): 5, ("t", 1): 5, ("t", 2): 5, ("t", 3): 5},
        end={("t", 0): 9, ("t", 1): 9, ("t", 2): 9, ("t", 3): 9},
    )
    assert [(r.partition, r.lost) for r in rows] == [(0, 3), (1, 0), (2, 0), (3, 0)]


def test_a_group_covers_its_own_topics_and_those_it_committed_only() -> None:
    rows = compute_lag(
        [GroupSpec("g", ("mine",))],
        {"g": {("extra", 0): 1}},
        start={},
        end={("mine", 0): 3, ("extra", 0): 2, ("other", 0): 100},
    )
    assert {(r.topic, r.lag) for r in rows} == {("mine", 3), ("extra", 1)}


def test_the_pipeline_groups_are_the_planner_and_the_sinks_with_the_topic_prefix() -> None:
    planner, sink, directory_sink = pipeline_groups(Settings(topic_prefix="t-1-"))
    assert planner.group == "t-1-vudsync-planner" and "t-1-vud.directory.users" in planner.topics
    assert "t-1-vud.cloud.results" in planner.topics
    assert sink.group == "t-1-vudsync-sink" and sink.topics == ("t-1-vud.cloud.operations",)
    assert "t-1-vud.cloud.changes" in planner.topics
    assert directory_sink.group == "t-1-vudsync-directory-sink"
    assert directory_sink.topics == ("t-1-vud.directory.operations",)


class FakeReader:
    def __init__(self) -> None:
        self.fail = False
        self.start = 0
        self.end = 10

    def committed(self, groups: Sequence[str]) -> dict[str, Offsets]:
        if self.fail:
            raise RetryableError("no broker")
        return {g: {("t", 0): 4} for g in groups}

    def partitions(self, topics: Iterable[str]) -> dict[str, int]:
        return {t: 1 for t in topics if t == "t"}

    def log_offsets(self, partitions: Sequence[TopicPartitionKey]) -> tuple[Offsets, Offsets]:
        return {tp: self.start for tp in partitions}, {tp: self.end for tp in partitions}

    def close(self) -> None:
        pass


def _exported(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_the_exporter_exports_each_read_and_counts_failed_reads_without_raising() -> None:
    registry = CollectorRegistry()
    reader = FakeReader()
    exporter = LagExporter(reader, [GroupSpec("g", ("t",))], LagMetrics(registry, max_age=60), interval=1)
    assert exporter.refresh()
    text = _exported(registry)
    assert 'vudsync_consumer_lag_messages{group="g",partition="0",topic="t"} 6.0' in text
    assert 'vudsync_consumer_committed_offset{group="g",partition="0",topic="t"} 4.0' in text
    assert 'vudsync_consumer_lost_messages{group="g",partition="0",topic="t"} 0.0' in text
    reader.start = 7  # retention deleted offsets 4..6 before the group read them
    assert exporter.refresh()
    assert 'vudsync_consumer_lost_messages{group="g",partition="0",topic="t"} 3.0' in _exported(registry)
    reader.fail = True
    assert not exporter.refresh()
    text = _exported(registry)
    assert "vudsync_consumer_lag_read_errors_total 1.0" in text
    assert "vudsync_consumer_lag_reads_total 3.0" in text
    assert 'vudsync_consumer_lag_messages{group="g"' in text  # the last read is still fresh


def test_a_stale_snapshot_is_not_exported() -> None:
    now = [100.0]
    collector = LagCollector(max_age=30, clock=lambda: now[0])
    collector.update(LagSnapshot((PartitionLag("g", "t", 0, 4, 10, 6),), taken_at=100.0))
    registry = CollectorRegistry()
    registry.register(collector)
    assert "vudsync_consumer_lag_messages{" in _exported(registry)
    now[0] = 131.0
    assert "vudsync_consumer_lag_messages{" not in _exported(registry)


def test_the_staged_operations_gauge_counts_after_the_staging_mark_and_is_no_group_lag() -> None:
    registry = CollectorRegistry()
    reader = FakeReader()  # every group committed 4 of the end offset 10
    exporter = LagExporter(
        reader,
        [GroupSpec("g", ("t",))],
        LagMetrics(registry, max_age=60),
        interval=1,
        staging=GroupSpec("s", ("t",)),
    )
    assert exporter.refresh()
    text = _exported(registry)
    assert "vudsync_staged_operations 6.0" in text
    assert 'group="s"' not in text, "the staging mark is not a consumer's lag (no lag alert for it)"
    absent = LagExporter(
        reader,
        [GroupSpec("g", ("t",))],
        LagMetrics(CollectorRegistry(), max_age=60),
        1,
        GroupSpec("s", ("x",)),
    )
    assert absent.read_once().staged is None, "no staged topic: no figure"
