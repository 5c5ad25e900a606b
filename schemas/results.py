"""Results of applied operations, published by the sink on ``vud.cloud.results``.

The processor learns cloud identities from them (``cloud_id``) and releases parked
operations; the event journal is built from them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from schemas.base import Message
from schemas.directory import EntityType


class ResultOutcome(StrEnum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    # recorded by the planner, for the journal
    PARKED = "parked"
    HELD = "held"
    BLOCKED = "blocked"
    REVIEW = "review"


class OperationResult(Message):
    """A fact about one operation: what became of it (or why it waits), for the journal.

    The sink records applied / already applied / failed / dead-lettered; the planner records
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
