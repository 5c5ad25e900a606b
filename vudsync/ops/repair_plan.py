"""What ``vudsync verify --repair`` asks the planner to re-assert for a drift report. Pure.

Verify does not send cloud operations itself: for each drifted entity it asks the planner to
re-assert the entity's current directory state in the drifted *slots* (the user, the company,
its access in one company, a catalogue entry), by re-emitting that state through the
producer's own client with a :class:`schemas.events.Repair` (:mod:`processors.repair`). So
every repair is an ordinary planned operation: the accidental-delete gate (held durably,
``vudsync deletes list``), the instance block, parking, the journal, deterministic ids.

- A user or company the store no longer holds but the cloud keeps live (linked to it by
  external id) is re-emitted as a *removal* with the cloud's own values and the linked cloud
  id: the planner deactivates exactly that cloud object, through the gate.
- ``run``: a digest of the entity's drifts and of the versions of the cloud objects involved.
  The same drift repaired twice is the same repair (one effect, one gate request); once a
  repair is applied the cloud object's version moves, so a new drift is a new repair.
- Not repaired here: a catalogue entry only the cloud has (no directory row to re-emit a
  removal from), and application instances (the planner registers a missing one itself when
  it knows the cloud's registry; one that differs is the operator's decision: the instance
  block holds its application until both sides match).
- Access entries assigned in the cloud by an administrator (origin ``cloud``) are never drift
  (:func:`vudsync.ops.drift.compare`), so never repaired.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.directory import EntityType
from schemas.events import Repair
from vudsync.ops.drift import CloudState, DirectoryState, Drift, DriftKind, DriftReport

#: the operation kinds that deactivate or take away: they pass the accidental-delete gate
DESTRUCTIVE = frozenset({"user.deactivate", "access.revoke", "company.deactivate", "catalogue.remove"})
_CATALOGUE_ENTITY = {
    "roles": EntityType.ROLE,
    "layout_groups": EntityType.LAYOUT_GROUP,
    "modules": EntityType.MODULE,
}


@dataclass(frozen=True)
class RepairRequest:
    """One entity to re-assert: its repair, what the planner will plan for it (``sends``: an
    operation kind per slot, as shown to the operator) and, for an entity the store no longer
    holds, the row of its last known (the cloud's) values to emit the removal from."""

    entity: EntityType
    entity_id: str
    repair: Repair
    sends: tuple[str, ...]
    removed: Mapping[str, Any] | None = None

    @property
    def deletions(self) -> int:
        return sum(1 for kind in self.sends if kind in DESTRUCTIVE)

    def as_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity.value,
            "entity_id": self.entity_id,
            "run": self.repair.run,
            "slots": list(self.repair.slots),
            "sends": list(self.sends),
            "removed": self.removed is not None,
        }


@dataclass(frozen=True)
class RepairPlan:
    requests: tuple[RepairRequest, ...]
    skipped: tuple[tuple[Drift, str], ...] = field(default_factory=tuple)  # (drift, why not)

    def counts(self) -> dict[str, int]:
        """Operations per kind the planner is asked for (before its gates)."""
        return dict(sorted(Counter(kind for r in self.requests for kind in r.sends).items()))

    @property
    def deletions(self) -> int:
        return sum(r.deletions for r in self.requests)

    def as_dict(self) -> dict[str, Any]:
        return {
            "by_kind": self.counts(),
            "deletions": self.deletions,
            "requests": [r.as_dict() for r in self.requests],
            "skipped": [{"drift": d.as_dict(), "why": why} for d, why in self.skipped],
        }


class _Entity:
    """The repair of one entity, gathered slot by slot."""

    def __init__(self, entity: EntityType, entity_id: str) -> None:
        self.entity, self.entity_id = entity, entity_id
        self.slots: list[str] = []
        self.sends: list[str] = []
        self.seen: list[Any] = []  # the drifts and the cloud versions: the run's digest
        self.cloud_ids: dict[str, str] = {}
        self.apps: dict[str, tuple[str, ...]] = {}
        self.removed: dict[str, Any] | None = None

    def add(self, slot: str, sends: str, drift: Drift, cloud_version: Any) -> None:
        self.slots.append(slot)
        self.sends.append(sends)
        self.seen.append([drift.as_dict(), cloud_version])

    def request(self) -> RepairRequest:
        digest = hashlib.sha256(json.dumps(self.seen, sort_keys=True, default=str).encode()).hexdigest()
        repair = Repair(run=digest[:16], slots=tuple(self.slots), cloud_ids=self.cloud_ids, apps=self.apps)
        return RepairRequest(self.entity, self.entity_id, repair, tuple(self.sends), self.removed)


