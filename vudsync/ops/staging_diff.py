"""What is staged, and what it would change in the cloud. Pure.

The planner in staging mode (:mod:`processors.staging`) keeps what it would send on the one
partition of ``vud.cloud.operations.staged``. What is staged *now* is what follows the staging
mark (the committed offset of the group ``vudsync-staging``, which ``promote`` and ``discard``
move past what they settled). :class:`Staged` is that listing; :func:`diff` compares it with
the cloud as the cloud's API returns it (:class:`vudsync.ops.drift.CloudState`) and groups each
operation by the change it would make — so a staged user upsert for a user the cloud already
holds identically is *no change*.

What is shown is one entry per operation id (a later record of the same id — an assignment
staged while waiting, then ready after a promotion — replaces the earlier one) and, per slot
(:func:`schemas.operations.version_slot`), the newest plan only: an older version the sink
would supersede anyway changes nothing. Bounds are offsets: ``--up-to N`` names the highest
offset a listing showed, and :meth:`Staged.up_to` gives exactly what that listing showed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from processors.deletions import is_destructive
from schemas import operations
from schemas.operations import StagedOperation, version_slot
from sinks.writes import company_fields, user_fields
from vudsync.ops.drift import CloudState, directory_part, services_from_state


class Change(StrEnum):
    """What one staged operation would do to the cloud, in the order the diff lists them."""

    CREATION = "creations"
    LINK = "links"  # an existing cloud user / company (same e-mail / organisation number)
    UPDATE = "updates"
    DEACTIVATION = "deactivations"
    ASSIGNMENT = "assignments"
    REVOKE = "revokes"
    CATALOGUE = "catalogue"
    REGISTRATION = "registrations"
    NO_CHANGE = "no change"


@dataclass(frozen=True)
class StagedRecord:
    offset: int
    staged: StagedOperation

    @property
    def operation(self) -> operations.CloudOperation:
        return self.staged.operation


@dataclass(frozen=True)
class Staged:
    """The records after the staging mark, in offset order (``mark``: the first offset not yet
    settled; ``end``: the topic's end offset when read)."""

    mark: int
    end: int
    records: tuple[StagedRecord, ...] = ()

    @property
    def high_water(self) -> int | None:
        """The highest offset listed: ``promote --up-to`` this settles exactly this listing."""
        return self.records[-1].offset if self.records else None

    def up_to(self, offset: int) -> Staged:
        """What a listing whose highest offset was ``offset`` showed."""
        return Staged(
            self.mark, min(self.end, offset + 1), tuple(r for r in self.records if r.offset <= offset)
        )

    def shown(self) -> list[StagedRecord]:
        """One entry per operation id (its latest record) and per slot (the newest version),
        in the order of their latest records."""
        latest: dict[str, StagedRecord] = {}
        for r in self.records:
            latest.pop(r.operation.operation_id, None)
            latest[r.operation.operation_id] = r
        newest: dict[str, StagedRecord] = {}
        for r in latest.values():
            slot = _slot(r.operation)
            seen = newest.get(slot)
            if seen is None or r.operation.source_version >= seen.operation.source_version:
                newest[slot] = r
        kept = {id(r) for r in newest.values()}
        return [r for r in latest.values() if id(r) in kept]


def _slot(op: operations.CloudOperation) -> str:
    # the blocked applications' partial assignment shares its slot's version: keep both apart
    keep = (
        f"|keep:{','.join(a.value for a in op.keep)}"
        if isinstance(op, operations.AssignAccess) and op.keep
        else ""
    )
    return version_slot(op) + keep


@dataclass(frozen=True)
class Entry:
    offset: int
    change: Change
    kind: str
    aggregate: str
    operation_id: str
    source_version: int
    detail: str = ""
    waiting_for: tuple[str, ...] = ()
    destructive: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "change": self.change.value,
            "kind": self.kind,
            "aggregate": self.aggregate,
            "operation_id": self.operation_id,
            "source_version": self.source_version,
            "detail": self.detail,
            "waiting_for": list(self.waiting_for),
            "destructive": self.destructive,
        }


