"""Directory events: one entity's new version, planned against what the partition knows. Pure.

The entity's ``e|`` value holds its last seen version and state; the planner's rules
(:mod:`processors.planner`) turn the previous view, the event and the partition's knowledge
into a plan, which becomes effects here: operations sent, operations parked (with a *parked* or
*blocked* result each, :mod:`processors.parking`), rejected deletions dropped, journal entries,
an on-premise instance published as a fact to every partition, and a deletion request to the
accidental-delete gate (:mod:`processors.gate`).

Delivery (at least once, no loss): the table write of an event may reach the changelog while
its operations do not, and the event is redelivered (its offset was not committed). The entity
keeps, for each of its events not yet known committed, the state *before* it (``h``): a
redelivered version is planned again against exactly that state — the same operations with the
same ids, which the sink's ledger and the cloud's idempotency keys turn into no-ops. (The rule
this replaces re-planned only the last version; two uncommitted versions of one entity lost the
first one's operations.) Entries older than the committed offset are pruned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from processors import cloud_changes, connection, gate, journal, keys, parking, planner, repair
from processors.effects import Coords, Effects, Tx
from processors.facts import Facts
from processors.knowledge import Knowledge
from processors.model import EntityView, Outcome, Plan, PlannerSettings, slot_of
from processors.needs import Need
from schemas.directory import EntityType, UserState
from schemas.events import EVENT_BY_ENTITY, DirectoryEvent, UserChanged
from schemas.results import FactKind, PlannerFact, ResultOutcome

HISTORY_MAX = 32  # safety net: uncommitted versions kept per entity
_CONNECT = Need.connect()

_STATE_TYPES: dict[EntityType, Any] = {
    entity: cls.model_fields["state"].annotation for entity, cls in EVENT_BY_ENTITY.items()
}


class DirectoryEvents:
    """Plans directory events over one partition's table."""

    def __init__(
        self,
        knowledge: Knowledge,
        facts: Facts,
        settings: PlannerSettings,
        clock: Callable[[], datetime],
    ) -> None:
        self.knowledge = knowledge
        self.facts = facts
        self.settings = settings
        self.clock = clock

    def on_directory_event(
        self, tx: Tx, ev: DirectoryEvent, coords: Coords, committed: int | None
    ) -> Effects:
        """Plan one directory event. ``committed``: the committed offset of its topic partition."""
        fx = Effects(entity=ev.entity._value_)
        ref = keys.entity_ref(ev.entity, ev.entity_id)
        ekey = keys.entity_key(ref)
        raw = tx.get(ekey)
        if ev.repair is not None:
            return self._on_repair(tx, fx, ev, coords, ref, raw)
        replay = False
        if raw is not None and ev.version <= raw["v"]:
            # a redelivery of an event not yet committed? then plan it again, against its past
            item = next((h for h in raw["h"] if h[1] == ev.version), None)
            if item is None:
                fx.outcome = Outcome.STALE.value
                return fx
            previous, replay = _view(ev.entity, item[2], item[3], item[4]), True
        else:
            previous = _view(ev.entity, raw["v"], raw["d"], raw["s"]) if raw else None
        now = self.clock()
        plan = planner.plan(
            previous,
            ev,
            self.knowledge.identities(tx, coords.partition),
            self.settings,
            now=now,
            behind_upsert=not replay,  # a redelivery may lose its upsert to a later version's plan
        )
        if replay:
            # what a later version planned for a slot supersedes this version's plan for it: its
            # own redelivery follows (offsets are redelivered in order) and re-sends it
            later = {s for h in raw["h"] if h[1] > ev.version for s in h[5]}
            plan = _without_slots(plan, later)
        # the step writes e| naming this partition (below) unless it re-plans a redelivery
        home = (not replay and plan.view is not None) or (
            raw is not None and raw.get("p") == coords.partition
        )
        slots = self._apply_plan(tx, fx, coords.partition, ref, ev, plan, now, home)
        if not replay and plan.view is not None and ev.entity is EntityType.USER:
            before = previous.state if previous is not None and not previous.deleted else None
            after = None if plan.view.deleted else ev.state
            assert isinstance(ev, UserChanged)
            # a user's first sight changes nothing; the same state may still hide a folded grant
            # and removal, which only the entries' own times show
            if isinstance(before, UserState) and (before != after or ev.access_changed_at):
                assert after is None or isinstance(after, UserState)
                cloud_changes.on_user_changed(
                    tx, ev.entity_id, before, after, ev.source.committed_at, ev.version, ev.access_changed_at
                )
        if not replay and plan.view is not None:
            history = [h for h in (raw["h"] if raw else ()) if committed is None or h[0] >= committed]
            history.append(
                [
                    coords.offset,
                    ev.version,
                    *((raw["v"], raw["d"], raw["s"]) if raw else (None, None, None)),
                    sorted(slots),
                ]
            )
            tx.set(
                ekey,
                {
                    "v": ev.version,
                    "d": plan.view.deleted,
                    "s": ev.state.model_dump(mode="json"),
                    "h": history[-HISTORY_MAX:],
                    # the partition the entity's events arrive on: where its own facts go
                    "p": coords.partition,
                },
            )
            was_live = raw is not None and not raw["d"]
            if was_live != (not plan.view.deleted) and self.settings.deletes_threshold_percent is not None:
                live = keys.live_key(coords.partition)
                tx.set(live, max(0, (tx.get(live) or 0) + (-1 if was_live else 1)))
            if not was_live and not plan.view.deleted and ev.entity is EntityType.USER:
                # cloud changes of the user that came before its directory state: decide them now
                cloud_changes.release_on_premise(tx, fx, ev.entity_id)
        fx.outcome = Outcome.REDELIVERED.value if replay else plan.outcome.value
        return tx.effects(fx)

    def _on_repair(
        self, tx: Tx, fx: Effects, ev: DirectoryEvent, coords: Coords, ref: str, raw: Any
    ) -> Effects:
        """A repair from ``vudsync verify --repair`` (:mod:`processors.repair`): planned from
        the event's state through the same gates; the entity's own ``e|`` value is left as it
        is (a redelivered repair plans the same ids again: they are derived from the repair)."""
        previous = _view(ev.entity, raw["v"], raw["d"], raw["s"]) if raw else None
        now = self.clock()
        plan = repair.plan_repair(previous, ev, self.knowledge.identities(tx, coords.partition), now=now)
        if plan.view is not None:
            home = raw is not None and raw.get("p") == coords.partition  # e| is left as it is
            self._apply_plan(tx, fx, coords.partition, ref, ev, plan, now, home)
        fx.outcome = plan.outcome.value
        return tx.effects(fx)

    def _apply_plan(
        self,
        tx: Tx,
        fx: Effects,
        p: int,
        ref: str,
        ev: DirectoryEvent,
        plan: Plan,
        now: datetime,
        home: bool,
    ) -> set[str]:
        """Turn ``plan`` into effects; returns its slots. ``home``: the entity's ``e|`` value
        names ``p`` after this step (its own cloud id needs no index entry,
        :func:`processors.parking.index`)."""
        slots = _slots(plan)
        if slots:
            # the newest plan for a slot supersedes whatever waited in it
            pkey = keys.parked_key(ref)
            items = tx.get(pkey) or []
            kept = [i for i in items if i["slot"] not in slots]
            added = [parking.parked_json(x) for x in plan.parked]
            if len(kept) != len(items) or added:
                tx.set(pkey, (kept + added) or None)
            # what waited there and is not planned again is never applied: say so, or the journal
            # would count it as waiting for ever (a redelivery re-plans the same id: not superseded)
            planned = {op.operation_id for op in (*plan.operations, *plan.dropped)}
            planned |= {x.operation.operation_id for x in plan.parked}
            for item in items:
                if item["slot"] in slots and item["op"]["operation_id"] not in planned:
                    old = parking.parked_from_json(item).operation
                    superseded = journal.operation_result(old, ResultOutcome.SUPERSEDED, now)
                    fx.send("results", ev.entity_id, superseded)
            for x in plan.parked:
                for need in x.needs:
                    parking.index(tx, p, need.encode(), ref, home=home)
        for op in plan.operations:
            fx.send("operations", op.aggregate, op)
        fx.waiting.extend((x, None) for x in plan.parked)
        for dop in plan.directory_ops:  # writeback: the conflict rule gave an entry back to the cloud
            fx.send_operation(dop)
        for x in plan.parked:
            if x.needs[0] == _CONNECT:  # needs_of puts it first
                connection.awaited(tx, fx, p, x.operation)
            outcome = ResultOutcome.BLOCKED if any(n.blocks for n in x.needs) else ResultOutcome.PARKED
            waiting = [n.encode() for n in x.needs]
            fx.send(
                "results",
                ev.entity_id,
                journal.operation_result(x.operation, outcome, now, waiting_for=waiting),
            )
        for op in plan.dropped:
            rejected = journal.operation_result(op, ResultOutcome.REJECTED, now, reason="deletion rejected")
            fx.send("results", ev.entity_id, rejected)
        for entry in plan.journal:  # a writeback conflict asks for a look, as the writeback's do
            conflict = entry.code == "writeback_conflict"
            journal.record(fx, entry, now, ResultOutcome.REVIEW if conflict else None)
        if plan.instance is not None:
            app, seen = plan.instance
            fact = PlannerFact(
                kind=FactKind.INSTANCE,
                subject=app.value,
                present=seen.present,
                uri=seen.uri,
                license_fingerprint=seen.license_fingerprint,
                version=seen.version,
                observed_at=ev.source.committed_at,
                source="planner",
            )
            self.facts.fan_out(fx, fact)
            self.facts.review_home(tx, fx, p, app, now, ev.source.committed_at, pending=seen)
        if plan.deletion is not None:
            gate.request(tx, fx, p, plan.deletion, now)
        return slots


def _view(entity: EntityType, version: int | None, deleted: bool | None, state: Any) -> EntityView | None:
    if version is None:
        return None
    model = _STATE_TYPES[entity].model_validate(state) if state is not None else None
    return EntityView(version, model, bool(deleted))


def _slots(plan: Plan) -> set[str]:
    return {slot_of(op) for op in (*plan.operations, *plan.dropped)} | {
        slot_of(x.operation) for x in plan.parked
    }


def _without_slots(plan: Plan, slots: set[str]) -> Plan:
    if not slots:
        return plan
    parked = tuple(x for x in plan.parked if slot_of(x.operation) not in slots)
    return replace(
        plan,
        operations=tuple(op for op in plan.operations if slot_of(op) not in slots),
        parked=parked,
        dropped=tuple(op for op in plan.dropped if slot_of(op) not in slots),
        deletion=plan.deletion if any(x.deletion for x in parked) else None,
    )
