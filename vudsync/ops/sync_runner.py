"""Carries ``vudsync sync`` out: check that the planner and the sink run, re-emit the entity's
current state through the producer's client, then follow the broker's topics and the journal
until :func:`vudsync.ops.sync_follow.verdict` says it is done.

What it reads: the planner's and the sink's consumer groups (members, committed offsets), the
entity's aggregate on ``vud.cloud.operations`` from where the topic ended before the re-emit,
the journal index (results and dead letters), the store (read-only) and the cloud (read scope).
It writes one event, the entity's state, on its directory topic: the pipeline does the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import ValidationError

from kernel.settings import Settings
from producers.service import reemit_current_state
from schemas.codec import DecodeError, decode_operation
from schemas.directory import EntityType
from schemas.topics import DIRECTORY_TOPICS, OPERATIONS
from vudsync.ops.explain import DirectoryView, Explanation
from vudsync.ops.explain_runner import explain_from, read_directory_view
from vudsync.ops.groups import Role, group_id
from vudsync.ops.journal import JournalFilter
from vudsync.ops.journal_index import SqliteJournalIndex
from vudsync.ops.journal_sync import JournalIndexer, journal_path
from vudsync.ops.kafka_admin import KafkaGroupAdmin, group_admin
from vudsync.ops.kafka_reader import PartitionTail
from vudsync.ops.sync_follow import (
    Step,
    Verdict,
    aggregate,
    captured,
    from_result,
    from_waiting,
    handled,
    planned,
    verdict,
)

CHECK_EVERY = 2.0  # seconds between looks at the cloud while nothing new happens


def not_running(settings: Settings, admin: KafkaGroupAdmin) -> list[str]:
    """The components without a member in their consumer group: nothing would handle the event."""
    return [
        f"the {role.value} is not running: its consumer group {group_id(role, settings)} has no member "
        f"(start it: `vudsync run {role.value}`)"
        for role in (Role.PLANNER, Role.SINK)
        if not admin.members(group_id(role, settings))
    ]


class _Follower:
    """Everything one sync follows; ``emit`` shows each step as it happens."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        admin: KafkaGroupAdmin,
        index: SqliteJournalIndex,
        entity: EntityType,
        emit: Callable[[Step], None],
    ) -> None:
        self.settings, self.admin, self.index, self.entity = settings, admin, index, entity
        self.emit = emit
        self.seen: list[Step] = []
        self.shown_waiting: set[str] = set()
        self.indexer = JournalIndexer(settings, bootstrap, index)
        self.indexer.catch_up(admin)
        self.mark = index.last_id()
        ops_topic = settings.topic(OPERATIONS.name)
        ops_ends = admin.end_offsets(admin.partitions([ops_topic]))
        self.operations = PartitionTail(
            bootstrap, dict(ops_ends), client_id="vudsync-sync", security=settings.kafka_security()
        )
        self.directory_ends: dict[tuple[str, int], int] = {}
        self.read_to_end = False  # the last poll read the operations topic to where it ended

    def close(self) -> None:
        self.indexer.close()
        self.operations.close()

    def show(self, step: Step) -> None:
        self.seen.append(step)
        self.emit(step)

    def planner_has_read(self) -> bool:
        committed = self.admin.committed(group_id(Role.PLANNER, self.settings))
        return all(committed.get(tp, 0) >= end for tp, end in self.directory_ends.items())

    def poll(self, key: str, entity_id: str) -> bool:
        """Show what happened since the last poll; returns whether anything did.

        Results are read first, operations then up to where their topic ends *after* that
        read, and shown in that order: an operation is on its topic before the sink can apply
        it, so every operation behind a result read here is shown before the result.
        """
        self.indexer.poll(0.5)
        flt = JournalFilter(entity_id=entity_id, after_id=self.mark, limit=10_000, newest_first=False)
        results = self.index.query(flt)
        ends = self.operations.end_offsets()
        steps: list[Step] = []
        deadline = time.monotonic() + 5.0
        while True:
            for record in self.operations.poll(0.2):
                if record.key is None or record.key.decode() != key:
                    continue
                try:
                    op = decode_operation(record.value)
                except (DecodeError, ValidationError):
                    continue
                steps.append(planned(op.kind, op.operation_id, time.time()))
            positions = self.operations.positions()
            self.read_to_end = all(positions.get(tp, 0) >= end for tp, end in ends.items())
            if self.read_to_end or time.monotonic() > deadline:
                break
        for row_id, entry in results:
            self.mark = row_id
            if entry.entity == self.entity.value:
                steps.append(from_result(entry))
        for step in steps:
            self.show(step)
        return bool(steps)

    def waiting_now(self, view: Explanation) -> None:
        """Show, once each, what waited already before this sync (no new result says so)."""
        for w in (*view.planner.parked, *view.planner.blocked, *view.planner.held):
            op = w.entry.operation_id or ""
            if op not in self.shown_waiting and not any(s.data.get("operation_id") == op for s in self.seen):
                self.show(from_waiting(w, time.time()))
            self.shown_waiting.add(op)


def sync_entity(
    settings: Settings,
    bootstrap: str,
    entity: EntityType,
    key: str,
    *,
    timeout: float,
    emit: Callable[[Step], None],
) -> Verdict:
    """Provision one entity on demand and follow it; see the module docstring."""
    with group_admin(bootstrap, security=settings.kafka_security()) as admin:
        down = not_running(settings, admin)
        if down:
            return Verdict("not_running", 1, tuple(down))
        directory = read_directory_view(settings, entity, key)
        if directory.entity_id is None or directory.state is None:
            why = directory.rejected or f"the directory store holds no {entity.value} {key!r}"
            return Verdict("rejected" if directory.rejected else "not_found", 1, (why,))
        entity_id = directory.entity_id
        index = SqliteJournalIndex(journal_path(settings))
        follower = _Follower(settings, bootstrap, admin, index, entity, emit)
        try:
            sent = reemit_current_state(settings, bootstrap, entity, [entity_id])
            if entity_id not in sent.emitted:
                why = sent.rejected.get(entity_id) or "the store no longer holds it"
                return Verdict("rejected", 1, (why,))
            topic = settings.topic(DIRECTORY_TOPICS[entity].name)
            follower.directory_ends = admin.end_offsets(admin.partitions([topic]))
            follower.show(captured(entity, entity_id, topic, sent.version, time.time()))
            return _follow(settings, follower, entity, directory, timeout)
        finally:
            follower.close()
            index.close()


def _follow(
    settings: Settings,
    follower: _Follower,
    entity: EntityType,
    directory: DirectoryView,
    timeout: float,
) -> Verdict:
    assert directory.entity_id is not None
    deadline = time.monotonic() + timeout
    read = False
    last_look = 0.0
    while True:
        # read before this poll: every operation the planner made of the event is on the topic
        # before this poll looks where it ends (it flushes them before it commits past the event)
        read_before_poll = read
        news = follower.poll(aggregate(entity, directory.entity_id), directory.entity_id)
        if not read and follower.planner_has_read():
            read = True
            follower.show(handled(time.time()))
        timed_out = time.monotonic() >= deadline
        view = None
        if read and (news or timed_out or time.monotonic() - last_look >= CHECK_EVERY):
            last_look = time.monotonic()
            view = explain_from(settings, follower.index, entity, directory)
            follower.waiting_now(view)
        elif not read and not timed_out:
            continue
        quiet = read_before_poll and follower.read_to_end
        done = verdict(view, follower.seen, timed_out=timed_out, nothing_planned=quiet)
        if done.exit_status is not None:
            return done
