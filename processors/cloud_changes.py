"""Cloud changes: one ``CloudAccessChanged`` planned against the partition's table. Pure.

Reads what the rule (:func:`processors.writeback.plan_writeback`) takes — the pair's state
(``w|<user>|<company>``), the user's directory state (``e|user:<id>``: on this partition,
since ``vud.cloud.changes`` is keyed and partitioned like ``vud.directory.users``) and whether
the company is linked (``k|<p>|company:<id>``) — and turns its decision into effects: the
directory operations sent on ``vud.directory.operations`` keyed by user id, the journal
entries (rejections and conflicts as results on ``vud.cloud.results``, echoes counted), and
the pair's new state, written after the sends like every table write.

The directory path keeps the directory's side of the conflict rule: :meth:`on_user_changed`
records, in a pair already tracked, which entries a directory event changed and when.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from processors import gate, journal, keys, parking, planner
from processors.effects import Coords, Effects, Tx
from processors.keys import Known
from processors.knowledge import Knowledge
from processors.model import DeletesFrom, DeletionRequest, JournalEntry, Parked, slot_of
from processors.needs import Need, NeedKind
from processors.writeback import Change, PairState, directory_changed, held_entries, plan_writeback
from schemas.cloud_changes import CloudAccessChanged
from schemas.directory import ApplicationType, EntityType, UserState
from schemas.directory_operations import GrantDirectoryAccess, RevokeDirectoryAccess, directory_operation_id
from schemas.operations import AssignAccess, RevokeAccessEntry, operation_id_for
from schemas.results import ResultOutcome


class CloudChanges:
    """Plans the cloud's access changes over one partition's table."""

    def __init__(self, clock: Callable[[], datetime], knowledge: Knowledge | None = None) -> None:
        self.clock = clock
        self.knowledge = knowledge or Knowledge()

    def on_cloud_change(self, tx: Tx, change: CloudAccessChanged, coords: Coords) -> Effects:
        fx = Effects(entity="cloud_access")
        self.decide(tx, fx, change, coords.partition)
        return tx.effects(fx)

    def decide(self, tx: Tx, fx: Effects, change: CloudAccessChanged, p: int) -> None:
        """Decide ``change`` on partition ``p`` into ``fx``: a new change, or one a release took
        from the table (its user's directory state or its company's link arrived)."""
        wkey = keys.writeback_key(change.user_id, change.company_id)
        raw = tx.get(wkey)
        previous = PairState.from_json(raw) if raw is not None else None
        user = tx.get(keys.entity_key(keys.entity_ref(EntityType.USER, change.user_id)))
        removed = user is not None and (bool(user["d"]) or user["s"] is None)
        held = None
        if user is not None and not removed:
            held = held_entries(UserState.model_validate(user["s"]), change.company_id)
        company_known = tx.get(keys.known_key(p, Known.COMPANY, change.company_id)) is not None
        now = self.clock()
        decided = plan_writeback(
            previous, change, held, company_known=company_known, now=now, user_removed=removed
        )
        if decided.waits_for is not None:
            fx.outcome = "parked"
            if not self._wait(tx, fx, p, change, decided.waits_for):
                return  # waits already, or a newer change of the pair does
            for entry in decided.journal:
                journal.record(fx, entry, now, ResultOutcome.PARKED)
            return
        fx.outcome = decided.outcome
        revokes: list[RevokeDirectoryAccess] = []
        for op in decided.operations:
            if isinstance(op, GrantDirectoryAccess):
                fx.send_operation(op)
                self._supersede_revoke(tx, fx, op, now)
            else:
                revokes.append(op)
        # every revoke, on either side, passes the accidental-delete gate (docs/domain.md rules 6
        # and 12): an administrator's mass revoke in the cloud must not wipe the store unasked
        if revokes:
            self._gated(tx, fx, p, _candidate(change, "directory"), revokes, now)
        in_cloud = [_revoke_in_cloud(change, key, theirs, now) for key, theirs in decided.revoke_in_cloud]
        if in_cloud:
            self._gated(tx, fx, p, _candidate(change, "cloud"), in_cloud, now)
        for entry in decided.journal:
            outcome = ResultOutcome.REJECTED if decided.outcome == "rejected" else None
            if entry.code == "writeback_conflict":
                outcome = ResultOutcome.REVIEW
            journal.record(fx, entry, now, outcome if entry.level != "info" else None)
        if decided.state is not None:
            tx.set(wkey, decided.state.to_json())

    @staticmethod
    def _wait(tx: Tx, fx: Effects, p: int, change: CloudAccessChanged, need: Need) -> bool:
        """Park ``change`` until ``need`` is met, one per pair (slot ``writeback:<company>``: the
        newest feed position waits, an older one redelivered changes nothing — each change is
        the pair's whole state). Under the user's ``p|`` key, like the user's operations: a
        company's link releases it through the need index; the user's directory state through
        the user's own ``p|`` key (:func:`release_on_premise`, not indexed). Nothing is sent.
        False: it waits already (or a newer change of the pair does)."""
        ref = keys.entity_ref(EntityType.USER, change.user_id)
        pkey = keys.parked_key(ref)
        items = tx.get(pkey) or []
        slot = f"{_WAITING_SLOT}{change.company_id}"
        old = next((i for i in items if i["slot"] == slot), None)
        if old is not None and old["op"]["feed_seq"] >= change.feed_seq:
            return False
        item = {
            "slot": slot,
            "op": {
                "kind": parking.CLOUD_CHANGE,
                "operation_id": change.event_id,
                "feed_seq": change.feed_seq,
                "cloud_changed_at": change.changed_at.isoformat(),
                "change": change.model_dump(mode="json"),
            },
            "needs": [need.encode()],
            "apps": [],
            "del": None,
        }
        tx.set(pkey, [*(i for i in items if i["slot"] != slot), item])
        if need.kind is not NeedKind.ON_PREMISE:
            parking.index(tx, p, need.encode(), ref)
        return True

    def _gated(
        self,
        tx: Tx,
        fx: Effects,
        p: int,
        deletion: DeletionRequest,
        ops: Sequence[RevokeDirectoryAccess | RevokeAccessEntry],
        now: datetime,
    ) -> None:
        """``ops``, the revokes of one cloud change on one side, through the accidental-delete
        gate as one deletion (``deletion``), as a directory event's are: parked until the gate
        grants them (or an operator approves), sent at once when it has already, dropped with a
        *rejected* result when an operator rejected them. A revoke parked already under the same
        id waits at the gate already (the directory event that removed the entry asked for it)."""
        ids = self.knowledge.identities(tx, p)
        ref = keys.entity_ref(EntityType.USER, ops[0].user_id)
        waiting = {item["op"]["operation_id"] for item in tx.get(keys.parked_key(ref)) or ()}
        ask = False
        for op in ops:
            if op.operation_id in waiting:
                continue
            apps = (op.application,) if isinstance(op, RevokeAccessEntry) else ()
            needs = planner.needs_of(op, ids, apps, deletion.candidate)
            if needs is None:
                reason = "deletion rejected"
                fx.send(
                    "results",
                    op.entity_id,
                    journal.operation_result(op, ResultOutcome.REJECTED, now, reason=reason),
                )
                if isinstance(op, RevokeDirectoryAccess):
                    self.reassert(tx, fx, p, op, now)
            elif not needs:
                fx.send_operation(
                    planner.with_cloud_ids(op, ids) if isinstance(op, RevokeAccessEntry) else op
                )
            else:
                parking.park(tx, fx, p, Parked(op, needs, apps, deletion.candidate), now)
                ask = ask or any(n.kind is NeedKind.DELETION for n in needs)
        if ask:
            gate.request(tx, fx, p, deletion, now)

    def reassert(self, tx: Tx, fx: Effects, p: int, op: RevokeDirectoryAccess, now: datetime) -> None:
        """An operator rejected the writeback's revoke ``op`` in the store (the gate held it):
        the directory's entry stands, and the cloud is brought back to it — never by a revoke
        (docs/domain.md rule 6, "a rejected revoke in the store"). Nothing when the cloud has
        granted the entry again since (the sides agree) or the store no longer holds it (the
        directory removed it since: its own change, judged as any). Else: an entry of origin
        ``cloud`` is *adopted* — the directory sink makes the row the directory's
        (:class:`GrantDirectoryAccess` ``adopt``), and the user event that follows re-asserts
        it in the cloud through the directory's ordinary path; an entry of the directory's is
        re-asserted at once: the directory's access in the company (:class:`AssignAccess`, the
        ordinary operation, through the same needs). Journalled ``writeback_revoke_rejected``."""
        key = op.entry
        wkey = keys.writeback_key(op.user_id, op.company_id)
        raw = tx.get(wkey)
        if raw is not None:
            pair = PairState.from_json(raw)
            if key in pair.pending:  # the revoke on its way will never come: the store's view again
                pending = {k: v for k, v in pair.pending.items() if k != key}
                tx.set(wkey, replace(pair, pending=pending).to_json())
            cloud = pair.cloud.get(key)
            if cloud is not None and cloud.present:
                return
        user = tx.get(keys.entity_key(keys.entity_ref(EntityType.USER, op.user_id)))
        if user is None or user["d"] or user["s"] is None:
            return
        state = UserState.model_validate(user["s"])
        origin = held_entries(state, op.company_id).get(key)
        if origin is None:
            return
        if origin == "cloud":
            then = "adopted as the directory's entry, re-asserted in the cloud by the directory's next event"
            fx.send_operation(_adoption(op, now))
        else:
            then = "re-asserted in the cloud with the directory's access in the company"
            self._assign_again(tx, fx, p, op, state, int(user["v"]), now)
        entry = JournalEntry(
            EntityType.USER,
            op.user_id,
            "writeback_revoke_rejected",
            f"the operator rejected removing {key} of {op.company_id} from the directory (revoked in "
            f"the cloud at {op.cloud_changed_at.isoformat()}): the directory's entry stands — {then}",
            "warning",
            op.feed_seq,
            op.cloud_changed_at,
            f"{op.company_id}|{key}",
        )
        journal.record(fx, entry, now, ResultOutcome.REVIEW)

    def _assign_again(
        self,
        tx: Tx,
        fx: Effects,
        p: int,
        op: RevokeDirectoryAccess,
        state: UserState,
        version: int,
        now: datetime,
    ) -> None:
        """The directory's access of the user in the company, assigned again (the whole set of
        the directory's entries there, as every directory event assigns it: it revokes none of
        the cloud's), with an id of the rejected revoke; through the same needs."""
        access = next(a for a in state.access if a.company_id == op.company_id)
        assign = AssignAccess(
            operation_id=operation_id_for(
                "access.assign", op.user_id, version, f"{op.company_id}|reassert|{op.operation_id}"
            ),
            aggregate=f"user:{op.user_id}",
            entity=EntityType.USER,
            entity_id=op.user_id,
            source_version=version,
            source_committed_at=op.cloud_changed_at,
            planned_at=now,
            user_id=op.user_id,
            company_id=op.company_id,
            services=dict(access.services),
        )
        ids = self.knowledge.identities(tx, p)
        apps = tuple(sorted(access.services))
        needs = planner.needs_of(assign, ids, apps)
        if needs is None:
            return
        if not needs:
            fx.send_operation(planner.with_cloud_ids(assign, ids))
        else:
            parking.park(tx, fx, p, Parked(assign, needs, apps), now)

    @staticmethod
    def _supersede_revoke(tx: Tx, fx: Effects, grant: GrantDirectoryAccess, now: datetime) -> None:
        """A grant written back means the cloud's change of the entry won: a revoke of the same
        entry that an earlier removal on premise parked (the gate holds every revoke a few
        seconds), or an earlier revoke in the cloud that waits at the gate to be written back
        (the grant is the later change), must never go. One already sent is beyond reach: the
        cloud then revokes the entry and its feed brings the revoke back to the store (both
        sides agree again)."""
        pkey = keys.parked_key(keys.entity_ref(EntityType.USER, grant.user_id))
        items = tx.get(pkey) or []
        # the revoke in the cloud of the entry, and the writeback's own revoke of it in the store
        slots = {
            f"access:{grant.company_id}|{grant.application.value}/{_CATALOGUE[grant.entry_kind]}/{grant.name}",
            slot_of(grant),
        }
        kept = [i for i in items if i["slot"] not in slots]
        if len(kept) == len(items):
            return
        tx.set(pkey, kept or None)
        for item in items:
            if item["slot"] in slots:
                old = parking.parked_from_json(item).operation
                fx.send(
                    "results", grant.user_id, journal.operation_result(old, ResultOutcome.SUPERSEDED, now)
                )


