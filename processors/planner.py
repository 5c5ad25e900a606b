"""The planner: pure reconciliation of directory events into cloud operations.

``plan(previous, event, identities, settings, now=…)`` → :class:`~processors.model.Plan`: the
new table value, the operations to send now, the operations parked until their needs are met,
journal entries. No I/O, no clock, no Faust: the same input always plans the same operations
with the same ids (a replay plans the same ids again, and the sink's ledger and the cloud's
idempotency keys make them no-ops).

Rules (docs/domain.md):

- *versions*: an event whose version is not newer than the one seen is ``stale``, a no-op, so
  an older event never overwrites newer state;
- *users*: upsert — the sink matches by known cloud id, then by e-mail case-insensitively, then
  creates; removal on premise deactivates (never deletes); a later create re-activates;
- *companies*: upsert — the sink updates a linked company, else links to the cloud company
  with the same normalised organisation number (a "review" journal entry follows from its
  result when details differ), else creates; never two cloud companies for one company;
- *catalogues*: roles, layout groups and modules are published per service (application);
- *access*: the diff of a user's access per company becomes assign / revoke operations;
- *prerequisites*: an operation is sent only when its needs (:mod:`processors.needs`) are met,
  else parked: cloud ids of user and company, the catalogue entries it names, an application
  instance that matches the cloud's registry;
- *deletions* wait for the accidental-delete gate (:mod:`processors.deletions`): every
  destructive operation (:func:`~processors.deletions.is_destructive`) of an entity seen before —
  a removal on premise (op ``d``), a user set inactive, access revoked, a company set inactive —
  so that a mass deactivation by ``active = false`` or a mass revocation is held like a mass
  deletion;
- *application instances*: one per type; an instance event is published to every partition as
  a fact, and each partition judges the application with :func:`instance_verdict`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from processors.deletions import is_destructive
from processors.model import (
    ACCESS_OPS,
    DIRECTORY_OPERATIONS,
    Decision,
    DeletionRequest,
    EntityView,
    Identities,
    InstanceSeen,
    JournalEntry,
    Outcome,
    Parked,
    Plan,
    Planned,
    PlannerSettings,
    Registry,
    Verdict,
    VerdictStatus,
)
from processors.needs import Need, NeedKind
from processors.writeback import Change, entry_key, winner
from schemas.directory import (
    ApplicationInstanceState,
    ApplicationType,
    CompanyAccess,
    EntityType,
    ModuleState,
    ServiceAccess,
    UserState,
)
from schemas.directory_operations import GrantDirectoryAccess
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
    RevokeAccessEntry,
    UpsertCatalogueEntry,
    UpsertCompany,
    UpsertUser,
    operation_id_for,
)

_CATALOGUE = {
    EntityType.ROLE: "roles",
    EntityType.LAYOUT_GROUP: "layout_groups",
    EntityType.MODULE: "modules",
}
_KINDS = ("roles", "layout_groups", "modules")
# isinstance() against a tuple: ``A | B`` builds a union object at every call (and model.ACCESS_OPS)
_UPSERTS = (UpsertUser, UpsertCompany)
_CATALOGUE_OPS = (UpsertCatalogueEntry, RemoveCatalogueEntry)
_OP_KIND: dict[type[Any], str] = {}


def plan(
    previous: EntityView | None,
    event: DirectoryEvent,
    identities: Identities,
    settings: PlannerSettings,
    *,
    now: datetime,
    behind_upsert: bool = True,
) -> Plan:
    """Reconcile one directory event against the state seen before it. ``settings``: only
    ``staging`` counts here (the gate's thresholds live in :mod:`processors.deletions`).

    ``behind_upsert``: a user's assignments planned with its upsert, which goes now, go right
    behind it without waiting for the user's cloud id (:class:`_Router`) — not when staging
    (nothing is sent), nor when the caller may drop the upsert from this plan (a redelivery
    re-planned without the slots a later version planned: :mod:`processors.directory`)."""
    if previous is not None and event.version <= previous.version:
        return Plan(Outcome.STALE, None)
    view = EntityView(event.version, event.state, deleted=event.op is Op.DELETE)
    if isinstance(event, UserChanged):
        behind = behind_upsert and not settings.staging
        return _plan_user(previous, event, identities, now, view, behind_upsert=behind)
    if isinstance(event, CompanyChanged):
        return _plan_company(previous, event, identities, now, view)
    if isinstance(event, RoleChanged | LayoutGroupChanged | ModuleChanged):
        return _plan_catalogue(previous, event, identities, now, view)
    if isinstance(event, ApplicationInstanceChanged):
        return _plan_instance(previous, event, view)
    raise TypeError(f"no planning rule for {type(event).__name__}")


# -- building operations --------------------------------------------------------------------


def _op(
    cls: type[Any],
    event: DirectoryEvent,
    now: datetime,
    discriminator: str = "",
    *,
    id_version: int | None = None,
    **fields: Any,
) -> Any:
    """An operation of ``event``, validated. Straight through pydantic-core's validator:
    ``cls(**fields)`` without ``BaseModel.__init__``'s Python frame and second keyword
    packing. (``model_construct`` and a hand-made unvalidated constructor were measured: no
    cheaper than pydantic-core's validation of a dozen fields, which is C.) ``id_version``:
    the version its id is derived from, when not the event's (repairs: :mod:`processors.repair`)."""
    kind = _OP_KIND.get(cls)
    if kind is None:
        kind = _OP_KIND[cls] = cls.model_fields["kind"].default
    fields["operation_id"] = operation_id_for(
        kind, event.entity_id, event.version if id_version is None else id_version, discriminator
    )
    fields["aggregate"] = f"{event.entity._value_}:{event.entity_id}"  # _value_: no enum property call
    fields["entity"] = event.entity
    fields["entity_id"] = event.entity_id
    fields["source_version"] = event.version
    fields["source_committed_at"] = event.source.committed_at
    fields["planned_at"] = now
    return cls.__pydantic_validator__.validate_python(fields)


def _candidate(event: DirectoryEvent) -> DeletionRequest:
    return DeletionRequest(
        candidate=f"{event.entity.value}:{event.entity_id}:{event.version}",
        entity=event.entity,
        entity_id=event.entity_id,
        version=event.version,
        committed_at=event.source.committed_at,
    )


# -- needs ------------------------------------------------------------------------------------


def needs_of(
    op: Planned,
    ids: Identities,
    apps: Iterable[ApplicationType] = (),
    deletion: str | None = None,
    *,
    behind: bool = False,
) -> tuple[Need, ...] | None:
    """The unmet needs of ``op`` (empty: it may go now); None when a rejected deletion drops it.

    Before ``vudsync connect`` has succeeded every operation waits for it (``connect``); an
    assignment of access to a company waiting for review waits for the review (``review``).
    ``behind``: ``op`` is an assignment sent behind its user's upsert (:class:`_Router`): it
    does not wait for the user's cloud id — the sink applies one aggregate's operations in
    order and finds the user by its external id (``sinks.writes.resolves_user``)."""
    if not ids.connected:
        rest = _needs_of(op, ids, apps, deletion, behind)
        return None if rest is None else (Need.connect(), *rest)
    return _needs_of(op, ids, apps, deletion, behind)


def _needs_of(
    op: Planned, ids: Identities, apps: Iterable[ApplicationType], deletion: str | None, behind: bool
) -> tuple[Need, ...] | None:
    if deletion is None and not apps and isinstance(op, _UPSERTS):
        return ()  # the common case, first
    needs: list[Need] = []
    if deletion is not None:
        decision = ids.deletions.get(deletion)
        if decision is Decision.REJECTED:
            return None
        if decision is None:
            needs.append(Need.deletion(deletion))
    if isinstance(op, ACCESS_OPS):
        if op.user_id not in ids.users and not (behind and isinstance(op, AssignAccess)):
            needs.append(Need.user(op.user_id))
        if op.company_id not in ids.companies:
            needs.append(Need.company(op.company_id))
    if isinstance(op, AssignAccess):
        if op.services and ids.reviews.get(op.company_id, False):  # activates services there
            needs.append(Need.review(op.company_id))
        catalogue = ids.catalogue
        for app, svc in sorted(op.services.items()):
            for kind, names in (
                ("roles", svc.roles),
                ("layout_groups", svc.layout_groups),
                ("modules", svc.modules),
            ):
                for name in names:
                    if not catalogue.get(f"{app._value_}:{kind}:{name}", False):
                        needs.append(Need.catalogue(app, kind, name))
    if isinstance(op, _CATALOGUE_OPS):
        apps = (*apps, op.application)
    for app in sorted(set(apps)):
        if ids.verdict(app).blocked:
            needs.append(Need.application(app))
    return tuple(needs)


def with_cloud_ids(op: CloudOperation, ids: Identities, *, behind: bool = False) -> CloudOperation:
    """``op`` with the cloud ids of its user and company filled in (access operations).
    ``behind`` (an assignment behind its user's upsert, :func:`needs_of`): the user's id only
    if known, else the sink finds it."""
    if isinstance(op, ACCESS_OPS) and (op.cloud_user_id is None or op.cloud_company_id is None):
        user = ids.users.get(op.user_id) if behind else ids.users[op.user_id]
        return op.model_copy(update={"cloud_user_id": user, "cloud_company_id": ids.companies[op.company_id]})
    return op


def settle(parked: Parked, ids: Identities) -> tuple[str, Planned | tuple[Need, ...] | None]:
    """Decide a parked operation again: ``("send", op)`` with its cloud ids filled in,
    ``("wait", needs)`` with the needs still unmet, or ``("drop", None)`` (rejected deletion)."""
    needs = needs_of(parked.operation, ids, parked.apps, parked.deletion, behind=parked.behind)
    if needs is None:
        return "drop", None
    if needs:
        return "wait", needs
    op = parked.operation
    if isinstance(op, DIRECTORY_OPERATIONS):
        return "send", op
    return "send", with_cloud_ids(op, ids, behind=parked.behind)


class _Router:
    """Sorts the operations of one plan into sent now, parked, and dropped. With a gate
    candidate (``deletion``), its destructive operations wait for the gate's decision."""

    def __init__(
        self,
        ids: Identities,
        gated: DirectoryEvent | None = None,
        request: DeletionRequest | None = None,
        *,
        behind_upsert: bool = False,
    ) -> None:
        self.ids = ids
        # a user's assignments routed after its upsert went: they go behind it, on the user's
        # aggregate, without waiting for its cloud id (needs_of, behind); off in staging mode,
        # where nothing goes to the sink (processors.staging)
        self._behind_upsert = behind_upsert
        self._upsert_sent: str | None = None
        self._gated = gated  # the event whose destructive operations are a gate candidate
        self._request = request  # its candidate, when not the event's own (repairs)
        self.deletion: DeletionRequest | None = None  # built once one is routed (hot path)
        self.send: list[CloudOperation] = []
        self.parked: list[Parked] = []
        self.dropped: list[CloudOperation] = []

    def route(self, op: CloudOperation, apps: Iterable[ApplicationType] = (), tag: str = "") -> None:
        apps = tuple(sorted(set(apps))) if apps else ()
        candidate = None
        if self._gated is not None and is_destructive(op):
            if self.deletion is None:
                self.deletion = self._request or _candidate(self._gated)
            candidate = self.deletion.candidate
        behind = isinstance(op, AssignAccess) and op.user_id == self._upsert_sent
        needs = needs_of(op, self.ids, apps, candidate, behind=behind)
        if needs is None:
            self.dropped.append(op)
        elif needs:
            self.parked.append(Parked(op, needs, apps, candidate, tag, behind))
        else:
            self.send.append(with_cloud_ids(op, self.ids, behind=behind))
            if self._behind_upsert and isinstance(op, UpsertUser):
                self._upsert_sent = op.entity_id

    def plan(self, view: EntityView, journal: tuple[JournalEntry, ...] = ()) -> Plan:
        if self.send:
            outcome = Outcome.PLANNED
        elif any(n.kind is NeedKind.DELETION for p in self.parked for n in p.needs):
            outcome = Outcome.HELD
        elif self.parked:
            blocked = all(any(n.blocks for n in p.needs) for p in self.parked)
            outcome = Outcome.BLOCKED if blocked else Outcome.PARKED
        else:
            outcome = Outcome.NO_CHANGE
        waiting_gate = self.deletion if any(p.deletion for p in self.parked) else None
        return Plan(
            outcome,
            view,
            tuple(self.send),
            tuple(self.parked),
            journal,
            deletion=waiting_gate,
            dropped=tuple(self.dropped),
        )


# -- users ----------------------------------------------------------------------------------


def _user_fields(state: UserState) -> tuple[object, ...]:
    return (
        state.username,
        state.email,
        state.first_name,
        state.last_name,
        state.language,
        state.active,
    )


def _access_map(state: UserState | None) -> dict[str, CompanyAccess]:
    """The user's access per company, the directory's own only: entries of origin cloud
    (``cloud_origin``) are the cloud's already and never sent as the directory's, so a
    company that holds only those is no access of the directory's (issue 16: a writeback
    into the store causes no cloud write)."""
    if state is None:
        return {}
    return {
        a.company_id: a if not a.cloud_origin else a.model_copy(update={"cloud_origin": {}})
        for a in state.access
        if not a.cloud_origin or any(not svc.is_empty() for svc in a.services.values())
    }


def _plan_user(
    previous: EntityView | None,
    event: UserChanged,
    ids: Identities,
    now: datetime,
    view: EntityView,
    *,
    behind_upsert: bool = False,
) -> Plan:
    state = event.state
    before = previous.state if previous is not None and not previous.deleted else None
    assert before is None or isinstance(before, UserState)
    old_access = _access_map(before)

    if event.op is Op.DELETE:  # the cloud's entries (origin cloud) stay with the deactivated user
        if previous is not None and previous.deleted:
            return Plan(Outcome.NO_CHANGE, view)
        router = _Router(ids, event)
        router.route(
            _op(DeactivateUser, event, now, cloud_id=ids.users.get(event.entity_id), email=state.email)
        )
        # access goes with the user: revoke what was assigned
        for company_id, held in sorted(old_access.items()):
            router.route(_revoke(event, now, company_id, ids), held.services)
        return router.plan(view)

    # a user seen before that becomes (or stays) inactive, or loses access: the gate counts it
    router = _Router(ids, event if previous is not None else None, behind_upsert=behind_upsert)
    cloud_user_id = ids.users.get(event.entity_id)  # read once: every operation names it
    if before is None or _user_fields(before) != _user_fields(state):
        router.route(
            _op(
                UpsertUser,
                event,
                now,
                cloud_id=cloud_user_id,
                username=state.username,
                email=state.email,
                first_name=state.first_name,
                last_name=state.last_name,
                language=state.language,
                active=state.active,
            )
        )
    new_access = _access_map(state)
    for company_id in sorted(old_access.keys() | new_access.keys()):
        old, new = old_access.get(company_id), new_access.get(company_id)
        if old == new:
            continue
        touched = (*(old.services if old else ()), *(new.services if new else ()))
        services = {app: svc for app, svc in (new.services.items() if new else ()) if not svc.is_empty()}
        if services:
            op: CloudOperation = _op(
                AssignAccess,
                event,
                now,
                company_id,
                user_id=event.entity_id,
                company_id=company_id,
                cloud_user_id=cloud_user_id,
                cloud_company_id=ids.companies.get(company_id),
                services=services,
            )
        else:
            op = _revoke(event, now, company_id, ids)
        split = without_blocked(op, touched, ids)
        if split is not None:
            partial, going = split
            kept = {
                app: svc
                for app, svc in (old.services.items() if old else ())
                if app not in partial.keep and not svc.is_empty()
            }
            if partial.services != kept:  # something changed outside the blocked applications
                router.route(partial, going)
        router.route(op, touched)
    folded = _folded_removals(before, event, ids) if before is not None else []
    if before is None or not (any(a.cloud_origin for a in before.access) or _tracked(before, ids) or folded):
        return router.plan(view)
    restores, notes = _cloud_entries_removed(before, event, ids, router, now, folded)
    return replace(router.plan(view, notes), directory_ops=restores)


_KIND_OF = {"roles": "role", "layout_groups": "layout_group", "modules": "module"}
_CATALOGUE_OF = {kind: catalogue for catalogue, kind in _KIND_OF.items()}
_APPLICATIONS = frozenset(a.value for a in ApplicationType)


def _tracked(before: UserState, ids: Identities) -> bool:
    """Does the writeback track a pair of this user (a cloud change of it was seen)?"""
    return any(f"{before.id}|{a.company_id}" in ids.writeback for a in before.access)


#: an entry the store no longer holds: (company, origin, application, catalogue, kind, name)
_Removed = tuple[str, str, ApplicationType, str, str, str]


def _folded_removals(before: UserState, event: UserChanged, ids: Identities) -> list[_Removed]:
    """Entries the writeback granted (still on its way in the pair's view: ``pending``) that
    the store held and the directory removed before capture read the grant: one event shows
    neither (a grant and a removal folded), only the entry's own time in the store says it —
    a removal later than the cloud change the grant was written back from. Read only for
    companies in which the event names an entry the user does not hold."""
    held = {a.company_id: a for a in event.state.access} if event.op is not Op.DELETE else {}
    was = {a.company_id: a for a in before.access}
    found: list[_Removed] = []
    pairs: dict[str, Any] = {}  # one look-up per company
    for ref, removed_at in sorted(event.access_changed_at.items()):
        company_id, _, key = ref.partition("|")
        application, kind, name = key.split("/", 2)
        catalogue = _CATALOGUE_OF.get(kind)
        if catalogue is None or application not in _APPLICATIONS:
            continue
        app = ApplicationType(application)
        if _holds(held.get(company_id), app, catalogue, name) or _holds(
            was.get(company_id), app, catalogue, name
        ):
            continue  # held now (a grant's time), or held before (a removal the event shows)
        if company_id not in pairs:
            pairs[company_id] = ids.writeback.get(f"{event.entity_id}|{company_id}")
        pair = pairs[company_id]
        seen = pair.seen.get(key) if pair is not None else None
        if pair is not None and pair.pending.get(key) is True and seen is not None and removed_at > seen:
            found.append((company_id, "cloud", app, catalogue, kind, name))
    return found


def _holds(access: CompanyAccess | None, app: ApplicationType, catalogue: str, name: str) -> bool:
    return access is not None and any(
        name in getattr(part.get(app) or ServiceAccess(), catalogue)
        for part in (access.services, access.cloud_origin)
    )


def _cloud_entries_removed(
    before: UserState,
    event: UserChanged,
    ids: Identities,
    router: _Router,
    now: datetime,
    folded: Iterable[_Removed] = (),
) -> tuple[tuple[GrantDirectoryAccess, ...], tuple[JournalEntry, ...]]:
    """Entries the store held and no longer holds that the cloud holds as the cloud's — of
    origin cloud on premise (written back), or the directory's that an administrator revoked
    and granted again in the cloud (the whole-set writes never remove those): an administrator
    removed them on premise, the directory changed that entry, so it is revoked in the cloud,
    one entry each (``RevokeAccessEntry``, through the gate like every revoke) — unless the
    cloud removed it first (then this is its writeback), or the cloud changed it later than
    this removal (the conflict rule, :mod:`processors.writeback`: the cloud wins, the entry is
    written back again)."""
    restores: list[GrantDirectoryAccess] = []
    notes: list[JournalEntry] = []
    for company_id, origin, app, catalogue, kind, name in (*_removed_entries(before, event), *folded):
        pair = ids.writeback.get(f"{event.entity_id}|{company_id}")
        key = entry_key(app.value, kind, name)
        # the removal's own time in the store, else the event's (rule 6)
        removed_at = event.entry_changed_at(company_id, app.value, kind, name)
        cloud = pair.cloud.get(key) if pair is not None else None
        if origin == "directory" and (cloud is None or cloud.origin != "cloud"):
            continue  # the directory's own entry: its whole-set write removes it
        if cloud is not None and not cloud.present:
            continue  # the cloud removed it: this removal is its writeback
        if pair is not None and pair.pending.get(key) is False:
            continue  # the writeback's revoke, seen now
        side = "directory" if cloud is None else winner(Change(False, removed_at), cloud)
        if cloud is not None and pair is not None and pair.is_unseen(key, cloud):  # changed on both sides
            notes.append(_conflict(event, company_id, key, removed_at, cloud.at, side))
        if side == "cloud":
            assert cloud is not None
            restores.append(_restore(event, company_id, app, kind, name, pair, cloud, now))
            continue
        revoke = _op(
            RevokeAccessEntry,
            event,
            now,
            f"{company_id}|{key}",
            user_id=event.entity_id,
            company_id=company_id,
            cloud_user_id=ids.users.get(event.entity_id),
            cloud_company_id=ids.companies.get(company_id),
            application=app,
            catalogue=catalogue,
            name=name,
            unless_changed_after=removed_at,
        )
        router.route(revoke, (app,))
    return tuple(restores), tuple(notes)


def _removed_entries(before: UserState, event: UserChanged) -> Iterable[_Removed]:
    """The entries ``before`` holds that the event's state does not, with their origin."""
    after = {a.company_id: a for a in event.state.access} if event.op is not Op.DELETE else {}
    for company in before.access:
        now_held = after.get(company.company_id)
        for origin, services in (("cloud", company.cloud_origin), ("directory", company.services)):
            for app, svc in sorted(services.items()):
                for catalogue, kind in _KIND_OF.items():
                    for name in getattr(svc, catalogue):
                        if not _holds(now_held, app, catalogue, name):
                            yield company.company_id, origin, app, catalogue, kind, name


def _conflict(
    event: UserChanged, company_id: str, key: str, removed_at: datetime, granted_at: datetime, side: str
) -> JournalEntry:
    return JournalEntry(
        EntityType.USER,
        event.entity_id,
        "writeback_conflict",
        f"{key} of {company_id}: the directory removed it at {removed_at.isoformat()}, the cloud "
        f"granted it at {granted_at.isoformat()}; the {side} wins (the later change, ties to the directory)",
        "warning",
        event.version,
        removed_at,
        f"{company_id}|{key}",
    )


def _restore(
    event: UserChanged,
    company_id: str,
    app: ApplicationType,
    kind: str,
    name: str,
    pair: Any,
    cloud: Change,
    now: datetime,
) -> GrantDirectoryAccess:
    """The writeback again of an entry the cloud granted later than the directory removed it."""
    key = entry_key(app.value, kind, name)
    return GrantDirectoryAccess(
        operation_id=operation_id_for(
            "directory.access.grant", event.entity_id, event.version, f"{company_id}|{key}|restore"
        ),
        user_id=event.entity_id,
        company_id=company_id,
        application=app,
        entry_kind=kind,  # type: ignore[arg-type]  # one of the store's kinds
        name=name,
        feed_seq=pair.seq,
        cloud_changed_at=cloud.at,
        planned_at=now,
    )


def without_blocked(
    op: Planned, apps: Iterable[ApplicationType], ids: Identities, tag: str = ""
) -> tuple[AssignAccess, tuple[ApplicationType, ...]] | None:
    """The part of one company's access change that may go while some of the applications it
    touches (``apps``) are blocked (their instance does not match the cloud's registry), with
    the applications it touches.

    One assignment carries every application's access, so a blocked application would hold the
    others' too. This assignment carries the unblocked applications' part of ``op`` (an assign
    or a revoke) and ``keep``s the blocked ones' cloud assignments as they are; ``op`` itself
    still waits for the blocked applications and, released, sets everything. Same version and
    a deterministic id: planned and released again, it is the same operation. None: ``op`` is
    no access change, or nothing, or everything it touches is blocked. ``tag`` tells a repair's
    part apart (:mod:`processors.repair`): its id is derived from it and version 0."""
    if not isinstance(op, AssignAccess | RevokeAccess):  # a whole set: one entry goes alone
        return None
    touched = set(apps)
    blocked = {app for app in touched if ids.verdict(app).blocked}
    if not blocked or blocked == touched:
        return None
    keep = tuple(sorted(blocked, key=lambda a: a.value))
    services = (
        {app: svc for app, svc in op.services.items() if app not in blocked}
        if isinstance(op, AssignAccess)
        else {}
    )
    partial = AssignAccess(
        operation_id=operation_id_for(
            "access.assign",
            op.entity_id,
            0 if tag else op.source_version,
            f"{op.company_id}|keep:{','.join(a.value for a in keep)}" + (f"|{tag}" if tag else ""),
        ),
        aggregate=op.aggregate,
        entity=op.entity,
        entity_id=op.entity_id,
        source_version=op.source_version,
        source_committed_at=op.source_committed_at,
        planned_at=op.planned_at,
        user_id=op.user_id,
        company_id=op.company_id,
        cloud_user_id=op.cloud_user_id,
        cloud_company_id=op.cloud_company_id,
        services=services,
        keep=keep,
    )
    return partial, tuple(sorted(touched - blocked, key=lambda a: a.value))


def release_unblocked(parked: Parked, ids: Identities, released: Need) -> CloudOperation | None:
    """A parked access change that still waits for a blocked application, after ``released``
    was met: its unblocked part (:func:`without_blocked`), with cloud ids, when that part may
    go now — e.g. its user became known, or it waited for the registry of an application that
    turned out to match while another does not. None otherwise, and when ``released`` concerns
    a blocked application (the part could go before: it went then)."""
    split = without_blocked(parked.operation, parked.apps, ids, parked.tag)
    if split is None:
        return None
    partial, going = split
    if any(released.subject.split(":", 1)[0] == app.value for app in partial.keep):
        return None
    if needs_of(partial, ids, going, parked.deletion, behind=parked.behind):
        return None
    return with_cloud_ids(partial, ids, behind=parked.behind)


def _revoke(event: UserChanged, now: datetime, company_id: str, ids: Identities) -> RevokeAccess:
    revoke: RevokeAccess = _op(
        RevokeAccess,
        event,
        now,
        company_id,
        user_id=event.entity_id,
        company_id=company_id,
        cloud_user_id=ids.users.get(event.entity_id),
        cloud_company_id=ids.companies.get(company_id),
    )
    return revoke


# -- companies ------------------------------------------------------------------------------


def _plan_company(
    previous: EntityView | None,
    event: CompanyChanged,
    ids: Identities,
    now: datetime,
    view: EntityView,
) -> Plan:
    state = event.state
    before = previous.state if previous is not None and not previous.deleted else None
    # a company seen before set inactive on premise: the gate counts it
    router = _Router(ids, event if previous is not None else None)
    if event.op is Op.DELETE:
        if previous is not None and previous.deleted:
            return Plan(Outcome.NO_CHANGE, view)
        # a company removed on premise is marked inactive in the cloud, never deleted
        state = state.model_copy(update={"status": "inactive"})
        router = _Router(ids, event)
    elif before == state:
        return Plan(Outcome.NO_CHANGE, view)
    router.route(
        _op(
            UpsertCompany,
            event,
            now,
            cloud_id=ids.companies.get(event.entity_id),
            name=state.name,
            organisation_number=state.normalised_organisation_number,
            country=state.country,
            status=state.status,
        )
    )
    return router.plan(view)


# -- catalogues -----------------------------------------------------------------------------


def _plan_catalogue(
    previous: EntityView | None,
    event: RoleChanged | LayoutGroupChanged | ModuleChanged,
    ids: Identities,
    now: datetime,
    view: EntityView,
) -> Plan:
    state = event.state
    catalogue = _CATALOGUE[event.entity]
    name = state.code if isinstance(state, ModuleState) else state.name
    description = state.name if isinstance(state, ModuleState) else state.description
    if event.op is Op.DELETE:
        if previous is not None and previous.deleted:
            return Plan(Outcome.NO_CHANGE, view)
        router = _Router(ids, event)
        router.route(
            _op(
                RemoveCatalogueEntry,
                event,
                now,
                application=state.application,
                catalogue=catalogue,
                name=name,
            )
        )
        return router.plan(view)
    if previous is not None and not previous.deleted and previous.state == state:
        return Plan(Outcome.NO_CHANGE, view)
    router = _Router(ids)
    router.route(
        _op(
            UpsertCatalogueEntry,
            event,
            now,
            application=state.application,
            catalogue=catalogue,
            name=name,
            description=description,
        )
    )
    return router.plan(view)


# -- application instances ------------------------------------------------------------------


def _plan_instance(previous: EntityView | None, event: ApplicationInstanceChanged, view: EntityView) -> Plan:
    """Publish what is on premise; every partition judges the application from its facts."""
    state: ApplicationInstanceState = event.state
    if previous is not None and previous.deleted == view.deleted and previous.state == state:
        return Plan(Outcome.NO_CHANGE, view)
    seen = InstanceSeen(
        state.uri, state.license_fingerprint, event.version, present=event.op is not Op.DELETE
    )
    return Plan(Outcome.OBSERVED, view, instance=(state.application, seen))


def instance_verdict(instance: InstanceSeen | None, registry: Registry | None) -> Verdict:
    """May operations of this application go? The on-premise instance must carry the URI and
    license key (compared by fingerprint) the cloud has registered."""
    if registry is None:
        return Verdict(VerdictStatus.UNVERIFIED)
    if instance is None or not instance.present:
        return Verdict(VerdictStatus.OK)
    if not registry.present:
        return Verdict(VerdictStatus.REGISTER)
    differing = tuple(
        name
        for name, ours, theirs in (
            ("uri", instance.uri, registry.uri),
            ("license key", instance.license_fingerprint, registry.license_fingerprint),
        )
        if ours != theirs
    )
    return Verdict(VerdictStatus.MISMATCH, differing) if differing else Verdict(VerdictStatus.OK)


def review_instance(
    app: ApplicationType,
    instance: InstanceSeen | None,
    registry: Registry | None,
    *,
    committed_at: datetime,
    now: datetime,
    ref: str = "",
) -> tuple[Verdict, tuple[CloudOperation, ...], tuple[JournalEntry, ...]]:
    """The verdict on one application, with what its instance's home partition says and does
    about it: a journal entry, and the registration of an instance the cloud does not know."""
    verdict = instance_verdict(instance, registry)
    version = instance.version if instance else 0

    def entry(code: str, message: str, level: str) -> JournalEntry:
        return JournalEntry(
            EntityType.APPLICATION_INSTANCE, app.value, code, message, level, version, committed_at, ref
        )

    if verdict.status is VerdictStatus.UNVERIFIED:
        # info, not advice: right after `vudsync connect` the registry is on its way (facts and
        # the snapshot's instance event reach the planner on different topics, in either
        # order), so "run `vudsync connect`" would be false; the operations it holds say
        # what they wait for (``blocked``, waiting for ``application:<app>``)
        note = entry(
            "instance_unverified",
            f"the cloud's registry of {app.value} has not reached the planner yet (`vudsync connect` "
            f"publishes it); operations for {app.value} wait for it",
            "info",
        )
        return verdict, (), (note,)
    if verdict.status is VerdictStatus.MISMATCH:
        note = entry(
            "instance_mismatch",
            f"the {app.value} instance differs from the cloud's registry in: {', '.join(verdict.differing)}; "
            f"operations for {app.value} are held until it matches",
            "error",
        )
        return verdict, (), (note,)
    if verdict.status is VerdictStatus.REGISTER:
        assert instance is not None
        register = RegisterApplicationInstance(
            operation_id=operation_id_for("application_instance.register", app.value, version),
            aggregate=f"{EntityType.APPLICATION_INSTANCE.value}:{app.value}",
            entity=EntityType.APPLICATION_INSTANCE,
            entity_id=app.value,
            source_version=version,
            source_committed_at=committed_at,
            planned_at=now,
            application=app,
            uri=instance.uri,
            license_fingerprint=instance.license_fingerprint,
        )
        note = entry(
            "instance_register", f"the cloud has no {app.value} instance registered: registering it", "info"
        )
        return verdict, (register,), (note,)
    note = entry("instance_matches", f"the {app.value} instance matches the cloud's registry", "info")
    return verdict, (), (note,)
