"""`vudsync replay` says "done" only when the pipeline has drained what the replay produced.

The drill that found it: replay returned while `vudsync status` still showed a planner lag of
41,423 — the sink's results (and the facts the planner writes from them) of the replayed work,
which the wait did not cover. A scripted broker plays that sequence back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kernel.records import TopicPartition as TP
from kernel.settings import Settings
from processors.app import app_id
from sinks.service import sink_group
from vudsync.ops.groups import Role
from vudsync.ops.replay import DrainWatch, PartitionReplay, ReplayPlan
from vudsync.ops.replay_runner import ReplayRunner

SETTINGS = Settings(topic_prefix="t-")
USERS, OPS, RESULTS, FACTS = (
    "t-vud.directory.users",
    "t-vud.cloud.operations",
    "t-vud.cloud.results",
    "t-vud.planner.facts",
)
PLANNER, SINK = app_id(SETTINGS), sink_group(SETTINGS)

# (planner committed, sink committed, end offsets) per step of the world, each on partition 0
STEPS: list[tuple[dict[str, int], dict[str, int], dict[str, int]]] = [
    # the planner has re-read the replayed users and planned 5 operations
    ({USERS: 10}, {OPS: 0}, {USERS: 10, OPS: 5}),
    # the sink applied them: 5 results the planner has still to read (the old wait stopped here)
    ({USERS: 10, RESULTS: 0}, {OPS: 5}, {USERS: 10, OPS: 5, RESULTS: 5}),
    # the planner read the results and copied 3 facts to its partition
    ({USERS: 10, RESULTS: 5, FACTS: 0}, {OPS: 5}, {USERS: 10, OPS: 5, RESULTS: 5, FACTS: 3}),
    # ... and read them: nothing left anywhere
    ({USERS: 10, RESULTS: 5, FACTS: 3}, {OPS: 5}, {USERS: 10, OPS: 5, RESULTS: 5, FACTS: 3}),
]


class ScriptedAdmin:
    """The broker as the replay's wait reads it; each read of the planner's offsets is one step
    further (the last step repeats)."""

    def __init__(self) -> None:
        self.reads = 0

    def _step(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        return STEPS[min(max(self.reads - 1, 0), len(STEPS) - 1)]

    def committed(self, group: str) -> dict[TP, int]:
        if group == PLANNER:
            self.reads += 1
        planner, sink, _ = self._step()
        return {(t, 0): o for t, o in (planner if group == PLANNER else sink).items()}

    def partitions(self, topics: Iterable[str]) -> list[TP]:
        return [(t, 0) for t in sorted(set(topics)) if t in STEPS[-1][2]]

    def start_offsets(self, partitions: Iterable[TP]) -> dict[TP, int]:
        return {tp: 0 for tp in partitions}

    def end_offsets(self, partitions: Iterable[TP]) -> dict[TP, int]:
        ends = self._step()[2]
        return {tp: ends.get(tp[0], 0) for tp in partitions}


def test_replay_waits_until_the_results_and_facts_it_produced_are_read() -> None:
    admin = ScriptedAdmin()
    runner = ReplayRunner(SETTINGS, "unused:9092", admin)  # type: ignore[arg-type]
    plan = ReplayPlan((PartitionReplay(Role.PLANNER, PLANNER, USERS, 0, 10, 0, 10),))
    said: list[str] = []

    assert runner.wait(plan, timeout=30, on_progress=lambda d, t, phase: said.append(phase), poll=0)

    assert admin.reads >= len(STEPS) + 1  # the last step read twice: settled
    assert "draining the pipeline: 5 message(s) left" in said  # the results of the replay
    assert "draining the pipeline: 3 message(s) left" in said  # the facts the planner wrote
    assert said[-1] == "pipeline drained"


class StuckAdmin(ScriptedAdmin):
    """The sink applied the replayed operations; the planner never reads their results."""

    def _step(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        return STEPS[1]


def test_replay_wait_gives_up_at_its_timeout_while_lag_remains() -> None:
    runner = ReplayRunner(SETTINGS, "unused:9092", StuckAdmin())  # type: ignore[arg-type]
    plan = ReplayPlan((PartitionReplay(Role.PLANNER, PLANNER, USERS, 0, 10, 0, 10),))
    said: list[str] = []
    assert not runner.wait(plan, timeout=0.2, on_progress=lambda d, t, phase: said.append(phase), poll=0.01)
    assert said[-1] == "draining the pipeline: 5 message(s) left"


@dataclass(frozen=True)
class Row:
    topic: str
    partition: int
    end: int
    lag: int


def test_drained_means_no_lag_twice_in_a_row_with_nothing_written_in_between() -> None:
    watch = DrainWatch()
    assert not watch.observe([Row(OPS, 0, 5, 2)]) and watch.left == 2
    assert not watch.observe([Row(OPS, 0, 5, 0)])  # no lag, once
    assert not watch.observe([Row(OPS, 0, 6, 0)])  # something was written in between
    assert watch.observe([Row(OPS, 0, 6, 0)])
    assert not watch.observe([Row(OPS, 0, 6, 0), Row(RESULTS, 0, 1, 1)]) and watch.left == 1
