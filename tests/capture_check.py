"""Checks of change capture against the store it captured, for integration tests.

``read_topics`` reads topics to their end offsets (no idle guessing); ``assert_topics_match_store``
compares the last event of every entity with the store's current rows and with the change log;
``assert_only_resends`` checks that the only duplicates are re-sends of versions already sent.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from devtools.processes import wait_until
from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from producers.capture import SNAPSHOT_ORDER, ChangeCapture
from producers.mapping import SourceInfo, record_to_event
from producers.service import open_change_log
from schemas.codec import decode_event
from schemas.directory import EntityType
from schemas.events import Op
from schemas.topics import DIRECTORY_TOPICS

Key = tuple[EntityType, str]


def read_topics(
    bootstrap: str, topics: Iterable[str], timeout: float = 60.0, *, security: KafkaSecurity = PLAINTEXT
) -> dict[str, list[Any]]:
    """Every record of ``topics`` from the beginning up to the end offsets seen at the start."""
    topics = list(topics)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **security.for_kafka_python()
    )
    try:
        partitions: list[TopicPartition] = []
        for topic in topics:
            deadline = time.monotonic() + timeout
            while not (found := consumer.partitions_for_topic(topic)):
                if time.monotonic() > deadline:
                    raise AssertionError(f"topic {topic} does not exist")
                time.sleep(0.2)
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        out: dict[str, list[Any]] = {t: [] for t in topics}
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topics} to their end within {timeout}s")
            for tp, records in consumer.poll(timeout_ms=500).items():
                out[tp.topic].extend(r for r in records if r.offset < ends[tp])
        for records in out.values():
            records.sort(key=lambda r: (r.partition, r.offset))
        return out
    finally:
        consumer.close()


def store_query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one read query on a store (SQLite or PostgreSQL); ``?`` placeholders for both."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
        try:
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        return [tuple(r) for r in pg.execute(sql.replace("?", "%s"), params).fetchall()]  # type: ignore[arg-type]


def change_log_end(url: str) -> int:
    return int(store_query(url, "SELECT COALESCE(MAX(seq), 0) FROM change_log")[0][0])


def checkpoint(url: str, name: str = "default") -> tuple[str, int] | None:
    rows = store_query(url, "SELECT phase, seq FROM capture_checkpoint WHERE name = ?", (name,))
    return (rows[0][0], int(rows[0][1])) if rows else None


def caught_up(url: str) -> bool:
    """The producer's checkpoint has reached the end of the change log (streaming)."""
    cp = checkpoint(url)
    return cp is not None and cp[0] == "streaming" and cp[1] >= change_log_end(url)


def drain(capture: ChangeCapture, after: int, url: str, timeout: float) -> int:
    """Poll ``capture`` from ``after`` until a poll reads nothing and it has reached the end of
    the store's change log; the position it reached."""
    position = after

    def drained() -> bool:
        nonlocal position
        stats = capture.poll_once(position)
        position = stats.last_seq
        return stats.rows == 0 and position >= change_log_end(url)

    wait_until(drained, timeout, what="capture caught up with the change log")
    return position


def expected_states(url: str, fingerprint_key: bytes) -> dict[Key, Any]:
    """The state every current entity's event must carry (None for rows that fail validation)."""
    change_log = open_change_log(url)
    out: dict[Key, Any] = {}
    try:
        for entity in SNAPSHOT_ORDER:
            for ids in change_log.snapshot_ids(entity, 500):
                for entity_id, record in change_log.read_entities(entity, ids).items():
                    event, _ = record_to_event(
                        record,
                        op=Op.READ,
                        version=0,
                        seq=0,
                        committed_at=0.0,
                        source=SourceInfo(change_log.store_kind, change_log.db_name),
                        now=datetime.now(UTC),
                        fingerprint_key=fingerprint_key,
                    )
                    out[(entity, entity_id)] = None if event is None else event.state
    finally:
        change_log.close()
    return out


def _diff(got: Any, want: Any) -> str:
    if got is None:
        return "the topic ends with a delete event"
    a, b = got.model_dump(), want.model_dump()
    return "; ".join(
        f"{k}: topic {a.get(k)!r} != store {b.get(k)!r}" for k in sorted(b) if a.get(k) != b.get(k)
    )


