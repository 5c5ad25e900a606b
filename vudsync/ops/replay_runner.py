"""Carries a replay out on the broker: refuse, plan, describe, reset, wait, summarise.

Order (each step only after the one before succeeded):

1. refuse while a replayed group has live members (naming them);
2. plan the targets (:func:`vudsync.ops.replay.plan_partitions`) and read the replayed ranges
   once — the operation ids and entities they hold scope the summary;
3. note where ``vud.cloud.results`` and ``vud.cloud.operations`` end now;
4. check the members again, then move the committed offsets (the broker also refuses while a
   member is in the group);
5. wait while the replayed ranges are read again — which happens only when the workers run
   again — and then until every pipeline group has drained what that produced (results,
   facts, operations downstream): "done" means ``vudsync status`` shows no lag;
6. read the results recorded since step 3 and fold them into the summary.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kernel.records import TopicPartition as TP
from kernel.settings import Settings
from schemas.codec import (
    DecodeError,
    decode_directory_operation,
    decode_event,
    decode_model,
    decode_operation,
)
from schemas.results import OperationResult
from schemas.topics import DIRECTORY_OPERATIONS, OPERATIONS, RESULTS
from vudsync.ops.groups import GroupHasLiveMembers, GroupMember, Role, group_id, topics_for_role
from vudsync.ops.kafka_admin import KafkaGroupAdmin
from vudsync.ops.kafka_reader import read_ranges
from vudsync.ops.lag_exporter import read_pipeline_lag
from vudsync.ops.replay import (
    DrainWatch,
    PartitionReplay,
    ReplayPlan,
    ReplaySummary,
    plan_partitions,
    progress,
    summarize,
)


@dataclass(frozen=True)
class ReplayRequest:
    roles: tuple[Role, ...]
    topics: tuple[str, ...] = ()  # full names; empty = each role's own topics
    since: datetime | None = None
    offsets: Mapping[TP, int] | None = None


@dataclass
class ReplayContent:
    """What the replayed ranges hold (read before the reset)."""

    operation_ids: set[str] = field(default_factory=set)
    operation_kinds: Counter[str] = field(default_factory=Counter)
    entities: dict[tuple[str, str], int] = field(default_factory=dict)  # (entity, id) -> newest version
    events: int = 0
    unreadable: int = 0


@dataclass(frozen=True)
class ResetMark:
    at: float
    results_end: dict[TP, int]
    operations_end: dict[TP, int]


class ReplayRunner:
    def __init__(self, settings: Settings, bootstrap: str, admin: KafkaGroupAdmin) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.admin = admin
        self.results_topic = settings.topic(RESULTS.name)
        self.operations_topic = settings.topic(OPERATIONS.name)
        self.directory_operations_topic = settings.topic(DIRECTORY_OPERATIONS.name)

    def live_members(self, roles: Sequence[Role]) -> dict[Role, list[GroupMember]]:
        return {role: self.admin.members(group_id(role, self.settings)) for role in roles}

    def refuse_if_live(self, roles: Sequence[Role]) -> None:
        for role, members in self.live_members(roles).items():
            if members:
                raise GroupHasLiveMembers(role, group_id(role, self.settings), members)

    def plan(self, request: ReplayRequest) -> ReplayPlan:
        parts: list[PartitionReplay] = []
        for role in request.roles:
            group = group_id(role, self.settings)
            topics = topics_for_role(role, request.topics, self.settings)
            if request.offsets is not None:
                topics = [t for t in topics if any(tp[0] == t for tp in request.offsets)]
            tps = self.admin.partitions(topics)
            if not tps:
                continue
            start, end = self.admin.start_offsets(tps), self.admin.end_offsets(tps)
            if request.offsets is not None:
                wanted: dict[TP, int | None] = {
                    tp: request.offsets[tp] for tp in tps if tp in request.offsets
                }
            else:
                assert request.since is not None
                wanted = dict(self.admin.offsets_at(tps, request.since))
            parts.extend(plan_partitions(role, group, self.admin.committed(group), wanted, start, end))
        return ReplayPlan(tuple(parts))

    def read_content(self, plan: ReplayPlan) -> ReplayContent:
        content = ReplayContent()
        ranges = {(p.topic, p.partition): (p.target, p.end) for p in plan.partitions if p.messages}
        for record in read_ranges(
            self.bootstrap, ranges, client_id="vudsync-replay", security=self.settings.kafka_security()
        ):
            if record.topic in (self.operations_topic, self.directory_operations_topic):
                decode = (
                    decode_operation if record.topic == self.operations_topic else decode_directory_operation
                )
                try:
                    op = decode(record.value)
                except DecodeError:
                    content.unreadable += 1
                    continue
                content.operation_ids.add(op.operation_id)
                content.operation_kinds[op.kind] += 1
            elif record.topic == self.results_topic:
                continue  # re-learning identities: nothing is planned from it
            else:
                if record.value is None:
                    continue  # tombstone
                try:
                    ev = decode_event(record.value)
                except DecodeError:
                    content.unreadable += 1
                    continue
                content.events += 1
                key = (ev.entity.value, ev.entity_id)
                content.entities[key] = max(content.entities.get(key, -1), ev.version)
        return content

    def reset(self, plan: ReplayPlan) -> ResetMark:
        roles = tuple(dict.fromkeys(p.role for p in plan.partitions))
        mark_tps = self.admin.partitions([self.results_topic, self.operations_topic])
        ends = self.admin.end_offsets(mark_tps)
        mark = ResetMark(
            at=time.time(),
            results_end={tp: o for tp, o in ends.items() if tp[0] == self.results_topic},
            operations_end={tp: o for tp, o in ends.items() if tp[0] == self.operations_topic},
        )
        self.refuse_if_live(roles)  # again: a worker may have started since the plan
        by_group: dict[str, dict[TP, int]] = {}
        for p in plan.partitions:
            by_group.setdefault(p.group, {})[(p.topic, p.partition)] = p.target
        for group, offsets in by_group.items():
            self.admin.commit(group, offsets)
        return mark

    def progress(self, plan: ReplayPlan) -> tuple[int, int]:
        done = total = 0
        for group in {p.group for p in plan.partitions}:
            d, t = progress([p for p in plan.partitions if p.group == group], self.admin.committed(group))
            done, total = done + d, total + t
        return done, total

    def wait(
        self,
        plan: ReplayPlan,
        *,
        timeout: float,
        on_progress: Callable[[int, int, str], None],
        poll: float = 0.5,
    ) -> bool:
        """Wait until every replayed range is committed past, then until the whole pipeline has
        drained what the replay produced — operations, results, facts, the planner's and the
        sink's work on them (:class:`vudsync.ops.replay.DrainWatch`, the lag ``vudsync status``
        shows). False at ``timeout``: the workers keep going."""
        deadline = time.monotonic() + timeout
        while True:
            done, total = self.progress(plan)
            on_progress(done, total, "replayed ranges")
            if done >= total:
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(poll)
        watch = DrainWatch()
        while True:
            if watch.observe(read_pipeline_lag(self.admin, self.settings)):
                on_progress(1, 1, "pipeline drained")
                return True
            on_progress(0, 1, f"draining the pipeline: {watch.left} message(s) left")
            if time.monotonic() > deadline:
                return False
            time.sleep(poll)

    def summary(self, plan: ReplayPlan, mark: ResetMark, content: ReplayContent) -> ReplaySummary:
        replanned: set[str] = set()
        if plan.for_role(Role.PLANNER) and content.entities:
            ops_end = self.admin.end_offsets(list(mark.operations_end))
            ranges = {tp: (mark.operations_end[tp], ops_end.get(tp, 0)) for tp in mark.operations_end}
            for record in read_ranges(
                self.bootstrap, ranges, client_id="vudsync-replay", security=self.settings.kafka_security()
            ):
                try:
                    op = decode_operation(record.value)
                except DecodeError:
                    continue
                if (op.entity.value, op.entity_id) in content.entities:
                    replanned.add(op.operation_id)
        results_end = self.admin.end_offsets(list(mark.results_end))
        ranges = {tp: (mark.results_end[tp], results_end.get(tp, 0)) for tp in mark.results_end}
        results: list[OperationResult] = []
        for record in read_ranges(
            self.bootstrap, ranges, client_id="vudsync-replay", security=self.settings.kafka_security()
        ):
            try:
                results.append(decode_model(OperationResult, record.value))
            except DecodeError:
                continue
        return summarize(
            results,
            reread=plan.messages,
            operation_ids=content.operation_ids,
            replanned_ids=replanned,
        )


def dry_run_report(
    plan: ReplayPlan,
    content: ReplayContent,
    known: Mapping[str, set[str]],
    members: Mapping[Role, list[GroupMember]],
) -> dict[str, Any]:
    """What ``--dry-run`` prints (``known``: outcomes the journal holds per operation id)."""
    settled = {"applied", "already_applied"}
    already = sum(1 for op in content.operation_ids if known.get(op, set()) & settled)
    newest = sorted(content.entities.items())
    return {
        "partitions": [
            {
                "group": p.group,
                "topic": p.topic,
                "partition": p.partition,
                "committed": p.committed,
                "reset_to": p.target,
                "end": p.end,
                "messages": p.messages,
            }
            for p in plan.partitions
        ],
        "messages": plan.messages,
        "operations": {
            "count": len(content.operation_ids),
            "by_kind": dict(content.operation_kinds),
            "already_applied_per_journal": already,
            "to_apply": len(content.operation_ids) - already,
        },
        "replanned_entities": [{"entity": e, "entity_id": i, "version": v} for (e, i), v in newest],
        "events": content.events,
        "unreadable": content.unreadable,
        "live_members": {r.value: [m.describe() for m in ms] for r, ms in members.items() if ms},
    }
