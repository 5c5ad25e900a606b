"""Messages of ``vud.planner.control``: the accidental-delete gate's protocol.

- ``DeletionRequested`` — a planner partition asks the gate (partition 0) whether a deletion
  may go;
- ``DeletionHeld`` / ``DeletionDecided`` — the gate's answer, back on the asking partition;
- ``DeletionsDecided`` — an operator's decision on everything held (``vudsync deletes
  approve|reject``), to partition 0.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from processors.model import Decision
from schemas.base import Message
from schemas.directory import EntityType

GATE_PARTITION = 0


class DeletionRequested(Message):
    type: Literal["deletion.requested"] = "deletion.requested"
    candidate: str
    entity: EntityType
    entity_id: str
    version: int
    committed_at: datetime
    partition: int = Field(ge=0, description="where the deletion's operations wait")
    live: int = Field(ge=0, description="live entities on that partition (for the percentage)")


class DeletionHeld(Message):
    type: Literal["deletion.held"] = "deletion.held"
    candidate: str
    partition: int
    reason: str


class DeletionDecided(Message):
    type: Literal["deletion.decided"] = "deletion.decided"
    candidate: str
    partition: int
    decision: Decision


class DeletionsDecided(Message):
    """An operator approves or rejects every deletion the gate holds."""

    type: Literal["deletions.decided"] = "deletions.decided"
    approve: bool
    operator: str = Field(min_length=1, max_length=200)
    decided_at: datetime


ControlMessage = Annotated[
    DeletionRequested | DeletionHeld | DeletionDecided | DeletionsDecided, Field(discriminator="type")
]
CONTROL_ADAPTER: TypeAdapter[ControlMessage] = TypeAdapter(ControlMessage)