@dataclass
class EntityHistory:
    """What one key's topic partition holds, in order."""

    versions: list[int] = field(default_factory=list)
    event_ids: dict[int, set[str]] = field(default_factory=dict)
    last_state: Any = None
    deleted: bool = False  # the last record is a tombstone


def histories(records_by_topic: dict[str, list[Any]], prefix: str) -> dict[Key, EntityHistory]:
    out: dict[Key, EntityHistory] = {}
    for entity, spec in DIRECTORY_TOPICS.items():
        for record in records_by_topic.get(prefix + spec.name, []):
            history = out.setdefault((entity, record.key.decode()), EntityHistory())
            if record.value is None:
                history.deleted = True
                continue
            event = decode_event(record.value)
            assert event.entity_id == record.key.decode()
            history.versions.append(event.version)
            history.event_ids.setdefault(event.version, set()).add(f"{event.op.value}:{event.event_id}")
            history.deleted = False
            history.last_state = None if event.op is Op.DELETE else event.state
    return out


def assert_topics_match_store(
    records_by_topic: dict[str, list[Any]],
    url: str,
    prefix: str,
    *,
    snapshot_position: int,
    fingerprint_key: bytes,
) -> dict[Key, EntityHistory]:
    """After capture has caught up:

    * for every entity, the last event on its topic carries the store's current state, and a
      deleted entity ends with a delete event and a tombstone;
    * every change-log entry after the snapshot position was emitted: the newest version of
      each entity on its topic is the newest change-log seq of that entity (or the snapshot
      position, for an entity unchanged since).
    """
    seen = histories(records_by_topic, prefix)
    states = expected_states(url, fingerprint_key)
    changed = {
        (EntityType(e), i): int(s)
        for e, i, s in store_query(
            url,
            "SELECT entity, entity_id, MAX(seq) FROM change_log WHERE seq > ? GROUP BY entity, entity_id",
            (snapshot_position,),
        )
    }
    for key, state in states.items():
        if state is None:
            continue  # dead-lettered, checked elsewhere
        assert key in seen, f"{key} exists in the store but was never emitted"
        assert not seen[key].deleted, f"{key} exists in the store but its topic ends with a tombstone"
        assert seen[key].last_state == state, (
            f"{key}: last event differs from the store: {_diff(seen[key].last_state, state)}"
        )
    for key, history in seen.items():
        if key not in states:
            assert history.deleted, (
                f"{key} was deleted in the store but its topic does not end with a tombstone"
            )
    for key, last_seq in changed.items():
        assert key in seen, f"change of {key} (seq {last_seq}) never emitted"
        assert max(seen[key].versions) == last_seq, (
            f"{key}: newest version on the topic is {max(seen[key].versions)}, newest change is {last_seq}"
        )
    for key, history in seen.items():
        if key not in changed and history.versions:
            assert max(history.versions) == snapshot_position, (
                f"{key}: unexpected version {max(history.versions)}"
            )
    return seen


def snapshot_position(records_by_topic: dict[str, list[Any]], prefix: str) -> int:
    """The change-log position of the (last completed) snapshot, read from its ``op = r`` events."""
    positions: set[int] = set()
    for spec in DIRECTORY_TOPICS.values():
        for record in records_by_topic.get(prefix + spec.name, []):
            if record.value is not None:
                event = decode_event(record.value)
                if event.op is Op.READ:
                    positions.add(event.version)
    assert positions, "no snapshot event on any directory topic"
    return max(positions)


def assert_only_resends(seen: dict[Key, EntityHistory]) -> int:
    """Duplicates are only re-sends: a version lower than one already on the key must itself
    have been sent before, with the same event id. Returns how many re-sent records there are."""
    resent = 0
    for key, history in seen.items():
        sent: set[int] = set()
        newest = -1
        for version in history.versions:
            if version <= newest:
                assert version in sent, (
                    f"{key}: version {version} arrived after {newest} but was never sent before"
                )
                resent += 1
            sent.add(version)
            newest = max(newest, version)
        for version, ids in history.event_ids.items():
            ops = {i.split(":")[0] for i in ids}
            assert len(ids) == len(ops), f"{key} v{version}: different event ids for one change: {ids}"
    return resent
