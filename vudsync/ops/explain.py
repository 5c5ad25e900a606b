"""``vudsync explain``: why is this user (or company) not in the cloud as the directory says? Pure.

Three views of one entity side by side, and what it waits for:

- the **directory**: the state capture reads from the store now (or why capture rejects it);
- the **planner**: what its results in the journal say — the last version planned, the cloud id
  learned, the operations parked (and on which needs), held by the accidental-delete gate,
  blocked on an application, findings to review, operations dead-lettered;
- the **cloud**: what the cloud API holds, compared with the directory by the very rules of
  ``vudsync verify`` (:func:`vudsync.ops.drift.compare` on a slice of both sides).

The planner's view comes from the journal (``vud.cloud.results``, indexed): the planner
reports every operation it does not send now as a result, so the journal knows what waits and
since when; its table (the Faust changelog) is not read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.directory import CompanyState, EntityType, UserState
from vudsync.ops.conflicts import open_conflict_entries
from vudsync.ops.drift import CloudState, DirectoryState, Drift, compare
from vudsync.ops.journal import JournalEntry, WaitingOperation
from vudsync.ops.timespec import format_age

_UPSERT = {EntityType.USER: "user.upsert", EntityType.COMPANY: "company.upsert"}


@dataclass(frozen=True)
class DirectoryView:
    """The store's side: ``state`` None when it holds no such entity or capture rejects it."""

    key: str  # what the operator asked for (id, e-mail, organisation number)
    entity_id: str | None
    state: UserState | CompanyState | None
    rejected: str | None  # why capture rejects it
    position: int  # the store's change-log position when read


@dataclass(frozen=True)
class PlannerView:
    last_version: int | None
    cloud_id: str | None  # learned from an applied result
    parked: tuple[WaitingOperation, ...]
    held: tuple[WaitingOperation, ...]
    blocked: tuple[WaitingOperation, ...]  # parked on their application
    findings: tuple[JournalEntry, ...]  # the planner's warnings and reviews about it (newest first)
    dead_lettered: tuple[JournalEntry, ...]  # not applied since
    conflicts: tuple[JournalEntry, ...] = ()  # a match the sink refused to take over, not applied since


def planner_view(
    entity: EntityType,
    journal: Sequence[JournalEntry],  # the entity's entries, newest first
    waiting: Sequence[WaitingOperation],
) -> PlannerView:
    """What the planner's results say about the entity."""
    applied = {
        e.operation_id for e in journal if e.outcome in ("applied", "already_applied") and e.operation_id
    }
    versions = [e.source_version for e in journal if e.source_version is not None and e.source == "results"]
    cloud_id = next(
        (
            e.cloud_id
            for e in journal
            if e.cloud_id and e.kind == _UPSERT.get(entity) and e.outcome in ("applied", "already_applied")
        ),
        None,
    )
    findings: list[JournalEntry] = []
    dead: dict[str, JournalEntry] = {}
    for e in journal:
        if (e.kind or "").startswith("journal.") and e.outcome in ("blocked", "review"):
            findings.append(e)
        elif e.outcome == "dead_lettered" and (e.operation_id or "") not in applied:
            dead.setdefault(e.operation_id or f"{e.topic}@{e.offset}", e)
    # when a conflict is settled: the one rule, in ops.conflicts (`conflicts list` and status too)
    conflicts = open_conflict_entries(journal)
    return PlannerView(
        last_version=max(versions) if versions else None,
        cloud_id=cloud_id,
        parked=tuple(w for w in waiting if w.entry.outcome == "parked"),
        held=tuple(w for w in waiting if w.entry.outcome == "held"),
        blocked=tuple(w for w in waiting if w.entry.outcome == "blocked"),
        findings=tuple(findings[:5]),
        dead_lettered=tuple(dead.values()),
        conflicts=tuple(conflicts),
    )


def _about(entity: EntityType, entity_id: str, drift: Drift) -> bool:
    if entity is EntityType.USER:
        return (drift.object_type == "user" and drift.key == entity_id) or (
            drift.object_type == "access" and drift.key.startswith(f"{entity_id}/")
        )
    return drift.object_type == "company" and drift.key == entity_id


