"""Directory operations: what the planner commands the directory sink to write in the store.

The mirror of :mod:`schemas.operations` on the writeback path (issue 16): an administrator
granted or revoked an entry in the cloud (:class:`~schemas.cloud_changes.CloudAccessChanged`),
the planner decided the directory must hold it or let it go, and the directory sink applies
the operation to the store's ``access`` table as a row of origin ``cloud``, in one transaction
with its id in the store's ``directory_operations_applied`` table (applied at most once).

Per entry, not per set: one operation grants or revokes one role, layout group or module of
one user in one company, so it never touches an entry it does not name. The id is
deterministic from (user, company, entry, feed position): a replay or a redelivery plans the
same id, which the store's applied-operations table turns into a no-op. Keyed on
``vud.directory.operations`` by the on-premise user id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from schemas.base import Message
from schemas.cloud_changes import AccessKind
from schemas.directory import ApplicationType, EntityType
from schemas.operations import operation_id_for


class _DirectoryOperation(Message):
    operation_id: str = Field(description="deterministic: (kind, user, feed_seq, company|entry)")
    user_id: str = Field(min_length=1, description="on-premise user id (the Kafka key)")
    company_id: str = Field(min_length=1)
    application: ApplicationType
    entry_kind: AccessKind
    name: str = Field(min_length=1)
    feed_seq: int = Field(ge=0, description="the cloud change feed's position that decided it")
    cloud_changed_at: datetime = Field(
        description="the cloud's commit time: the writeback's latency starts here"
    )
    planned_at: datetime

    @property
    def entry(self) -> str:
        """``<application>/<kind>/<name>``: how journals and logs name the entry."""
        return f"{self.application.value}/{self.entry_kind}/{self.name}"

    # what a result names of it, as of a cloud operation (a revoke the accidental-delete gate
    # holds waits in the planner's table and is journalled like one)
    @property
    def aggregate(self) -> str:
        return f"user:{self.user_id}"

    @property
    def entity(self) -> EntityType:
        return EntityType.USER

    @property
    def entity_id(self) -> str:
        return self.user_id

    @property
    def source_version(self) -> int:
        return self.feed_seq

    @property
    def source_committed_at(self) -> datetime:
        return self.cloud_changed_at


class GrantDirectoryAccess(_DirectoryOperation):
    """Hold the entry on premise as origin ``cloud`` (already held, whatever its origin: no
    effect — an entry the directory granted itself stays the directory's).

    With ``adopt``: an operator rejected the writeback's revoke of the entry (the directory's
    entry stands, docs/domain.md rule 6): the store's row of origin ``cloud`` becomes the
    directory's, so the directory's own path re-asserts it in the cloud; no row, or one of the
    directory's already: no effect (never a new row)."""

    kind: Literal["directory.access.grant"] = "directory.access.grant"
    adopt: bool = False


class RevokeDirectoryAccess(_DirectoryOperation):
    """Remove the entry on premise if the store holds it as origin ``cloud`` — or whatever its
    origin with ``any_origin``: an administrator revoked in the cloud an entry the directory
    granted, later than the directory's last change of it (the conflict rule)."""

    kind: Literal["directory.access.revoke"] = "directory.access.revoke"
    any_origin: bool = False


DirectoryOperation = Annotated[GrantDirectoryAccess | RevokeDirectoryAccess, Field(discriminator="kind")]

DIRECTORY_OPERATION_ADAPTER: TypeAdapter[DirectoryOperation] = TypeAdapter(DirectoryOperation)


def directory_operation_id(kind: str, user_id: str, company_id: str, entry: str, feed_seq: int) -> str:
    """The id of the operation of ``kind`` on ``entry`` decided at feed position ``feed_seq``."""
    return operation_id_for(kind, user_id, feed_seq, f"{company_id}|{entry}")
