"""Ports of the sink: the cloud directory it applies operations to, and its ledger."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kernel.errors import VudsyncError
from schemas.operations import CloudOperation
from sinks.scheduling import TopicPartition as TP


@dataclass(frozen=True)
class Applied:
    """What applying one operation did in the cloud."""

    effect: str  # created | updated | linked | deactivated | assigned | revoked | noop | …
    cloud_id: str | None = None
    replayed: bool = False  # every write was answered from the cloud's idempotency store
    details: dict[str, Any] = field(default_factory=dict)


BatchOutcome = Applied | VudsyncError | None
"""Per item of a batch: applied, failed (retryable or permanent), or None = apply it alone."""


class Intents(Protocol):
    """Write-ahead intents of the sink (:func:`sinks.writes.link_intent`): what an operation is
    about to do in the cloud, durable before it does it, until its outcome is recorded."""

    async def announce(self, intents: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Record ``(operation id, intent)`` pairs durably (return only once they are)."""
        ...

    async def recall(self, operation_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The intents recorded for those of ``operation_ids`` not recorded as applied since."""
        ...


class CloudDirectory(Protocol):
    """The cloud's directory, by role. Errors: RetryableError / PermanentError subclasses.

    ``apply`` applies one operation (possibly several idempotent requests). ``apply_batch``
    applies ``batchable`` operations in a few round trips (simple ones in one; those resolved
    by look-ups first in phases), each with its own idempotency keys and outcome; an error of
    a round trip itself is raised, for all (every write is idempotent: a retry is safe).
    ``intents``: where a write whose effect a retry could not see (a company link) is
    announced before it is sent, and recalled by a retry (None: not at all).
    """

    def batchable(self, op: CloudOperation) -> bool: ...

    async def apply(self, op: CloudOperation, intents: Intents | None = None) -> Applied: ...

    async def apply_batch(
        self, ops: Sequence[CloudOperation], intents: Intents | None = None
    ) -> list[BatchOutcome]: ...

    async def aclose(self) -> None: ...


class PolledRecord(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class OperationsConsumer(Protocol):
    """A consumer-group member reading the operations topic. Partitions assigned start at
    their committed offset (the earliest when none), also when revoked and assigned again.
    ``on_assigned``/``on_revoked`` are called from inside :meth:`poll`, on the polling thread.
    One thread makes every call."""

    def subscribe(
        self, topic: str, on_assigned: Callable[[list[TP]], None], on_revoked: Callable[[list[TP]], None]
    ) -> None: ...

    def poll(self, timeout_ms: int, max_records: int) -> Mapping[TP, Sequence[PolledRecord]]: ...

    def assignment(self) -> list[TP]: ...

    def pause(self, *tps: TP) -> None: ...

    def resume(self, *tps: TP) -> None: ...

    def paused(self) -> list[TP]: ...

    def commit(self, offsets: dict[TP, int]) -> None:
        """Commit the next offset to read per partition; ``CommitRefused`` when the group
        took the partitions meanwhile."""
        ...

    def close(self) -> None: ...


class Ledger(Protocol):
    """Operation ids already applied (durable), so replays skip them without a cloud call;
    per version slot (:func:`schemas.operations.version_slot`) the highest source version
    applied, so that nothing older is applied after it; and the write-ahead intents of
    operations not finished yet (:class:`Intents`)."""

    def get(self, operation_id: str) -> dict[str, Any] | None: ...

    def get_many(self, operation_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The known ones among ``operation_ids`` (one query for a polled batch)."""
        ...

    def record_many(
        self, entries: Sequence[tuple[str, dict[str, Any]]], versions: Sequence[tuple[str, int]] = ()
    ) -> None:
        """Record ``(operation id, result)`` pairs and ``(slot, source version)`` pairs in one
        transaction; known ids are kept, and a slot's version only ever rises."""
        ...

    def applied_versions(self, slots: Sequence[str]) -> dict[str, int]:
        """The highest source version applied per slot, of those among ``slots`` with any."""
        ...

    def record_intents(self, intents: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Record ``(operation id, intent)`` pairs (:class:`Intents`) durably, in one
        transaction; a newer intent of the same id replaces the older. ``record_many`` clears
        the intents of the ids it records, in its transaction."""
        ...

    def intents(self, operation_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The intents recorded for those of ``operation_ids`` that have any."""
        ...

    def close(self) -> None: ...