def cloud_drift(
    entity: EntityType, directory: DirectoryView, cloud: CloudState
) -> tuple[tuple[Drift, ...], tuple[str, ...]]:
    """The differences verify would report for this entity (and, for a user, its access), and
    the user's access entries an administrator assigned in the cloud (kept, never drift)."""
    entity_id = directory.entity_id or directory.key
    users = {entity_id: directory.state} if isinstance(directory.state, UserState) else {}
    companies = {entity_id: directory.state} if isinstance(directory.state, CompanyState) else {}
    rejected = frozenset({entity_id}) if directory.rejected else frozenset()
    side = DirectoryState(
        directory.position,
        users,
        companies,
        {},
        {},
        rejected if entity is EntityType.USER else frozenset(),
        rejected if entity is EntityType.COMPANY else frozenset(),
    )
    report = compare(side, cloud)
    mine = tuple(e for e in report.cloud_origin if e.startswith(f"{entity_id}/"))
    return tuple(d for d in report.drifts if _about(entity, entity_id, d)), mine


@dataclass(frozen=True)
class Explanation:
    entity: EntityType
    directory: DirectoryView
    planner: PlannerView
    cloud: CloudState
    drift: tuple[Drift, ...]
    cloud_origin: tuple[str, ...]  # "<user>/<company>: service/kind/name" assigned in the cloud
    journal: tuple[JournalEntry, ...]  # newest first
    now: float
    # operations of other entities that wait for this one (a company's users' assignments)
    dependents: tuple[WaitingOperation, ...] = ()
    dependents_total: int = 0

    def cloud_object(self) -> Mapping[str, Any] | None:
        objects = self.cloud.users if self.entity is EntityType.USER else self.cloud.companies
        return objects[0] if objects else None

    def reasons(self) -> list[str]:
        """What it waits for, or what is wrong: empty when the cloud holds what the directory says."""
        now = self.now
        out: list[str] = []
        d = self.directory
        if d.entity_id is None:
            out.append(f"the directory store holds no {self.entity.value} {d.key!r}")
        elif d.rejected:
            out.append(f"capture rejects it (see `vudsync dlq list`): {d.rejected}")
        for w in self.planner.parked:
            out.append(
                f"{w.entry.kind} parked for {format_age(w.age(now))}, waiting for {', '.join(w.waiting_for)}"
            )
        for w in self.planner.held:
            out.append(f"{w.entry.kind} held for {format_age(w.age(now))}: `vudsync deletes list`")
        for w in self.planner.blocked:
            out.append(
                f"{w.entry.kind} blocked for {format_age(w.age(now))}, waiting for {', '.join(w.waiting_for)}"
            )
        for e in self.planner.dead_lettered:
            out.append(f"{e.kind} dead-lettered: {e.reason or '?'} (`vudsync dlq list`)")
        for e in self.planner.conflicts:
            out.append(
                f"{e.kind} not applied, a conflict: {e.details.get('conflict') or e.reason or '?'} "
                f"(cloud object {e.details.get('cloud_id') or '?'}): the sink takes nothing over; resolve it "
                "in the cloud, the operation is judged again"
            )
        if self.dependents_total:
            oldest = format_age(self.dependents[0].age(now)) if self.dependents else "?"
            n = self.dependents_total
            out.append(f"{n} operation(s) of other entities wait for it (the oldest for {oldest})")
        if self.drift and not out:
            out.append(
                f"the cloud differs in {len(self.drift)} place(s) and nothing waits: in flight, or changed "
                "in the cloud (`vudsync verify`)"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        d, p = self.directory, self.planner
        state = d.state.model_dump(mode="json") if d.state is not None else None
        return {
            "entity": self.entity.value,
            "key": d.key,
            "entity_id": d.entity_id,
            "waiting": bool(self.reasons()),
            "reasons": self.reasons(),
            "directory": {"state": state, "rejected": d.rejected, "store_position": d.position},
            "planner": {
                "last_version": p.last_version,
                "cloud_id": p.cloud_id,
                "parked": [w.as_dict(self.now) for w in p.parked],
                "held": [w.as_dict(self.now) for w in p.held],
                "blocked": [w.as_dict(self.now) for w in p.blocked],
                "findings": [e.as_dict() for e in p.findings],
                "dead_lettered": [e.as_dict() for e in p.dead_lettered],
                "conflicts": [e.as_dict() for e in p.conflicts],
            },
            "cloud": {
                "object": dict(self.cloud_object() or {}) or None,
                "access": {k: list(v) for k, v in self.cloud.access.items()},
                "in_sync": not self.drift,
                "drift": [x.as_dict() for x in self.drift],
                "cloud_origin_entries": list(self.cloud_origin),
            },
            "waiting_for_it": {
                "total": self.dependents_total,
                "oldest": [w.as_dict(self.now) for w in self.dependents],
            },
            "journal": [e.as_dict() for e in self.journal],
        }


def explain(
    entity: EntityType,
    directory: DirectoryView,
    journal: Sequence[JournalEntry],
    waiting: Sequence[WaitingOperation],
    cloud: CloudState,
    now: float,
    shown: int = 10,
    dependents: tuple[Sequence[WaitingOperation], int] = ((), 0),
) -> Explanation:
    drift, cloud_origin = cloud_drift(entity, directory, cloud)
    return Explanation(
        entity,
        directory,
        planner_view(entity, journal, waiting),
        cloud,
        drift,
        cloud_origin,
        tuple(journal[:shown]),
        now,
        tuple(dependents[0]),
        dependents[1],
    )


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _state_lines(state: UserState | CompanyState) -> list[str]:
    if isinstance(state, UserState):
        lines = [f"    {state.first_name} {state.last_name} <{state.email}> active={state.active}"]
        for a in state.access:
            services = ", ".join(sorted(s.value for s in a.services))
            lines.append(f"    access in company {a.company_id}: {services or '(none)'}")
        return lines
    return [f"    {state.name} org.no {state.organisation_number} {state.country} {state.status}"]


def render(x: Explanation) -> list[str]:
    """The explanation as lines of text."""
    d, p = x.directory, x.planner
    reasons = x.reasons()
    name = f"{x.entity.value} {d.entity_id or d.key}"
    head = f"{name}: " + ("in sync with the cloud" if not reasons else f"{len(reasons)} thing(s) to see")
    lines = [head] + [f"  ! {r}" for r in reasons]
    lines += ["", f"directory (store position {d.position})"]
    if d.entity_id is None:
        lines.append("    not in the store")
    elif d.state is None:
        lines.append(f"    rejected by capture: {d.rejected}")
    else:
        lines += _state_lines(d.state)
    lines += ["", "planner (from its results in the journal)"]
    version = f"v{p.last_version}" if p.last_version is not None else "nothing planned yet"
    lines.append(f"    last version planned  {version}")
    lines.append(f"    cloud id known        {p.cloud_id or 'no'}")
    for w in (*p.parked, *p.blocked, *p.held):
        lines.append(
            f"    {w.entry.outcome:<8} {w.entry.kind:<16} since {_when(w.since)} ({format_age(w.age(x.now))})"
            f"  waits for {', '.join(w.waiting_for)}"
        )
    for e in p.findings:
        lines.append(f"    {e.outcome:<8} {e.kind:<16} {e.reason or ''}")
    for e in p.dead_lettered:
        lines.append(f"    dead-lettered {e.kind} {e.reason or ''}")
    for e in p.conflicts:
        lines.append(f"    conflict {e.kind:<16} {e.details.get('conflict') or e.reason or ''}")
    if not (p.parked or p.held or p.blocked or p.dead_lettered or p.conflicts):
        lines.append("    nothing parked, held, blocked, dead-lettered or in conflict")
    lines += ["", "cloud"]
    obj = x.cloud_object()
    if obj is None:
        lines.append("    not in the cloud (no object with this external id)")
    else:
        lines.append(
            f"    {obj.get('id')}  " + ", ".join(f"{k}={obj.get(k)}" for k in _CLOUD_FIELDS if k in obj)
        )
        for items in x.cloud.access.values():
            for a in items:
                services = ", ".join(sorted(a.get("services") or {})) or "(none)"
                lines.append(f"    access in cloud company {a.get('company_id')}: {services}")
    if x.drift:
        for drift in x.drift:
            fields = "; ".join(f"{f.field}: {f.directory!r} ≠ {f.cloud!r}" for f in drift.fields)
            lines.append(
                f"    ≠ {drift.object_type} {drift.key} {drift.kind.value} {fields or drift.note}".rstrip()
            )
    else:
        lines.append("    = agrees with the directory")
    for entry in x.cloud_origin:
        lines.append(f"    + {entry} (assigned in the cloud: kept, not the directory's)")
    if x.dependents_total:
        lines += ["", f"waiting for it: {x.dependents_total} operation(s) of other entities (oldest first)"]
        for w in x.dependents:
            e = w.entry
            lines.append(f"    {e.kind:<16} {e.entity}:{e.entity_id} for {format_age(w.age(x.now))}")
    lines += ["", f"journal (newest {len(x.journal)})"]
    for e in reversed(x.journal):
        extra = e.reason or e.effect or ""
        lines.append(f"    {_when(e.time)}  {e.outcome:<15} {e.kind or '':<24} v{e.source_version}  {extra}")
    if not x.journal:
        lines.append("    no entries")
    return lines


_CLOUD_FIELDS = ("external_id", "email", "name", "organisation_number", "active", "status")
