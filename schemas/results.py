"""Results of applied operations, published by the sink on ``vud.cloud.results``.

The processor learns cloud identities from them (``cloud_id``) and releases parked
operations; the event journal is built from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from schemas.base import Message
from schemas.directory import EntityType
from schemas.directory_operations import DirectoryOperation
from schemas.operations import CloudOperation


class ResultOutcome(StrEnum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    # sink: matching by e-mail / organisation number found a cloud object it may not take over
    # (linked to another on-premise id, or a customer administrator): nothing written
    CONFLICT = "conflict"
    # sink: an assignment sent right behind its user's upsert, before the planner knew the
    # user's cloud id, found no cloud user linked to its user (that upsert linked none: a
    # conflict, a dead letter): nothing written. ``details.operation`` carries it: the planner
    # parks it again until the user's cloud id is known (processors.facts)
    UNRESOLVED = "unresolved"
    # recorded by the planner, for the journal
    PARKED = "parked"
    HELD = "held"
    BLOCKED = "blocked"
    REVIEW = "review"
    # planner: a held deletion the operator rejected (it is never applied); settles the operation
    REJECTED = "rejected"
    # never applied, settles the operation: the planner's parked or held operation a newer plan
    # for the same slot replaced; or the sink's operation older than the version already
    # applied to its version slot (``schemas.operations.version_slot``: a dlq retry, a replay)
    SUPERSEDED = "superseded"


class OperationResult(Message):
    """A fact about one operation: what became of it (or why it waits), for the journal.

    The sink records applied / already applied / superseded / failed / dead-lettered; the planner records
    parked, held, blocked and review entries. Keyed on ``vud.cloud.results`` by ``entity_id``.
    """

    operation_id: str
    kind: str
    aggregate: str
    entity: EntityType
    entity_id: str
    source_version: int
    outcome: ResultOutcome
    cloud_id: str | None = Field(default=None, description="the cloud id learned, if any")
    effect: str | None = Field(default=None, description="created, updated, linked, …")
    details: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    attempts: int = 1
    source_committed_at: datetime
    recorded_at: datetime = Field(description="when the outcome was recorded")

    @classmethod
    def for_operation(
        cls,
        op: CloudOperation | DirectoryOperation,
        outcome: ResultOutcome,
        recorded_at: datetime,
        **fields: Any,
    ) -> OperationResult:
        """The result of ``op``: its identity (id, kind, aggregate, entity, source version and
        commit time) copied from the operation, the rest (``cloud_id``, ``effect``,
        ``details``, ``error``, ``attempts``, …) from ``fields``, which may also override the
        copied ones."""
        identity: dict[str, Any] = {
            "operation_id": op.operation_id,
            "kind": op.kind,
            "aggregate": op.aggregate,
            "entity": op.entity,
            "entity_id": op.entity_id,
            "source_version": op.source_version,
            "source_committed_at": op.source_committed_at,
        }
        return cls(outcome=outcome, recorded_at=recorded_at, **(identity | fields))


#: headers on every result record: its ``kind`` and ``outcome``, readable without decoding the
#: value — the planner skips the results it learns nothing from before they reach its stream
HEADER_KIND = "vudsync.result.kind"
HEADER_OUTCOME = "vudsync.result.outcome"


def result_headers(result: OperationResult) -> list[tuple[str, bytes]]:
    """The headers a result record carries (a copy of two of its fields; the value is the
    whole truth, a record without them is read in full)."""
    return [(HEADER_KIND, result.kind.encode()), (HEADER_OUTCOME, result.outcome.value.encode())]


def kind_and_outcome(headers: Sequence[tuple[str, bytes | None]] | None) -> tuple[str, str] | None:
    """A result record's kind and outcome from its headers; None when it lacks either (a
    record written before the headers were, or by another writer): read its value."""
    kind = outcome = None
    for name, value in headers or ():
        if name == HEADER_KIND:
            kind = value
        elif name == HEADER_OUTCOME:
            outcome = value
    if kind is None or outcome is None:
        return None
    return kind.decode(errors="replace"), outcome.decode(errors="replace")


# planner: facts every planner partition must know (topic ``vud.planner.facts``)


class FactKind(StrEnum):
    COMPANY = "company"  # subject: company id; cloud_id: its linked cloud company
    USER = "user"  # subject: user id; cloud_id: its linked cloud user
    CATALOGUE = "catalogue"  # subject: <application>:<roles|layout_groups|modules>:<name>; present
    REGISTRY = "registry"  # subject: application; the cloud's registered instance (present, uri, …)
    INSTANCE = "instance"  # subject: application; the on-premise instance (present, uri, …, version)
    # subject: "installation"; present: `vudsync connect` succeeded (written last by connect)
    CONNECT = "connect"
    # subject: company id; present: linked to a cloud company that existed before (matched by
    # organisation number), waiting for an operator's review; absent: reviewed (`vudsync review
    # accept`); cloud_id: the cloud company; observed_at: the link's time, which an acceptance
    # repeats (it accepts that link, whatever the clocks of the sink and the operator say)
    REVIEW = "review"


class PlannerFact(Message):
    """Something the planner must know, learned from results or from ``vudsync connect``.

    Keyed by ``<kind>:<subject>`` and written to every partition, so that each partition
    decides from its own copy, whatever partition holds the entity it concerns. A later
    ``observed_at`` (instances: a higher ``version``) wins; license keys appear only as their
    keyed fingerprint.
    """

    kind: FactKind
    subject: str = Field(min_length=1)
    present: bool = True
    cloud_id: str | None = None
    uri: str | None = None
    license_fingerprint: str | None = Field(default=None, pattern=r"^hmac-sha256:[0-9a-f]{64}$")
    version: int = Field(default=0, ge=0, description="instances: the on-premise source version")
    observed_at: datetime
    source: Literal["connect", "results", "planner", "operator"]

    @property
    def key(self) -> str:
        return f"{self.kind.value}:{self.subject}"