_CATALOGUE = {"role": "roles", "layout_group": "layout_groups", "module": "modules"}
_WAITING_SLOT = "writeback:"  # the slot of a cloud change waiting for its user or company


def release_on_premise(tx: Tx, fx: Effects, user_id: str) -> None:
    """The user's directory state has arrived: hand the cloud changes of the user that waited
    for it (``on_premise:<user>``, in the user's ``p|`` key) to be decided again
    (:attr:`Effects.released`). One read of a key the directory event has read already."""
    pkey = keys.parked_key(keys.entity_ref(EntityType.USER, user_id))
    items = tx.get(pkey)
    if not items:
        return
    need = Need.on_premise(user_id).encode()
    still = []
    for item in items:
        if need in item["needs"] and item["op"]["kind"] == parking.CLOUD_CHANGE:
            fx.released.append(item["op"]["change"])
        else:
            still.append(item)
    if len(still) != len(items):
        tx.set(pkey, still or None)


def _adoption(op: RevokeDirectoryAccess, now: datetime) -> GrantDirectoryAccess:
    """The adoption of the entry whose revoke ``op`` an operator rejected (its own id, from the
    revoke's feed position and entry)."""
    oid = directory_operation_id(
        "directory.access.grant", op.user_id, op.company_id, f"{op.entry}|adopt", op.feed_seq
    )
    fields = op.model_dump(exclude={"kind", "any_origin"})
    return GrantDirectoryAccess.model_validate(
        {**fields, "operation_id": oid, "planned_at": now, "adopt": True}
    )