def repair_requests(report: DriftReport, directory: DirectoryState, cloud: CloudState) -> RepairPlan:
    """What to ask the planner to re-assert for each drift of ``report``."""
    users = {u["external_id"]: u for u in cloud.users if u.get("external_id")}
    companies = {c["external_id"]: c for c in cloud.companies if c.get("external_id")}
    by_entity: dict[tuple[EntityType, str], _Entity] = {}
    skipped: list[tuple[Drift, str]] = []

    def entity(kind: EntityType, entity_id: str) -> _Entity:
        return by_entity.setdefault((kind, entity_id), _Entity(kind, entity_id))

    def linked(kind: EntityType, key: str, found: Mapping[str, Any] | None) -> _Entity:
        e = entity(kind, key)
        if found is not None:
            e.cloud_ids[f"{kind.value}:{key}"] = found["id"]
        return e

    for d in report.drifts:
        if d.object_type == "user":
            found = users.get(d.key)
            e = linked(EntityType.USER, d.key, found)
            state = directory.users.get(d.key)
            if state is None:  # extra: removed on premise (or never there), live in the cloud
                assert found is not None
                e.removed = _user_row(d.key, found)
                e.add("user", "user.deactivate", d, found.get("version"))
            else:
                e.add("user", "user.upsert" if state.active else "user.deactivate", d, _version(found))
        elif d.object_type == "company":
            found = companies.get(d.key)
            e = linked(EntityType.COMPANY, d.key, found)
            company = directory.companies.get(d.key)
            if company is None:
                assert found is not None
                e.removed = _company_row(d.key, found)
            inactive = company is None or company.status == "inactive"
            e.add("company", "company.deactivate" if inactive else "company.upsert", d, _version(found))
        elif d.object_type == "access":
            uid, _, cid = d.key.partition("/")
            user_found, company_found = users.get(uid), companies.get(cid)
            if cid.startswith("cloud:") or company_found is None:
                skipped.append((d, "the company is not linked to a directory company: nothing to re-assert"))
                continue
            e = entity(EntityType.USER, uid)
            slot = f"access:{cid}"
            e.cloud_ids[f"company:{cid}"] = company_found["id"]
            item: Mapping[str, Any] = {}
            if user_found is not None:
                e.cloud_ids[f"user:{uid}"] = user_found["id"]
                item = next(
                    (
                        i
                        for i in cloud.access.get(user_found["id"], ())
                        if i.get("company_id") == company_found["id"]
                    ),
                    {},
                )
            held = tuple(sorted(a for a, s in (item.get("services") or {}).items() if any(s.values())))
            if held:
                e.apps[slot] = held
            state = directory.users.get(uid)
            if state is None and user_found is not None and e.removed is None:
                e.removed = _user_row(uid, user_found)
            grant = next((a for a in state.access if a.company_id == cid), None) if state else None
            assign = grant is not None and any(not s.is_empty() for s in grant.services.values())
            e.add(slot, "access.assign" if assign else "access.revoke", d, item.get("version"))
        elif d.object_type == "catalogue":
            app, kind, name = d.key.split("/", 2)
            if d.kind is DriftKind.EXTRA:
                skipped.append(
                    (d, "only the cloud has it: no directory row to remove it from (remove it in the cloud)")
                )
                continue
            e = entity(_CATALOGUE_ENTITY[kind], f"{app}:{name}")
            e.add("catalogue", "catalogue.upsert", d, None)
        else:  # application_instance
            why = (
                "the planner registers an instance the cloud lacks once it knows the cloud's registry "
                "(`vudsync connect`; `vudsync instances`)"
                if d.kind is DriftKind.MISSING
                else "an instance that differs is an operator's decision: the planner holds the "
                "application until both sides match (DOMAIN.md rule 2; `vudsync instances`)"
            )
            skipped.append((d, why))
    # a removed user's every access slot is a revoke: its state has no access
    for e in by_entity.values():
        if e.removed is not None:
            e.sends = [s if s.startswith(("user.", "company.")) else "access.revoke" for s in e.sends]
    return RepairPlan(tuple(e.request() for e in by_entity.values()), tuple(skipped))


def _version(found: Mapping[str, Any] | None) -> Any:
    return None if found is None else found.get("version")


def _user_row(uid: str, found: Mapping[str, Any]) -> dict[str, Any]:
    """The row a removal is emitted from: the cloud's values (the store no longer has any)."""
    return {
        "id": uid,
        "username": found.get("username") or found.get("email") or uid,
        "email": found["email"],
        "first_name": found.get("first_name") or "",
        "last_name": found.get("last_name") or "",
        "language": found.get("language") or "nb",
        "active": 0,
    }


def _company_row(cid: str, found: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": cid,
        "name": found.get("name") or cid,
        "organisation_number": found.get("organisation_number") or "0",
        "country": found.get("country") or "NO",
        "status": "inactive",
    }
