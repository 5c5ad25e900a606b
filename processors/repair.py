"""Repairs: ``vudsync verify --repair`` re-asserts an entity's state through the planner. Pure.

Verify finds the cloud different from the directory store (a user changed or deactivated in
the cloud, access assigned there, a company missing …). An ordinary event plans only what
changed since the state the planner saw, so the current state re-emitted would plan nothing.
A *repair* event (:class:`schemas.events.Repair` on a directory event, sent by verify through
the producer's own client, so it lands on the entity's partition) names the slots to
re-assert, and :func:`plan_repair` plans them from the event's state — the **whole** of each
slot, through the same router as any event:

- every destructive operation (:func:`processors.deletions.is_destructive`) waits for the
  accidental-delete gate: a repair that would deactivate or revoke more than the threshold is
  held whole, durably, in the table and at the gate (``vudsync deletes list``, ``approve``);
- access waits for a matching application instance (the instance block), its user and
  company, its catalogue entries — parked like any prerequisite;
- a user or company the store no longer holds arrives as a removal (op ``d``): deactivated
  (or set inactive) through the gate, with the cloud id verify found linked to it by external
  id — never "whoever has that e-mail".

Ids. A repair's operations and its gate candidate are derived from ``Repair.run`` (a digest of
the drift verify saw, including the cloud object's version) and not from the event's version
(the change-log position when verify read the store, which moves with every unrelated
change): the same drift repaired twice plans the same ids and asks the gate once, so it is
applied once; after a repair was applied the cloud object's version has moved, so a new drift
of the same fields is a new repair. The planner's own state of the entity (``e|``) is not
changed by a repair: its version is verify's read position, and changes captured before it
must still be planned when they arrive.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from processors.model import DeletionRequest, EntityView, Identities, Outcome, Plan
from processors.planner import _op, _Router, without_blocked
from schemas import operations as ops
from schemas.directory import ApplicationType, CompanyState, ModuleState, ServiceAccess, UserState
from schemas.events import (
    DirectoryEvent,
    LayoutGroupChanged,
    ModuleChanged,
    Op,
    Repair,
    RoleChanged,
)
from schemas.operations import CloudOperation

ID_VERSION = 0  # a repair's ids do not depend on the event's version (module docstring)
_CATALOGUE: dict[type, str] = {
    RoleChanged: "roles",
    LayoutGroupChanged: "layout_groups",
    ModuleChanged: "modules",
}


def tag_of(repair: Repair) -> str:
    """What tells a repair's operations apart from the event's ordinary ones."""
    return f"repair:{repair.run}"


def candidate_of(event: DirectoryEvent, repair: Repair) -> str:
    """The gate candidate of a repair: ``<entity>:<id>@repair-<run>:0`` (the gate and
    ``deletes list`` read the last field as a version)."""
    return f"{event.entity.value}:{event.entity_id}@repair-{repair.run}:{ID_VERSION}"


def repair_operation_id(kind: str, entity_id: str, repair: Repair, company_id: str | None = None) -> str:
    """The id :func:`plan_repair` gives the operation of ``kind`` (``company_id``: an access
    slot's), so verify can follow its results."""
    discriminator = f"{company_id}|{tag_of(repair)}" if company_id else tag_of(repair)
    return ops.operation_id_for(kind, entity_id, ID_VERSION, discriminator)


class _Fallback(Mapping[str, str]):
    """What the partition knows, else what verify found linked (lookups only: the first
    mapping is the partition's table view, never copied)."""

    def __init__(self, first: Mapping[str, str], then: Mapping[str, str]) -> None:
        self._first, self._then = first, then

    def __getitem__(self, key: str) -> str:
        value = self._first.get(key)
        return self._then[key] if value is None else value

    def __contains__(self, key: object) -> bool:
        return key in self._first or key in self._then

    def __iter__(self) -> Iterator[str]:
        return iter({*self._first, *self._then})

    def __len__(self) -> int:
        return len({*self._first, *self._then})


def with_linked(ids: Identities, cloud_ids: Mapping[str, str]) -> Identities:
    """``ids`` with the cloud ids verify found linked, where the partition has not learned them."""
    users = {k.removeprefix("user:"): v for k, v in cloud_ids.items() if k.startswith("user:")}
    companies = {k.removeprefix("company:"): v for k, v in cloud_ids.items() if k.startswith("company:")}
    return replace(
        ids,
        users=_Fallback(ids.users, users) if users else ids.users,
        companies=_Fallback(ids.companies, companies) if companies else ids.companies,
    )


def plan_repair(
    previous: EntityView | None, event: DirectoryEvent, identities: Identities, *, now: datetime
) -> Plan:
    """Re-assert the slots ``event.repair`` names from the event's state (module docstring).
    Stale when the planner has planned a newer version of the entity than the one verify read:
    that change is planned as it is, and the next verify sees what remains."""
    repair = event.repair
    if repair is None:
        raise ValueError("plan_repair needs an event with a repair")
    if previous is not None and event.version < previous.version:
        return Plan(Outcome.STALE, None)
    ids = with_linked(identities, repair.cloud_ids)
    request = DeletionRequest(
        candidate=candidate_of(event, repair),
        entity=event.entity,
        entity_id=event.entity_id,
        version=ID_VERSION,
        committed_at=event.source.committed_at,
    )
    router = _Router(ids, event, request)  # every destructive operation waits for the gate
    tag = tag_of(repair)
    removed = event.op is Op.DELETE
    for slot in repair.slots:
        op, apps = _slot_operation(event, slot, ids, tag, removed, now, repair)
        split = without_blocked(op, apps, ids, tag)
        if split is not None:  # a blocked application holds only its own access
            router.route(*split, tag=tag)
        router.route(op, apps, tag=tag)
    return router.plan(EntityView(event.version, event.state, removed))


def _slot_operation(
    event: DirectoryEvent,
    slot: str,
    ids: Identities,
    tag: str,
    removed: bool,
    now: datetime,
    repair: Repair,
) -> tuple[CloudOperation, tuple[ApplicationType, ...]]:
    """The operation that sets ``slot`` in the cloud to the event's state, with the
    applications it touches."""
    kind, discriminator, fields, apps = _slot_fields(event, slot, ids, tag, removed, repair)
    return _op(kind, event, now, discriminator, id_version=ID_VERSION, **fields), apps


def _slot_fields(
    event: DirectoryEvent, slot: str, ids: Identities, tag: str, removed: bool, repair: Repair
) -> tuple[type[CloudOperation], str, dict[str, Any], tuple[ApplicationType, ...]]:
    state = event.state
    if isinstance(state, UserState) and slot == "user":
        cloud_user = {"cloud_id": ids.users.get(event.entity_id), "email": state.email}
        if removed:
            return ops.DeactivateUser, tag, cloud_user, ()
        names = {"username": state.username, "first_name": state.first_name, "last_name": state.last_name}
        return (
            ops.UpsertUser,
            tag,
            {**cloud_user, **names, "language": state.language, "active": state.active},
            (),
        )
    if isinstance(state, UserState) and slot.startswith("access:"):
        company = slot.removeprefix("access:")
        grant = None if removed else next((a for a in state.access if a.company_id == company), None)
        services: dict[ApplicationType, ServiceAccess] = {
            app: s for app, s in (grant.services.items() if grant else ()) if not s.is_empty()
        }
        # the applications the cloud holds there (verify saw them) are touched too: a revoke of a
        # blocked application's access waits for its instance like an assignment would
        known = ApplicationType._value2member_map_
        in_cloud = {ApplicationType(a) for a in repair.apps.get(slot, ()) if a in known}
        apps = tuple(sorted(set(services) | in_cloud, key=lambda a: a.value))
        access = {
            "user_id": event.entity_id,
            "company_id": company,
            "cloud_user_id": ids.users.get(event.entity_id),
            "cloud_company_id": ids.companies.get(company),
        }
        if services:
            return ops.AssignAccess, f"{company}|{tag}", {**access, "services": services}, apps
        return ops.RevokeAccess, f"{company}|{tag}", access, apps
    if isinstance(state, CompanyState) and slot == "company":
        company_fields = {
            "cloud_id": ids.companies.get(event.entity_id),
            "name": state.name,
            "organisation_number": state.normalised_organisation_number,
            "country": state.country,
            "status": "inactive" if removed else state.status,
        }
        return ops.UpsertCompany, tag, company_fields, ()
    if isinstance(event, RoleChanged | LayoutGroupChanged | ModuleChanged) and slot == "catalogue":
        entry = event.state
        common = {
            "application": entry.application,
            "catalogue": _CATALOGUE[type(event)],
            "name": entry.code if isinstance(entry, ModuleState) else entry.name,
        }
        if removed:
            return ops.RemoveCatalogueEntry, tag, common, ()
        description = entry.name if isinstance(entry, ModuleState) else entry.description
        return ops.UpsertCatalogueEntry, tag, {**common, "description": description}, ()
    raise ValueError(f"no repair of slot {slot!r} for a {event.entity.value}")