@dataclass(frozen=True)
class Diff:
    """A listing compared with the cloud: every shown entry, grouped by change."""

    entries: tuple[Entry, ...]
    mark: int
    high_water: int | None
    records: int  # records in the listing (before one per operation id and slot)
    groups: Mapping[Change, tuple[Entry, ...]] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        """Entries that would change the cloud (everything but *no change*)."""
        return sum(len(v) for k, v in self.groups.items() if k is not Change.NO_CHANGE)

    @property
    def waiting(self) -> int:
        return sum(1 for e in self.entries if e.waiting_for)

    @property
    def destructive(self) -> int:
        """Deactivations, revokes and removals shown (no change or not): the number
        ``promote --approve-deletions`` names when they pass the threshold."""
        return sum(1 for e in self.entries if e.destructive)

    def counts(self) -> dict[str, int]:
        return {c.value: len(self.groups[c]) for c in Change if self.groups.get(c)}

    def as_dict(self, first: int | None) -> dict[str, Any]:
        return {
            "staged_records": self.records,
            "operations": len(self.entries),
            "changes": self.changes,
            "waiting": self.waiting,
            "deletions": self.destructive,
            "counts": self.counts(),
            "from_offset": self.mark,
            "up_to": self.high_water,
            "groups": {
                c.value: [e.as_dict() for e in (self.groups[c] if first is None else self.groups[c][:first])]
                for c in Change
                if self.groups.get(c)
            },
        }


class _Cloud:
    """The cloud state indexed as the comparisons read it."""

    def __init__(self, cloud: CloudState) -> None:
        self.users = {u["external_id"]: u for u in cloud.users if u.get("external_id")}
        self.user_emails = {str(u.get("email", "")).casefold(): u for u in cloud.users}
        self.companies = {c["external_id"]: c for c in cloud.companies if c.get("external_id")}
        self.company_orgs = {c.get("organisation_number"): c for c in cloud.companies}
        self.company_ext = {c["id"]: c.get("external_id") for c in cloud.companies}
        self.access = cloud.access
        self.catalogue = cloud.catalogue
        self.instances = cloud.instances

    def access_of(self, user_id: str, company_id: str) -> Mapping[str, Any] | None:
        user = self.users.get(user_id)
        if user is None:
            return None
        for item in self.access.get(user["id"], ()):
            if self.company_ext.get(item.get("company_id")) == company_id:
                return item
        return None