def _candidate(change: CloudAccessChanged, deletes_from: DeletesFrom) -> DeletionRequest:
    """The gate's candidate for the revokes one cloud change decided on one side:
    ``user:<id>@writeback-<company>-<side>:<feed_seq>`` (like a repair's, apart from the
    directory events' ``user:<id>:<version>``; the same for a redelivery, so the gate answers
    it the same), counted at the cloud change's time."""
    return DeletionRequest(
        candidate=f"user:{change.user_id}@writeback-{change.company_id}-{deletes_from}:{change.feed_seq}",
        entity=EntityType.USER,
        entity_id=change.user_id,
        version=change.feed_seq,
        committed_at=change.changed_at,
        deletes_from=deletes_from,
    )


def _revoke_in_cloud(
    change: CloudAccessChanged, key: str, theirs: Change, now: datetime
) -> RevokeAccessEntry:
    """The cloud's revoke of an entry the directory removed later than the cloud changed it:
    the operation the directory's removal would have planned (the same id: the user event's
    version, the company and the entry), yielding to a still later change in the cloud.
    Through the accidental-delete gate like every revoke (:meth:`CloudChanges._gated`)."""
    application, kind, name = key.split("/", 2)
    return RevokeAccessEntry(
        operation_id=operation_id_for(
            "access.revoke_entry", change.user_id, theirs.version, f"{change.company_id}|{key}"
        ),
        aggregate=f"user:{change.user_id}",
        entity=EntityType.USER,
        entity_id=change.user_id,
        source_version=theirs.version,
        source_committed_at=theirs.at,
        planned_at=now,
        user_id=change.user_id,
        company_id=change.company_id,
        cloud_user_id=change.cloud_user_id,
        cloud_company_id=change.cloud_company_id,
        application=ApplicationType(application),
        catalogue=_CATALOGUE[kind],  # type: ignore[arg-type]
        name=name,
        unless_changed_after=theirs.at,
    )


