"""Replay after a failed integration: where to rewind, how far along it is, what it did. Pure.

How a replay re-applies what was missed, and why nothing is applied twice:

- **sink** (``vud.cloud.operations``): every operation since the point in time is applied
  again. Those the cloud has (the sink's ledger, or the cloud's idempotency key) come back as
  ``already_applied`` without a cloud write; those that failed or were dead-lettered are
  applied now, with the same operation id as before — unless something newer was applied to
  the same slot meanwhile: then they are ``superseded``, never applied over it.
- **planner** (the directory topics): each entity's events since the point in time are read
  again. Versions that a newer event superseded are stale (the newer event carries the full
  state); the newest one equals the planner's table and is planned again as a redelivery,
  against the state before it — the same operations with the same ids, which the sink
  dedupes. This recovers operations that never reached ``vud.cloud.operations``.
- **directory sink** (``vud.directory.operations``, the writeback's): every directory operation
  since the point in time is applied again. The store records each operation id it applied (or
  rejected) in the transaction of its effect, so those come back as ``already_applied`` (or
  ``rejected`` again) without a write — no access row, no change-log row; only what the store
  never committed is applied now.

A replay never moves a group forward: where the group has not even reached the point in time
yet, its offset stays (moving it would skip what it has not read).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kernel.errors import ConfigurationError
from kernel.records import TopicPartition as TP
from schemas.results import OperationResult, ResultOutcome
from vudsync.ops.groups import Role


class _LagRow(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def lag(self) -> int: ...


@dataclass(frozen=True)
class PartitionReplay:
    """One partition of one group: committed now, rewound to ``target``, ``end`` when planned."""

    role: Role
    group: str
    topic: str
    partition: int
    committed: int | None
    target: int
    end: int

    @property
    def messages(self) -> int:
        """Messages the group reads again (or for the first time) after the reset."""
        return max(self.end - self.target, 0)

    @property
    def moves(self) -> bool:
        return self.committed is None or self.target != self.committed


@dataclass(frozen=True)
class ReplayPlan:
    partitions: tuple[PartitionReplay, ...]

    def for_role(self, role: Role) -> list[PartitionReplay]:
        return [p for p in self.partitions if p.role is role]

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.partitions)


def plan_partitions(
    role: Role,
    group: str,
    committed: Mapping[TP, int],
    wanted: Mapping[TP, int | None],
    start: Mapping[TP, int],
    end: Mapping[TP, int],
) -> list[PartitionReplay]:
    """Rewind targets per partition (see the module docstring: never forward).

    ``wanted`` is the offset asked for (from a time, or given); None means "nothing at or after
    the point in time": the partition's end.
    """
    out: list[PartitionReplay] = []
    for tp in sorted(wanted):
        first, last = start.get(tp, 0), end.get(tp, 0)
        asked = wanted[tp]
        target = last if asked is None else min(max(asked, first), last)
        known = committed.get(tp)
        position = first if known is None else max(known, first)
        target = min(target, position)
        out.append(PartitionReplay(role, group, tp[0], tp[1], known, target, last))
    return out


def progress(partitions: Iterable[PartitionReplay], committed: Mapping[TP, int]) -> tuple[int, int]:
    """``(done, total)`` messages of the replayed ranges the group has committed past."""
    done = total = 0
    for p in partitions:
        total += p.messages
        now = committed.get((p.topic, p.partition), p.target)
        done += min(max(now - p.target, 0), p.messages)
    return done, total


class DrainWatch:
    """When a replay is done: every consumer group of the pipeline has lag 0 on every topic it
    reads — the directory topics, results, facts, control, operations: what the replay itself
    produces included — in two reads in a row with the same end offsets (nothing was written
    in between). Fed one lag read at a time (rows with ``topic``, ``partition``, ``end``,
    ``lag``, as :func:`vudsync.ops.lag_exporter.read_pipeline_lag` returns them)."""

    def __init__(self) -> None:
        self._ends: dict[TP, int] | None = None
        self.left = 0

    def observe(self, rows: Iterable[_LagRow]) -> bool:
        """True once drained and settled (see the class)."""
        rows = list(rows)
        self.left = sum(r.lag for r in rows)
        ends = {(r.topic, r.partition): r.end for r in rows}
        settled = self.left == 0 and ends == self._ends
        self._ends = ends if self.left == 0 else None
        return settled


def parse_offsets(spec: str, aliases: Mapping[str, str]) -> dict[TP, int]:
    """``users:0=12,users:1=40,operations:2=7`` → ``{(full topic, partition): offset}``."""
    out: dict[TP, int] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        where, _, offset = item.partition("=")
        topic, _, partition = where.rpartition(":")
        if topic not in aliases or not partition.isdigit() or not offset.strip().isdigit():
            raise ConfigurationError(
                f"not a topic:partition=offset item: {item!r}",
                hint="e.g. --from-offsets operations:0=120,operations:1=98 (topic names as in --topics)",
            )
        out[(aliases[topic], int(partition))] = int(offset)
    if not out:
        raise ConfigurationError("--from-offsets names no partition")
    return out


# -- the summary ----------------------------------------------------------------------------

# for an operation with several results after the reset, the one that says most
_RANK = {
    "applied": 7,
    "already_applied": 6,
    "rejected": 5,
    "superseded": 5,
    "dead_lettered": 4,
    "failed": 3,
    "held": 2,
    "parked": 1,
}


@dataclass
class ReplaySummary:
    """What the replay did, from the results recorded after the reset."""

    reread: int = 0  # messages of the replayed ranges
    replanned: int = 0  # operations the planner emitted again for replayed entities
    operations: int = 0  # distinct operations with a result after the reset
    already_applied: int = 0  # skipped: the cloud had them (ledger / idempotency key)
    newly_applied: int = 0
    dead_lettered: int = 0
    waiting: int = 0  # parked or held again
    rejected: int = 0  # held deletions an operator rejected (never applied)
    superseded: int = 0  # older than what was applied to their slot: not applied
    by_outcome: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def summarize(
    results: Iterable[OperationResult],
    *,
    reread: int,
    operation_ids: set[str],
    replanned_ids: set[str],
) -> ReplaySummary:
    """Fold the results recorded after the reset into a :class:`ReplaySummary`.

    Only operations the replay touched count: those read again from ``vud.cloud.operations``
    (``operation_ids``) and those the planner emitted again (``replanned_ids``); results of
    live traffic meanwhile are left out.
    """
    mine = operation_ids | replanned_ids
    best: dict[str, OperationResult] = {}
    for r in results:
        if r.operation_id not in mine:
            continue
        seen = best.get(r.operation_id)
        if seen is None or _RANK.get(r.outcome.value, 0) > _RANK.get(seen.outcome.value, 0):
            best[r.operation_id] = r
    summary = ReplaySummary(reread=reread, replanned=len(replanned_ids), operations=len(best))
    for r in best.values():
        summary.by_outcome[r.outcome.value] = summary.by_outcome.get(r.outcome.value, 0) + 1
        if r.outcome is ResultOutcome.APPLIED:
            summary.newly_applied += 1
        elif r.outcome is ResultOutcome.ALREADY_APPLIED:
            summary.already_applied += 1
        elif r.outcome in (ResultOutcome.DEAD_LETTERED, ResultOutcome.FAILED):
            summary.dead_lettered += 1
        elif r.outcome in (ResultOutcome.PARKED, ResultOutcome.HELD):
            summary.waiting += 1
        elif r.outcome is ResultOutcome.SUPERSEDED:
            summary.superseded += 1
        elif r.outcome.value == "rejected":  # a held deletion the operator rejected
            summary.rejected += 1
    return summary
