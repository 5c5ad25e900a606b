"""Builders of directory events and states for tests (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from schemas.directory import (
    ApplicationInstanceState,
    ApplicationType,
    CompanyAccess,
    CompanyState,
    EntityType,
    RoleState,
    ServiceAccess,
    UserState,
)
from schemas.directory_operations import GrantDirectoryAccess, RevokeDirectoryAccess, directory_operation_id
from schemas.events import (
    ApplicationInstanceChanged,
    CompanyChanged,
    Op,
    RoleChanged,
    Source,
    UserChanged,
    event_id_for,
)
from schemas.operations import AssignAccess, RevokeAccess, UpsertCompany, UpsertUser, operation_id_for
from schemas.results import OperationResult, ResultOutcome

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

E = TypeVar("E", UserChanged, CompanyChanged, RoleChanged, ApplicationInstanceChanged)


def source(seq: int) -> Source:
    return Source(store="sqlite", db="test.db", seq=seq, committed_at=T0 + timedelta(seconds=seq))


def changed(event: type[E], entity: EntityType, state: Any, version: int, op: Op) -> E:
    """The event of ``state`` at ``version``: its id, timestamp and source as a store emits them."""
    return event(
        event_id=event_id_for(entity, state.id, version, op),
        entity_id=state.id,
        version=version,
        op=op,
        ts=T0,
        source=source(version),
        state=state,
    )


def user_state(uid: str = "u1", **kw: Any) -> UserState:
    base: dict[str, Any] = dict(
        id=uid,
        username=f"user{uid}",
        email=f"{uid}@firma.no",
        first_name="Kari",
        last_name="Nordmann",
        language="nb",
        active=True,
    )
    base.update(kw)
    return UserState(**base)


def access(
    company_id: str, roles: tuple[str, ...] = ("Regnskap",), app: ApplicationType = ApplicationType.BUSINESS
) -> CompanyAccess:
    return CompanyAccess(company_id=company_id, services={app: ServiceAccess(roles=roles)})


def user_event(version: int, op: Op = Op.UPDATE, state: UserState | None = None, **kw: Any) -> UserChanged:
    return changed(UserChanged, EntityType.USER, state or user_state(**kw), version, op)


def company_event(
    version: int, cid: str = "c1", org: str = "923609016", op: Op = Op.UPDATE, **kw: Any
) -> CompanyChanged:
    state = CompanyState(id=cid, name=kw.pop("name", "Fjord AS"), organisation_number=org, **kw)
    return changed(CompanyChanged, EntityType.COMPANY, state, version, op)


# planner: catalogue entries and application instances


def role_event(
    version: int, name: str = "Regnskap", app: ApplicationType = ApplicationType.BUSINESS, op: Op = Op.UPDATE
) -> RoleChanged:
    state = RoleState(
        id=f"{app.value}:{name}", application=app, name=name, description=f"{name} i {app.value}"
    )
    return changed(RoleChanged, EntityType.ROLE, state, version, op)


def instance_event(
    version: int,
    uri: str = "https://vb.fjord.local",
    fingerprint: str = "hmac-sha256:" + "a" * 64,
    app: ApplicationType = ApplicationType.BUSINESS,
    op: Op = Op.UPDATE,
) -> ApplicationInstanceChanged:
    state = ApplicationInstanceState(id=app.value, application=app, uri=uri, license_fingerprint=fingerprint)
    return changed(ApplicationInstanceChanged, EntityType.APPLICATION_INSTANCE, state, version, op)


def planned(
    entity: EntityType, entity_id: str, version: int, operation_id: str, at: datetime = T0
) -> dict[str, Any]:
    """The fields every planned cloud operation carries: its id, its aggregate (the entity's
    own), the entity, the source version and when it was committed and planned (``at``)."""
    return dict(
        operation_id=operation_id,
        aggregate=f"{entity.value}:{entity_id}",
        entity=entity,
        entity_id=entity_id,
        source_version=version,
        source_committed_at=at,
        planned_at=at,
    )


def in_company(
    uid: str = "u1", company: str = "c1", cloud_user: str | None = "cu-1", cloud_company: str | None = "cc-1"
) -> dict[str, Any]:
    """The fields of an operation on user ``uid``'s access in ``company``: both ids, on premise
    and in the cloud (None: not known yet)."""
    return dict(user_id=uid, company_id=company, cloud_user_id=cloud_user, cloud_company_id=cloud_company)


def user_upsert(uid: str = "u1", version: int = 1, **kw: Any) -> UpsertUser:
    """The cloud operation ``UpsertUser`` of user ``uid`` at ``version``, on its own aggregate."""
    base: dict[str, Any] = dict(
        planned(EntityType.USER, uid, version, f"op-{uid}-{version}"),
        username=uid,
        email=f"{uid}@fjord.no",
        first_name="Åse",
        last_name="Brækken",
        language="nb",
    )
    base.update(kw)
    return UpsertUser(**base)


def company_upsert(cid: str = "c1", version: int = 1, **kw: Any) -> UpsertCompany:
    """The cloud operation ``UpsertCompany`` of active company ``cid`` (Fjord AS, 923609016) at
    ``version``, on its own aggregate; ``kw`` replaces any field."""
    base: dict[str, Any] = dict(
        planned(EntityType.COMPANY, cid, version, f"op-{cid}-{version}"),
        name="Fjord AS",
        organisation_number="923609016",
        country="NO",
        status="active",
    )
    base.update(kw)
    return UpsertCompany(**base)


def access_op(
    version: int,
    role: str | None = "Regnskap",
    *,
    uid: str = "u1",
    company: str = "c1",
    cloud_user: str | None = "cu-1",
    cloud_company: str | None = "cc-1",
    committed_at: datetime = T0,
) -> AssignAccess | RevokeAccess:
    """User ``uid``'s access in ``company`` at ``version``: assign ``role`` of Business, or
    revoke it all (``role`` None); its id as the planner derives it."""
    kind = "access.assign" if role is not None else "access.revoke"
    fields: dict[str, Any] = dict(
        planned(EntityType.USER, uid, version, operation_id_for(kind, uid, version, company), committed_at),
        **in_company(uid, company, cloud_user, cloud_company),
    )
    if role is None:
        return RevokeAccess(**fields)
    return AssignAccess(**fields, services={ApplicationType.BUSINESS: ServiceAccess(roles=(role,))})


def op_result(
    outcome: ResultOutcome,
    entity_id: str = "u1",
    *,
    entity: EntityType = EntityType.USER,
    operation_id: str = "op-1",
    source_version: int = 1,
    **kw: Any,
) -> OperationResult:
    """The sink's result of the upsert of ``entity`` ``entity_id``, recorded at ``T0``: built as
    the sink builds one (``OperationResult.for_operation``), ``kw`` over the operation's fields."""
    op = user_upsert(entity_id, source_version, operation_id=operation_id)
    subject = {"kind": f"{entity.value}.upsert", "aggregate": f"{entity.value}:{entity_id}", "entity": entity}
    return OperationResult.for_operation(op, outcome, T0, **(subject | kw))