def on_user_changed(
    tx: Tx,
    user_id: str,
    before: UserState | None,
    after: UserState | None,
    committed_at: datetime,
    version: int = 0,
    entry_times: Mapping[str, datetime] | None = None,
) -> None:
    """A directory event of a user: in each pair the writeback tracks (``w|``) whose entries
    it changed, the directory's change and its time (the conflict rule's directory side): each
    entry's own change time in the store (``entry_times``: the event's ``access_changed_at``),
    else the event's commit time. Pairs not tracked are not read further than one look-up per
    changed company."""
    old = {a.company_id: a for a in before.access} if before is not None else {}
    new = {a.company_id: a for a in after.access} if after is not None else {}
    times = entry_times or {}
    # an unchanged company is read only if the event names an entry the user does not hold
    # there (its removal's time): a written-back grant removed before capture saw it
    named: dict[str, list[str]] = {}
    for ref in times:
        company_id, _, key = ref.partition("|")
        named.setdefault(company_id, []).append(key)
    removals = {c for c, entries in named.items() if not held_entries(after, c).keys() >= set(entries)}
    for company_id in old.keys() | new.keys() | removals:
        if old.get(company_id) == new.get(company_id) and company_id not in removals:
            continue
        wkey = keys.writeback_key(user_id, company_id)
        raw = tx.get(wkey)
        if raw is None:
            continue
        state = PairState.from_json(raw)
        prefix = f"{company_id}|"  # schemas.events.access_entry_key
        mine = {k[len(prefix) :]: at for k, at in times.items() if k.startswith(prefix)}
        changed = directory_changed(
            state,
            held_entries(before, company_id),
            held_entries(after, company_id),
            committed_at,
            version,
            mine,
        )
        if changed is not state:
            tx.set(wkey, changed.to_json())
