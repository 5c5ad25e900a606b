"""Messages of ``vud.planner.control``: the accidental-delete gate's protocol.

- ``DeletionRequested`` — a planner partition asks the gate (partition 0) whether a deletion
  may go;
- ``DeletionHeld`` / ``DeletionDecided`` — the gate's answer, back on the asking partition;
- ``DeletionsDecided`` — an operator's decision on the held deletions numbered up to a bound
  (``vudsync deletes approve|reject --up-to``), to partition 0;
- ``ConnectAwaited`` — a partition waits for ``vudsync connect`` (journalled once, on partition 0);
- ``GateTick`` — the gate's clock, while deletions settle: the planner worker that owns
  partition 0 stamps one now and then, so a window closes though no further deletion comes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from processors.model import Decision, DeletesFrom
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
    requested_at: datetime | None = Field(
        default=None, description="when the planner asked (its clock); the gate settles windows by it"
    )
    deletes_from: DeletesFrom = Field(
        default="cloud",
        description="where it deletes: the cloud (a deletion on premise, or a revoke the conflict "
        "rule gave the directory), or the directory (a revoke in the cloud written back to the store)",
    )


class DeletionHeld(Message):
    type: Literal["deletion.held"] = "deletion.held"
    candidate: str
    partition: int
    reason: str
    seq: int | None = Field(default=None, description="the gate's number for it: approve --up-to")
    deletes_from: DeletesFrom = "cloud"


class DeletionDecided(Message):
    type: Literal["deletion.decided"] = "deletion.decided"
    candidate: str
    partition: int
    decision: Decision


class DeletionsDecided(Message):
    """An operator approves or rejects the held deletions numbered up to ``up_to`` (what
    ``vudsync deletes list`` showed); one held later stays held. An approval without a bound
    settles nothing; a rejection without one rejects everything held."""

    type: Literal["deletions.decided"] = "deletions.decided"
    approve: bool
    operator: str = Field(min_length=1, max_length=200)
    decided_at: datetime
    up_to: int | None = Field(default=None, ge=0)


class ConnectAwaited(Message):
    """A partition parked its first operation on ``vudsync connect`` (``processors.connection``);
    the gate's partition journals "waiting for connect" once for the installation."""

    type: Literal["connect.awaited"] = "connect.awaited"
    partition: int = Field(ge=0)
    entity: EntityType
    entity_id: str
    version: int
    committed_at: datetime


class GateTick(Message):
    """The gate's clock reads ``at`` (the planner's clock when it produced the record)."""

    type: Literal["gate.tick"] = "gate.tick"
    at: datetime


ControlMessage = Annotated[
    DeletionRequested | DeletionHeld | DeletionDecided | DeletionsDecided | GateTick | ConnectAwaited,
    Field(discriminator="type"),
]
CONTROL_ADAPTER: TypeAdapter[ControlMessage] = TypeAdapter(ControlMessage)