def store_users(*numbers: int, digits: int = 0) -> list[dict[str, Any]]:
    """Rows for ``DirectoryWriter.upsert_users``: users ``u<n>`` of one family, one per number
    (``n`` zero-padded to ``digits``)."""
    return [
        {
            "id": f"u{i:0{digits}d}",
            "username": f"bruker{i}",
            "email": f"bruker{i}@fjord.no",
            "first_name": "Åse",
            "last_name": "Brækken",
        }
        for i in numbers
    ]


def connected_table(partitions: int = 1, at: datetime = T0) -> dict[str, Any]:
    """A planner table whose partitions have had `vudsync connect`'s connect fact: an
    installation that connected (processors.connection). Before it, nothing is sent."""
    from processors import connection

    return {connection.state_key(p): {"present": True, "at": at.timestamp()} for p in range(partitions)}


def directory_op(
    name: str,
    seq: int = 1,
    revoke: bool = False,
    user_id: str = "u1",
    company_id: str = "c1",
    at: datetime = T0,
) -> GrantDirectoryAccess | RevokeDirectoryAccess:
    """A writeback operation on Business role ``name`` of the user in the company, decided at
    feed position ``seq``."""
    cls: type[GrantDirectoryAccess] | type[RevokeDirectoryAccess] = (
        RevokeDirectoryAccess if revoke else GrantDirectoryAccess
    )
    kind = cls.model_fields["kind"].default
    return cls(
        operation_id=directory_operation_id(kind, user_id, company_id, f"business/role/{name}", seq),
        user_id=user_id,
        company_id=company_id,
        application=ApplicationType.BUSINESS,
        entry_kind="role",
        name=name,
        feed_seq=seq,
        cloud_changed_at=at,
        planned_at=at,
    )
