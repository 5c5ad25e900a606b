"""The planner: pure reconciliation of directory events into cloud operations.

``plan(previous, event, identities, settings, now)`` → :class:`Plan`. No I/O, no clock, no
Faust: everything arrives as arguments, so the same input always plans the same operations
with the same ids (a replay plans the same ids again, and the sink's ledger and the cloud's
idempotency keys make them no-ops).

Rules (DOMAIN.md):
- a version not newer than the one seen is a no-op (``stale``), so an older event never
  overwrites newer state;
- users: upsert (the sink matches by known cloud id, then e-mail case-insensitively, then
  creates); removal on premise deactivates, never deletes;
- companies: upsert (the sink updates a linked company, else links to the company with the
  same normalised organisation number, else creates);
- a user's access per company becomes assign/revoke operations; they need the cloud ids of
  user and company, and are *parked* until the results topic has confirmed both;
- access in an application whose instance does not match the cloud's registry is blocked,
  with a journal entry naming the field that differs (never the key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from schemas.directory import (
    ApplicationInstanceState,
    ApplicationType,
    CompanyAccess,
    EntityType,
    LayoutGroupState,
    ModuleState,
    RoleState,
    ServiceAccess,
    UserState,
)
from schemas.events import (
    ApplicationInstanceChanged,
    CompanyChanged,
    DirectoryEvent,
    LayoutGroupChanged,
    ModuleChanged,
    Op,
    RoleChanged,
    UserChanged,
)
from schemas.operations import (
    AssignAccess,
    CloudOperation,
    DeactivateUser,
    RegisterApplicationInstance,
    RemoveCatalogueEntry,
    RevokeAccess,
    UpsertCatalogueEntry,
    UpsertCompany,
    UpsertUser,
    operation_id_for,
)


class Outcome(StrEnum):
    PLANNED = "planned"
    NO_CHANGE = "no_change"
    STALE = "stale"
    PARKED = "parked"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class RegisteredInstance:
    uri: str
    license_fingerprint: str


@dataclass(frozen=True)
class Identities:
    """What the planner knows of the cloud: learned from results and from ``connect``."""

    users: Mapping[str, str] = field(default_factory=dict)  # user id -> cloud id
    companies: Mapping[str, str] = field(default_factory=dict)  # company id -> cloud id
    instances: Mapping[ApplicationType, RegisteredInstance] = field(default_factory=dict)
    # applications whose on-premise instance does not match the cloud (set by the planner)
    blocked: frozenset[ApplicationType] = frozenset()


@dataclass(frozen=True)
class EntityView:
    """The last seen state of one entity (the processor's table value)."""

    version: int
    state: object | None
    deleted: bool = False


@dataclass(frozen=True)
class JournalEntry:
    entity: EntityType
    entity_id: str
    code: str
    message: str
    level: str = "info"


@dataclass(frozen=True)
class Parked:
    """An operation waiting for cloud identities: ``AssignAccess``/``RevokeAccess`` with ids unset."""

    operation: AssignAccess | RevokeAccess
    needs: tuple[tuple[EntityType, str], ...]


@dataclass(frozen=True)
class Plan:
    outcome: Outcome
    view: EntityView | None  # the new table value (None: leave the table as it is)
    operations: tuple[CloudOperation, ...] = ()
    parked: tuple[Parked, ...] = ()
    journal: tuple[JournalEntry, ...] = ()
    blocked_update: tuple[ApplicationType, bool] | None = None  # (application, blocked?)


@dataclass(frozen=True)
class PlannerSettings:
    pass


def _aggregate(entity: EntityType, entity_id: str) -> str:
    return f"{entity.value}:{entity_id}"


def plan(
    previous: EntityView | None,
    event: DirectoryEvent,
    identities: Identities,
    now: datetime,
    settings: PlannerSettings | None = None,
) -> Plan:
    """Reconcile one directory event against what was seen before."""
    if previous is not None and event.version <= previous.version:
        return Plan(Outcome.STALE, None)
    view = EntityView(event.version, event.state, deleted=event.op is Op.DELETE)
    if isinstance(event, UserChanged):
        return _plan_user(previous, event, identities, now, view)
    if isinstance(event, CompanyChanged):
        return _plan_company(previous, event, identities, now, view)
    if isinstance(event, RoleChanged | LayoutGroupChanged | ModuleChanged):
        return _plan_catalogue(previous, event, now, view)
    if isinstance(event, ApplicationInstanceChanged):
        return _plan_instance(event, identities, now, view)
    raise TypeError(f"no planning rule for {type(event).__name__}")


def _common(event: DirectoryEvent, now: datetime, kind: str, discriminator: str = "") -> dict[str, object]:
    aggregate_entity = EntityType.USER if event.entity is EntityType.USER else event.entity
    return {
        "operation_id": operation_id_for(kind, event.entity_id, event.version, discriminator),
        "aggregate": _aggregate(aggregate_entity, event.entity_id),
        "entity": event.entity,
        "entity_id": event.entity_id,
        "source_version": event.version,
        "source_committed_at": event.source.committed_at,
        "planned_at": now,
    }


# -- users --------------------------------------------------------------------------------


def _user_fields(state: UserState) -> tuple[object, ...]:
    return (
        state.username,
        state.email.lower(),
        state.email,
        state.first_name,
        state.last_name,
        state.language,
        state.active,
    )


def _access_map(state: UserState | None) -> dict[str, CompanyAccess]:
    return {a.company_id: a for a in state.access} if state is not None else {}


def _plan_user(
    previous: EntityView | None, event: UserChanged, ids: Identities, now: datetime, view: EntityView
) -> Plan:
    state = event.state
    before = previous.state if previous is not None and not previous.deleted else None
    assert before is None or isinstance(before, UserState)
    cloud_id = ids.users.get(event.entity_id)
    ops: list[CloudOperation] = []
    parked: list[Parked] = []
    journal: list[JournalEntry] = []

    if event.op is Op.DELETE:
        if previous is not None and previous.deleted:
            return Plan(Outcome.NO_CHANGE, view)
        ops.append(
            DeactivateUser(
                **_common(event, now, "user.deactivate"),  # type: ignore[arg-type]
                cloud_id=cloud_id,
                email=state.email,
            )
        )
        # access goes with the user: revoke what was assigned
        for company_id in sorted(_access_map(before)):
            _access_op(event, now, company_id, None, ids, ops, parked, journal)
        return Plan(Outcome.PLANNED, view, tuple(ops), tuple(parked), tuple(journal))

    if before is None or _user_fields(before) != _user_fields(state):
        ops.append(
            UpsertUser(
                **_common(event, now, "user.upsert"),  # type: ignore[arg-type]
                cloud_id=cloud_id,
                username=state.username,
                email=state.email,
                first_name=state.first_name,
                last_name=state.last_name,
                language=state.language,
                active=state.active,
            )
        )
    old_access, new_access = _access_map(before), _access_map(state)
    for company_id in sorted(old_access.keys() | new_access.keys()):
        old, new = old_access.get(company_id), new_access.get(company_id)
        if old == new:
            continue
        _access_op(event, now, company_id, new, ids, ops, parked, journal)
    if not ops and not parked:
        return Plan(Outcome.NO_CHANGE if not journal else Outcome.BLOCKED, view, journal=tuple(journal))
    outcome = Outcome.PLANNED if ops else Outcome.PARKED
    return Plan(outcome, view, tuple(ops), tuple(parked), tuple(journal))


def _access_op(
    event: UserChanged,
    now: datetime,
    company_id: str,
    access: CompanyAccess | None,
    ids: Identities,
    ops: list[CloudOperation],
    parked: list[Parked],
    journal: list[JournalEntry],
) -> None:
    services: dict[ApplicationType, ServiceAccess] = {}
    if access is not None:
        for app, svc in access.services.items():
            if app in ids.blocked:
                journal.append(
                    JournalEntry(
                        EntityType.USER,
                        event.entity_id,
                        "application_blocked",
                        f"access in {app.value} for company {company_id} held: the {app.value} "
                        "instance does not match the cloud's registry",
                        level="warning",
                    )
                )
                continue
            if not svc.is_empty():
                services[app] = svc
    cloud_user = ids.users.get(event.entity_id)
    cloud_company = ids.companies.get(company_id)
    op: AssignAccess | RevokeAccess
    if services:
        op = AssignAccess(
            **_common(event, now, "access.assign", company_id),  # type: ignore[arg-type]
            user_id=event.entity_id,
            company_id=company_id,
            cloud_user_id=cloud_user,
            cloud_company_id=cloud_company,
            services=services,
        )
    else:
        op = RevokeAccess(
            **_common(event, now, "access.revoke", company_id),  # type: ignore[arg-type]
            user_id=event.entity_id,
            company_id=company_id,
            cloud_user_id=cloud_user,
            cloud_company_id=cloud_company,
        )
    if cloud_user is not None and cloud_company is not None:
        ops.append(op)
        return
    needs = tuple(
        need
        for need, known in (
            ((EntityType.USER, event.entity_id), cloud_user),
            ((EntityType.COMPANY, company_id), cloud_company),
        )
        if known is None
    )
    parked.append(Parked(op, needs))


def release(parked: Parked, ids: Identities) -> AssignAccess | RevokeAccess | None:
    """The parked operation with its cloud ids filled in, or None while one is still unknown."""
    op = parked.operation
    cloud_user = ids.users.get(op.user_id)
    cloud_company = ids.companies.get(op.company_id)
    if cloud_user is None or cloud_company is None:
        return None
    return op.model_copy(update={"cloud_user_id": cloud_user, "cloud_company_id": cloud_company})


# -- companies ----------------------------------------------------------------------------


def _plan_company(
    previous: EntityView | None,
    event: CompanyChanged,
    ids: Identities,
    now: datetime,
    view: EntityView,
) -> Plan:
    state = event.state
    before = previous.state if previous is not None and not previous.deleted else None
    if event.op is Op.DELETE:
        # A company removed on premise is marked inactive in the cloud, never deleted.
        state = state.model_copy(update={"status": "inactive"})
        if previous is not None and previous.deleted:
            return Plan(Outcome.NO_CHANGE, view)
    elif before == state:
        return Plan(Outcome.NO_CHANGE, view)
    op = UpsertCompany(
        **_common(event, now, "company.upsert"),  # type: ignore[arg-type]
        cloud_id=ids.companies.get(event.entity_id),
        name=state.name,
        organisation_number=state.normalised_organisation_number,
        country=state.country,
        status=state.status,
    )
    return Plan(Outcome.PLANNED, view, (op,))


# -- catalogues ---------------------------------------------------------------------------

_CATALOGUE = {
    EntityType.ROLE: "roles",
    EntityType.LAYOUT_GROUP: "layout_groups",
    EntityType.MODULE: "modules",
}


def _plan_catalogue(
    previous: EntityView | None,
    event: RoleChanged | LayoutGroupChanged | ModuleChanged,
    now: datetime,
    view: EntityView,
) -> Plan:
    state: RoleState | LayoutGroupState | ModuleState = event.state
    catalogue = _CATALOGUE[event.entity]
    name = state.code if isinstance(state, ModuleState) else state.name
    description = state.name if isinstance(state, ModuleState) else state.description
    if event.op is Op.DELETE:
        if previous is not None and previous.deleted:
            return Plan(Outcome.NO_CHANGE, view)
        rm = RemoveCatalogueEntry(
            **_common(event, now, "catalogue.remove"),  # type: ignore[arg-type]
            application=state.application,
            catalogue=catalogue,
            name=name,  # type: ignore[arg-type]
        )
        return Plan(Outcome.PLANNED, view, (rm,))
    if previous is not None and not previous.deleted and previous.state == state:
        return Plan(Outcome.NO_CHANGE, view)
    up = UpsertCatalogueEntry(
        **_common(event, now, "catalogue.upsert"),  # type: ignore[arg-type]
        application=state.application,
        catalogue=catalogue,
        name=name,  # type: ignore[arg-type]
        description=description,
    )
    return Plan(Outcome.PLANNED, view, (up,))


# -- application instances ----------------------------------------------------------------


def _plan_instance(
    event: ApplicationInstanceChanged, ids: Identities, now: datetime, view: EntityView
) -> Plan:
    state: ApplicationInstanceState = event.state
    app = state.application
    if event.op is Op.DELETE:
        return Plan(
            Outcome.NO_CHANGE,
            view,
            journal=(
                JournalEntry(
                    event.entity,
                    event.entity_id,
                    "instance_removed",
                    f"the {app.value} instance was removed on premise; the cloud registry is kept",
                ),
            ),
        )
    registered = ids.instances.get(app)
    if registered is None:
        op = RegisterApplicationInstance(
            **_common(event, now, "application_instance.register"),  # type: ignore[arg-type]
            application=app,
            uri=state.uri,
            license_fingerprint=state.license_fingerprint,
        )
        return Plan(Outcome.PLANNED, view, (op,), blocked_update=(app, False))
    differing = [
        name
        for name, ours, theirs in (
            ("uri", state.uri, registered.uri),
            ("license key", state.license_fingerprint, registered.license_fingerprint),
        )
        if ours != theirs
    ]
    if differing:
        return Plan(
            Outcome.BLOCKED,
            view,
            journal=(
                JournalEntry(
                    event.entity,
                    event.entity_id,
                    "instance_mismatch",
                    f"the {app.value} instance differs from the cloud's registry in: "
                    f"{', '.join(differing)}; operations for {app.value} are held until it matches",
                    level="error",
                ),
            ),
            blocked_update=(app, True),
        )
    return Plan(Outcome.NO_CHANGE, view, blocked_update=(app, False))
