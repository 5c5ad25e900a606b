"""Cloud operations: what the planner commands the sink to do, as imperatives.

Every operation has a deterministic ``operation_id`` (same planning input → same id), used
as the ``Idempotency-Key`` of its cloud writes, so replays and redeliveries have no second
effect. ``aggregate`` is the Kafka key (``user:<id>`` or ``company:<id>``): operations on
one aggregate are applied in order.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from schemas.base import Message
from schemas.directory import ApplicationType, EntityType, ServiceAccess

_OPERATION_NAMESPACE = uuid.UUID("0b8e5f2a-3c41-4d7e-9a6b-5e2f1c8d7a30")


_NAMESPACE_BYTES = _OPERATION_NAMESPACE.bytes
# SHA-1 state after the namespace: each id copies it and hashes only its own name
_NAMESPACE_SHA1 = hashlib.sha1(_NAMESPACE_BYTES)


def operation_id_for(kind: str, entity_id: str, version: int, discriminator: str = "") -> str:
    """The deterministic operation id of (kind, entity, version[, discriminator]).

    ``uuid.uuid5(_OPERATION_NAMESPACE, name)``, computed directly: the same string, ten times
    faster (no UUID object, the namespace's hash state reused), because the planner derives
    one per operation. Never change the derivation: replays must plan the same ids.
    """
    sha1 = _NAMESPACE_SHA1.copy()
    sha1.update(f"{kind}|{entity_id}|{version}|{discriminator}".encode())
    digest = bytearray(sha1.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Operation(Message):
    operation_id: str
    aggregate: str = Field(description="Kafka key: user:<id> or company:<id>")
    entity: EntityType
    entity_id: str
    source_version: int = Field(ge=0)
    source_committed_at: datetime = Field(description="for end-to-end latency")
    planned_at: datetime


class UpsertUser(_Operation):
    """Make the cloud user match: by known cloud id, else by e-mail (case-insensitive), else create."""

    kind: Literal["user.upsert"] = "user.upsert"
    cloud_id: str | None = None
    username: str
    email: str
    first_name: str
    last_name: str
    language: str
    active: bool = True


class DeactivateUser(_Operation):
    """Removal on premise deactivates the cloud user; it is never hard-deleted."""

    kind: Literal["user.deactivate"] = "user.deactivate"
    cloud_id: str | None = None
    email: str


class UpsertCompany(_Operation):
    """Register the company: update if linked, else link to the cloud company with the same
    normalised organisation number, else create. Never two cloud companies for one company."""

    kind: Literal["company.upsert"] = "company.upsert"
    cloud_id: str | None = None
    name: str
    organisation_number: str = Field(description="normalised: digits only")
    country: str
    status: str


class AssignAccess(_Operation):
    """Replace the user's assignments in one company with exactly ``services`` — except the
    applications in ``keep``, whose assignments in the cloud stay as they are (an application
    whose instance does not match the cloud's registry: the rest of the access goes without it,
    and the whole assignment follows once it matches)."""

    kind: Literal["access.assign"] = "access.assign"
    user_id: str
    company_id: str
    cloud_user_id: str | None = Field(default=None, description="unset only while parked")
    cloud_company_id: str | None = Field(default=None, description="unset only while parked")
    services: dict[ApplicationType, ServiceAccess]
    keep: tuple[ApplicationType, ...] = Field(
        default=(), description="applications whose cloud assignments this leaves as they are"
    )


class RevokeAccess(_Operation):
    """Remove every assignment the user holds in one company."""

    kind: Literal["access.revoke"] = "access.revoke"
    user_id: str
    company_id: str
    cloud_user_id: str | None = Field(default=None, description="unset only while parked")
    cloud_company_id: str | None = Field(default=None, description="unset only while parked")


class RevokeAccessEntry(_Operation):
    """Remove one role, layout group or module of the user in one company, whatever its origin
    in the cloud: an administrator removed on premise an entry the directory held as the
    cloud's (origin cloud, written back), which the whole-set writes (``scope=directory``)
    never touch (issue 16)."""

    kind: Literal["access.revoke_entry"] = "access.revoke_entry"
    user_id: str
    company_id: str
    cloud_user_id: str | None = Field(default=None, description="unset only while parked")
    cloud_company_id: str | None = Field(default=None, description="unset only while parked")
    application: ApplicationType
    catalogue: Literal["roles", "layout_groups", "modules"]
    name: str
    unless_changed_after: datetime | None = Field(
        default=None,
        description="the removal's commit time on premise: an entry the cloud changed later is kept "
        "(the conflict rule: the later change wins), checked by the sink just before it revokes",
    )


class UpsertCatalogueEntry(_Operation):
    """Publish a role, layout group or module in its service's catalogue."""

    kind: Literal["catalogue.upsert"] = "catalogue.upsert"
    application: ApplicationType
    catalogue: Literal["roles", "layout_groups", "modules"]
    name: str
    description: str = ""


class RemoveCatalogueEntry(_Operation):
    kind: Literal["catalogue.remove"] = "catalogue.remove"
    application: ApplicationType
    catalogue: Literal["roles", "layout_groups", "modules"]
    name: str


class RegisterApplicationInstance(_Operation):
    """Register an instance the cloud does not know yet (URI + license fingerprint)."""

    kind: Literal["application_instance.register"] = "application_instance.register"
    application: ApplicationType
    uri: str
    license_fingerprint: str


CloudOperation = Annotated[
    UpsertUser
    | DeactivateUser
    | UpsertCompany
    | AssignAccess
    | RevokeAccess
    | RevokeAccessEntry
    | UpsertCatalogueEntry
    | RemoveCatalogueEntry
    | RegisterApplicationInstance,
    Field(discriminator="kind"),
]

CLOUD_OPERATION_ADAPTER: TypeAdapter[CloudOperation] = TypeAdapter(CloudOperation)


def version_slot(op: CloudOperation) -> str:
    """What ``op``'s ``source_version`` orders: the part of the cloud it overwrites.

    The aggregate (``user:<id>`` — the user's fields and its deactivation; ``company:<id>``;
    a catalogue entry; an application instance), except access: a user's access in one
    company is a slot of its own (``user:<id>|access:<company>``), assigned or revoked as a
    whole, independent of the user's fields and of the user's access elsewhere. Within a slot
    source versions are change-log positions of the same entity, so the higher one is the
    newer plan: an operation older than what was applied to its slot must never be applied
    (a ``vudsync dlq retry``, a replay, a repair) — it would roll the cloud back.
    """
    if isinstance(op, AssignAccess | RevokeAccess):
        return f"{op.aggregate}|access:{op.company_id}"
    if isinstance(op, RevokeAccessEntry):  # one entry: apart from the whole-set writes
        return f"{op.aggregate}|access:{op.company_id}|{op.application.value}/{op.catalogue}/{op.name}"
    return op.aggregate


class StagedOperation(Message):
    """An operation the planner would have sent, kept on ``vud.cloud.operations.staged`` in
    staging mode (keyed by its aggregate). ``waiting_for`` is empty when it would go now; else
    it names the needs it waits for — what staged operations would create (a user, a company, a
    catalogue entry) — and the planner stages it again, ready and with its cloud ids, once a
    promotion applied those (the same operation id)."""

    operation: CloudOperation
    waiting_for: tuple[str, ...] = ()
    staged_at: datetime
