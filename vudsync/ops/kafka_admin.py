"""kafka-python adapter for the operations tools: groups, offsets, partitions, record deletion.

Offsets are plain ``{(topic, partition): offset}`` dicts beyond this module. kafka-python's
errors leave as :class:`kernel.errors.VudsyncError` (translated once, by
:func:`kernel.admin.translate`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from kafka import KafkaAdminClient, TopicPartition
from kafka import errors as kafka_errors
from kafka.admin import OffsetSpec, OffsetTimestamp
from kafka.structs import OffsetAndMetadata

from kernel.admin import admin_client, translate
from kernel.errors import PermanentError
from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.records import TopicPartition as TP
from vudsync.ops.groups import GroupMember, members_from_description

_T = TypeVar("_T")


class KafkaGroupAdmin:
    """Reads and moves consumer-group offsets; one admin connection per instance."""

    def __init__(self, client: KafkaAdminClient, retry_for: float = 30.0) -> None:
        self._client = client
        self.retry_for = retry_for

    def _call(self, what: str, fn: Callable[[KafkaAdminClient], _T]) -> _T:
        """Run one admin call; errors Kafka marks retriable (a coordinator still being elected,
        e.g. on a fresh broker's first group) are retried for up to ``retry_for`` seconds."""
        deadline = time.monotonic() + self.retry_for
        delay = 0.1
        while True:
            try:
                return fn(self._client)
            except kafka_errors.KafkaError as exc:
                if not exc.retriable or time.monotonic() + delay > deadline:
                    raise translate(exc, what) from exc
            except Exception as exc:
                raise translate(exc, what) from exc
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    # -- groups -----------------------------------------------------------------------

    def members(self, group: str) -> list[GroupMember]:
        """The live members of a group ([] for an empty or unknown group)."""
        # kafka-python warns (with the whole raw answer) about member metadata it cannot decode:
        # Faust's assignor adds its own. Client ids and hosts decode fine; the rest is not needed.
        noisy = logging.getLogger("kafka.admin._groups")
        level = noisy.level
        noisy.setLevel(logging.ERROR)
        try:
            described = self._call(f"describe group {group}", lambda a: a.describe_groups([group]))
        finally:
            noisy.setLevel(level)
        return members_from_description(described.get(group) or {})

    def committed(self, group: str) -> dict[TP, int]:
        """Committed offsets of a group (partitions it never committed are absent)."""
        return {
            tp: meta.offset for tp, meta in self.committed_with_metadata(group).items() if meta.offset >= 0
        }

    def committed_with_metadata(self, group: str) -> dict[TP, OffsetAndMetadata]:
        raw = self._call(f"read offsets of group {group}", lambda a: a.list_group_offsets({group: None}))
        return {(tp.topic, tp.partition): meta for tp, meta in (raw.get(group) or {}).items()}

    def commit(self, group: str, offsets: Mapping[TP, int], metadata: Mapping[TP, str] | None = None) -> None:
        """Set a group's committed offsets. The group must have no live members."""
        request = {
            TopicPartition(t, p): OffsetAndMetadata(offset, (metadata or {}).get((t, p), ""), -1)
            for (t, p), offset in offsets.items()
        }
        if not request:
            return
        result = self._call(
            f"commit offsets of group {group}", lambda a: a.alter_group_offsets(group, request)
        )
        failed = {
            f"{tp.topic}[{tp.partition}]": err.__name__
            for tp, err in result.items()
            if err is not kafka_errors.NoError
        }
        if failed:
            raise PermanentError(
                f"the broker refused to move the offsets of group {group}: {failed}",
                hint="a consumer may have joined the group meanwhile: check `vudsync status`",
            )

    # -- topics and partitions ----------------------------------------------------------

    def partitions(self, topics: Iterable[str]) -> list[TP]:
        """Every partition of the topics that exist (unknown topics are left out)."""
        wanted = sorted(set(topics))
        if not wanted:
            return []

        def describe(a: KafkaAdminClient) -> list[dict[str, Any]]:
            existing = set(a.list_topics())
            names = [t for t in wanted if t in existing]
            return a.describe_topics(names) if names else []

        out: list[TP] = []
        for topic in self._call("describe topics", describe):
            if topic.get("error_code", 0) == 0:
                out.extend((str(topic["name"]), int(p["partition_index"])) for p in topic["partitions"])
        return sorted(out)

    def _offsets(self, what: str, specs: Mapping[TopicPartition, Any]) -> dict[TP, int]:
        if not specs:
            return {}
        raw = self._call(what, lambda a: a.list_partition_offsets(dict(specs)))
        return {(tp.topic, tp.partition): int(v.offset) for tp, v in raw.items()}

    def end_offsets(self, partitions: Iterable[TP]) -> dict[TP, int]:
        return self._offsets(
            "list end offsets", {TopicPartition(*tp): OffsetSpec.LATEST for tp in partitions}
        )

    def start_offsets(self, partitions: Iterable[TP]) -> dict[TP, int]:
        return self._offsets(
            "list start offsets", {TopicPartition(*tp): OffsetSpec.EARLIEST for tp in partitions}
        )

    def offsets_at(self, partitions: Iterable[TP], when: datetime) -> dict[TP, int | None]:
        """Per partition, the first offset whose record timestamp is ≥ ``when`` (None: none is)."""
        ms = int(when.timestamp() * 1000)
        found = self._offsets(
            "look up offsets by time", {TopicPartition(*tp): OffsetTimestamp(ms) for tp in partitions}
        )
        return {tp: (offset if offset >= 0 else None) for tp, offset in found.items()}

    def delete_records(self, before: Mapping[TP, int]) -> None:
        """Delete every record below the given offset of each partition (the log start moves)."""
        request = {TopicPartition(*tp): offset for tp, offset in before.items() if offset > 0}
        if request:
            self._call("delete records", lambda a: a.delete_records(request))


@contextmanager
def group_admin(
    bootstrap: str, *, security: KafkaSecurity = PLAINTEXT, timeout: float = 30.0
) -> Iterator[KafkaGroupAdmin]:
    """A :class:`KafkaGroupAdmin` on a short-lived connection."""
    with admin_client(bootstrap, security=security, timeout=timeout) as client:
        yield KafkaGroupAdmin(client)