def _differing(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """The fields the sink writes (``sinks.writes``) whose value differs in the cloud (None and
    "" alike)."""
    return [
        name
        for name, value in ours.items()
        if (value if value is not None else "") != (theirs.get(name) or "")
    ]


def _user(op: operations.UpsertUser, cloud: _Cloud) -> tuple[Change, str]:
    found = cloud.users.get(op.entity_id)
    if found is None:
        by_email = cloud.user_emails.get(op.email.casefold())
        if by_email is None:
            return Change.CREATION, f"{op.email}" + ("" if op.active else " (inactive)")
        if by_email.get("external_id"):
            return Change.LINK, f"{op.email}: cloud user linked to {by_email['external_id']} already"
        return Change.LINK, f"{op.email}: existing cloud user {by_email['id']}"
    active = bool(found.get("active", True))
    if active and not op.active:
        return Change.DEACTIVATION, f"{op.email} (set inactive on premise)"
    diffs = _differing(user_fields(op), found)
    if op.active != active:
        diffs.append("active")
    return (Change.UPDATE, ", ".join(diffs)) if diffs else (Change.NO_CHANGE, op.email)


def _company(op: operations.UpsertCompany, cloud: _Cloud) -> tuple[Change, str]:
    found = cloud.companies.get(op.entity_id)
    if found is None:
        by_org = cloud.company_orgs.get(op.organisation_number)
        if by_org is None:
            return Change.CREATION, f"{op.name} ({op.organisation_number})"
        return Change.LINK, f"{op.name}: existing cloud company {by_org['id']} ({op.organisation_number})"
    if op.status == "inactive" and found.get("status") == "active":
        return Change.DEACTIVATION, f"{op.name} (inactive on premise)"
    diffs = _differing(company_fields(op), found)
    return (Change.UPDATE, ", ".join(diffs)) if diffs else (Change.NO_CHANGE, op.name)


def _assign(op: operations.AssignAccess, cloud: _Cloud) -> tuple[Change, str]:
    where = f"{op.user_id} in {op.company_id}"
    item = cloud.access_of(op.user_id, op.company_id)
    if item is None:
        return Change.ASSIGNMENT, where
    theirs, _ = directory_part(item)
    ours = services_from_state(op.services)
    for app in op.keep:
        theirs.pop(app.value, None)
    return (Change.NO_CHANGE, where) if ours == theirs else (Change.ASSIGNMENT, f"{where} (changed)")


def classify(op: operations.CloudOperation, cloud: _Cloud) -> tuple[Change, str]:
    """What ``op`` would change in ``cloud``, with a short detail."""
    if isinstance(op, operations.UpsertUser):
        return _user(op, cloud)
    if isinstance(op, operations.UpsertCompany):
        return _company(op, cloud)
    if isinstance(op, operations.DeactivateUser):
        found = cloud.users.get(op.entity_id)
        if found is None or not found.get("active", True):
            return Change.NO_CHANGE, f"{op.email} (not in the cloud, or inactive)"
        return Change.DEACTIVATION, op.email
    if isinstance(op, operations.AssignAccess):
        return _assign(op, cloud)
    if isinstance(op, operations.RevokeAccess):
        where = f"{op.user_id} in {op.company_id}"
        return (
            Change.NO_CHANGE if cloud.access_of(op.user_id, op.company_id) is None else Change.REVOKE
        ), where
    if isinstance(op, operations.UpsertCatalogueEntry | operations.RemoveCatalogueEntry):
        key = (op.application.value, op.catalogue, op.name)
        name = "/".join(key)
        if isinstance(op, operations.RemoveCatalogueEntry):
            return (
                (Change.CATALOGUE, f"remove {name}") if key in cloud.catalogue else (Change.NO_CHANGE, name)
            )
        if key in cloud.catalogue and (cloud.catalogue[key] or "") == op.description:
            return Change.NO_CHANGE, name
        return Change.CATALOGUE, name
    assert isinstance(op, operations.RegisterApplicationInstance)
    seen = cloud.instances.get(op.application.value)
    if seen and seen.get("uri") == op.uri and seen.get("license_fingerprint") == op.license_fingerprint:
        return Change.NO_CHANGE, op.application.value
    return Change.REGISTRATION, f"{op.application.value} {op.uri}"


def _waiting_detail(waiting_for: Sequence[str], creations: set[str]) -> str:
    return "waits for " + ", ".join(
        f"{need} (would be created)" if need in creations else need for need in waiting_for
    )


def diff(staged: Staged, cloud: CloudState) -> Diff:
    """Compare what ``staged`` shows with ``cloud``; entries grouped by :class:`Change`, each
    group in staged order."""
    index = _Cloud(cloud)
    shown = staged.shown()
    entries: list[Entry] = []
    for r in shown:
        op = r.operation
        change, detail = classify(op, index)
        entries.append(
            Entry(
                r.offset,
                change,
                op.kind,
                op.aggregate,
                op.operation_id,
                op.source_version,
                detail,
                r.staged.waiting_for,
                is_destructive(op),
            )
        )
    # what a waiting entry waits for that a staged entry would create: said so
    creations = {
        _need_met_by(r.operation)
        for r, e in zip(shown, entries, strict=True)
        if e.change in (Change.CREATION, Change.LINK)
        or isinstance(r.operation, operations.UpsertCatalogueEntry)
    }
    entries = [
        e if not e.waiting_for else _with_detail(e, _waiting_detail(e.waiting_for, creations))
        for e in entries
    ]
    groups: dict[Change, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.change, []).append(e)
    return Diff(
        tuple(entries),
        staged.mark,
        staged.high_water,
        len(staged.records),
        {c: tuple(groups[c]) for c in Change if c in groups},
    )


def _need_met_by(op: operations.CloudOperation) -> str:
    """The need (:mod:`processors.needs`, encoded) whose fact the result of ``op`` gives."""
    if isinstance(op, operations.UpsertCatalogueEntry):
        return f"catalogue:{op.application.value}:{op.catalogue}:{op.name}"
    return op.aggregate  # user:<id>, company:<id>


def _with_detail(e: Entry, more: str) -> Entry:
    return Entry(
        e.offset,
        e.change,
        e.kind,
        e.aggregate,
        e.operation_id,
        e.source_version,
        f"{e.detail}; {more}" if e.detail else more,
        e.waiting_for,
        e.destructive,
    )


# -- promote -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Promotion:
    """What ``promote --up-to`` applies: the shown operations ready now (in staged order), and
    the shown ones still waiting for what those create (applied when the planner stages them
    again, ready), by operation id."""

    ready: tuple[operations.CloudOperation, ...]
    waiting: Mapping[str, tuple[str, ...]]  # operation id -> what it waits for
    destructive: int  # deactivations, revokes, removals among them (the gate's count)

    @property
    def total(self) -> int:
        return len(self.ready) + len(self.waiting)


def promotion(staged: Staged) -> Promotion:
    shown = staged.shown()
    ready = tuple(r.operation for r in shown if not r.staged.waiting_for)
    waiting = {r.operation.operation_id: r.staged.waiting_for for r in shown if r.staged.waiting_for}
    destructive = sum(1 for r in shown if is_destructive(r.operation))
    return Promotion(ready, waiting, destructive)


def settled_through(mark: int, after: Sequence[StagedRecord], promoted: set[str]) -> int:
    """The new staging mark after a promotion: past every record from ``mark`` on that only
    repeats an operation the promotion applied (the assignments the planner staged again once
    their user was created), up to the first one that is anything else."""
    for r in after:
        if r.offset < mark:
            continue
        if r.operation.operation_id not in promoted:
            break
        mark = r.offset + 1
    return mark
