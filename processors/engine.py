"""The reconciler: what one planner partition does with each message, over its table. Pure.

The Faust shell (:mod:`processors.handlers`) decodes a message and hands it here together with
its coordinates; the reconciler reads the partition's state through a ``MutableMapping`` (the
Faust table, or a dict in tests), calls the rules of :mod:`processors.planner` and returns
:class:`Effects`: the records to send and the table writes to make. The shell performs them —
in the order :attr:`Effects.acks_first` says — and nothing else; the property tests drive this
very class with a dict and a simulated cloud.

One table per partition, key prefixes:

=====================  ===============================================================
``e|<entity>:<id>``    last seen version and state, and the *uncommitted history*
``p|<entity>:<id>``    operations parked for that entity, with their needs
``k|<p>|<fact key>``   partition ``p``'s copy of a fact (cloud ids, registry, catalogue, …)
``n|<p>|<need>[|i]``   which entities have operations waiting for ``need`` (in buckets)
``c|<p>|live``         live entities on partition ``p`` (for the percentage threshold)
``g|…``                the accidental-delete gate (partition 0 only)
=====================  ===============================================================

Why facts are copied to every partition instead of a Faust ``GlobalTable``: a partition's
copy is written in the same changelog partition, in the same order, as the parked operations
that wait for it, so "the company became known" and "the operations waiting for it were sent"
can never be recovered out of step — and there is no second, unordered path (a global table
updated behind the stream) for a worker to race against.

Delivery (at least once, no loss). Faust flushes the producer before it commits offsets, so
the records of a committed message are durable. Two windows remain, both closed here:

- *directory events*: the table write of an event may reach the changelog while its
  operations do not, and the event is redelivered (its offset was not committed). The entity
  keeps, for each of its events not yet known committed, the state *before* it (``h``):
  a redelivered version is planned again against exactly that state — the same operations with
  the same ids, which the sink's ledger and the cloud's idempotency keys turn into no-ops.
  (The rule this replaces re-planned only the last version; two uncommitted versions of one
  entity lost the first one's operations.) Entries older than the committed offset are pruned.
- *releases* (facts, gate decisions): the operations are sent and their acknowledgement awaited
  *before* the table forgets them (``acks_first``); a fact's own knowledge key is written
  last, so a recovered "known" always comes with its released operations gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple

from pydantic import BaseModel

from processors import deletions, planner
from processors.control import (
    GATE_PARTITION,
    DeletionDecided,
    DeletionHeld,
    DeletionRequested,
    DeletionsDecided,
)
from processors.model import (
    Decision,
    EntityView,
    Identities,
    InstanceSeen,
    JournalEntry,
    Outcome,
    Parked,
    Plan,
    PlannerSettings,
    Registry,
    Verdict,
    slot_of,
)
from schemas.directory import ApplicationType, EntityType
from schemas.events import EVENT_BY_ENTITY, DirectoryEvent
from schemas.operations import CLOUD_OPERATION_ADAPTER, CloudOperation
from schemas.results import FactKind, OperationResult, PlannerFact, ResultOutcome

HISTORY_MAX = 32  # safety net: uncommitted versions kept per entity
BUCKET = 256  # entity keys per index bucket

_STATE_TYPES: dict[EntityType, Any] = {
    entity: cls.model_fields["state"].annotation for entity, cls in EVENT_BY_ENTITY.items()
}
_CATALOGUE_KIND = {
    EntityType.ROLE: "roles",
    EntityType.LAYOUT_GROUP: "layout_groups",
    EntityType.MODULE: "modules",
}
_APPLIED = (ResultOutcome.APPLIED, ResultOutcome.ALREADY_APPLIED)


@dataclass(frozen=True)
class Coords:
    """Where a message came from: ``topic[partition]@offset``."""

    topic: str
    partition: int
    offset: int


class Send(NamedTuple):
    """One record to send. (A named tuple: two or three per event, built at a third of a
    frozen dataclass's cost.)"""

    role: str  # operations | results | facts | control
    key: str
    value: BaseModel
    partition: int | None = None  # None: by key


@dataclass
class Effects:
    """What to do for one message: send ``sends``, then apply ``writes`` in order (a None value
    deletes the key). With ``acks_first``, every send is acknowledged before the first write."""

    sends: list[Send] = field(default_factory=list)
    writes: dict[str, Any] = field(default_factory=dict)
    acks_first: bool = False
    outcome: str | None = None
    entity: str | None = None
    journal: list[str] = field(default_factory=list)  # codes, for the metric

    def send(self, role: str, key: str, value: BaseModel, partition: int | None = None) -> None:
        self.sends.append(Send(role, key, value, partition))

    def operations(self) -> list[CloudOperation]:
        return [s.value for s in self.sends if s.role == "operations"]  # type: ignore[misc]


_UNREAD = object()


class _Tx:
    """Reads through the writes of the message being handled; ``late`` writes go last.

    Store reads are remembered for the message's duration: the store does not change while a
    message is handled (its writes are collected here and made afterwards), and one event
    reads the same keys several times (the user's cloud id for each of its operations, the
    verdict's two keys for each application) — a Faust table read is several Python calls.
    """

    def __init__(self, store: Mapping[str, Any]) -> None:
        self.store = store
        self.writes: dict[str, Any] = {}
        self.late: dict[str, Any] = {}
        self._read: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if self.late and key in self.late:
            return self.late[key]
        if self.writes and key in self.writes:
            return self.writes[key]
        value = self._read.get(key, _UNREAD)
        if value is _UNREAD:
            value = self._read[key] = self.store.get(key)
        return value

    def set(self, key: str, value: Any, *, late: bool = False) -> None:
        if late:
            self.writes.pop(key, None)
            self.late[key] = value
        else:
            self.writes[key] = value

    def effects(self, fx: Effects) -> Effects:
        fx.writes = {**self.writes, **self.late}
        return fx


class _Known(Mapping[str, Any]):
    """One partition's facts of one kind, as the planner's ``Identities`` mappings."""

    __slots__ = ("_convert", "_prefix", "_tx")

    def __init__(self, tx: _Tx, prefix: str, convert: Callable[[Any], Any] | None = None) -> None:
        self._tx, self._prefix, self._convert = tx, prefix, convert

    def __getitem__(self, key: str) -> Any:
        value = self._tx.get(self._prefix + key)
        if value is None:
            raise KeyError(key)
        return self._convert(value) if self._convert else value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._tx.get(self._prefix + key) is not None

    def get(self, key: str, default: Any = None) -> Any:  # Mapping.get goes through KeyError
        value = self._tx.get(self._prefix + key)
        if value is None:
            return default
        return self._convert(value) if self._convert else value

    def __iter__(self) -> Iterator[str]:  # slow: for inspection, never on the hot path
        n = len(self._prefix)
        keys = {*self._tx.store.keys(), *self._tx.writes, *self._tx.late}
        return iter(sorted(k[n:] for k in keys if k.startswith(self._prefix) and self._tx.get(k) is not None))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Verdicts(Mapping[ApplicationType, Verdict]):
    """The verdict on each application, computed when the planner asks (most events never do)."""

    __slots__ = ("_p", "_reconciler", "_tx")

    def __init__(self, reconciler: Reconciler, tx: _Tx, p: int) -> None:
        self._reconciler, self._tx, self._p = reconciler, tx, p

    def __getitem__(self, app: ApplicationType) -> Verdict:
        return self._reconciler._verdict(self._tx, self._p, app)

    def get(self, app: ApplicationType, default: Any = None) -> Any:  # every key is present
        return self._reconciler._verdict(self._tx, self._p, app)

    def __iter__(self) -> Iterator[ApplicationType]:
        return iter(ApplicationType)

    def __len__(self) -> int:
        return len(ApplicationType)


def _ts(moment: datetime) -> float:
    return moment.timestamp()


class Reconciler:
    """One planner worker's logic for every partition it owns. Not thread-safe; one message at
    a time (the agent's concurrency is 1)."""

    def __init__(
        self,
        store: Mapping[str, Any],
        settings: PlannerSettings,
        partitions: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.settings = settings
        self.partitions = partitions
        self.clock = clock
        self._verdicts: dict[tuple[int, ApplicationType], tuple[Any, Any, Verdict]] = {}
        self._verdict_keys: dict[tuple[int, ApplicationType], tuple[str, str]] = {}

    # -- knowledge ----------------------------------------------------------------------

    def _instance(self, tx: _Tx, p: int, app: ApplicationType) -> InstanceSeen | None:
        raw = tx.get(f"k|{p}|instance:{app.value}")
        if raw is None:
            return None
        return InstanceSeen(raw["uri"], raw["fp"], raw["version"], raw["present"])

    def _registry(self, tx: _Tx, p: int, app: ApplicationType) -> Registry | None:
        raw = tx.get(f"k|{p}|registry:{app.value}")
        return None if raw is None else Registry(raw["present"], raw["uri"], raw["fp"])

    def _verdict(self, tx: _Tx, p: int, app: ApplicationType) -> Verdict:
        # cached on the very table values it was computed from (a hit is an identity check)
        keys = self._verdict_keys.get((p, app))
        if keys is None:
            keys = self._verdict_keys[(p, app)] = (
                f"k|{p}|instance:{app.value}",
                f"k|{p}|registry:{app.value}",
            )
        raw_instance = tx.get(keys[0])
        raw_registry = tx.get(keys[1])
        cached = self._verdicts.get((p, app))
        if cached is not None and cached[0] is raw_instance and cached[1] is raw_registry:
            return cached[2]
        verdict = planner.instance_verdict(self._instance(tx, p, app), self._registry(tx, p, app))
        self._verdicts[(p, app)] = (raw_instance, raw_registry, verdict)
        return verdict

    def _identities(self, tx: _Tx, p: int) -> Identities:
        return Identities(
            users=_Known(tx, f"k|{p}|user:"),
            companies=_Known(tx, f"k|{p}|company:"),
            catalogue=_Known(tx, f"k|{p}|catalogue:", lambda v: bool(v["present"])),
            applications=_Verdicts(self, tx, p),
            deletions=_Known(tx, f"k|{p}|deletion:", Decision),
        )

    def identities(self, partition: int) -> Identities:
        """What ``partition`` knows now (for tests and inspection)."""
        return self._identities(_Tx(self.store), partition)

    # -- directory events ---------------------------------------------------------------

    def _view(
        self, entity: EntityType, version: int | None, deleted: bool | None, state: Any
    ) -> EntityView | None:
        if version is None:
            return None
        model = _STATE_TYPES[entity].model_validate(state) if state is not None else None
        return EntityView(version, model, bool(deleted))

    def on_directory_event(self, ev: DirectoryEvent, coords: Coords, committed: int | None) -> Effects:
        """Plan one directory event. ``committed``: the committed offset of its topic partition."""
        entity = ev.entity._value_
        tx, fx = _Tx(self.store), Effects(entity=entity)
        key = f"{entity}:{ev.entity_id}"
        raw = tx.get("e|" + key)
        replay = False
        if raw is not None and ev.version <= raw["v"]:
            # a redelivery of an event not yet committed? then plan it again, against its past
            item = next((h for h in raw["h"] if h[1] == ev.version), None)
            if item is None:
                fx.outcome = Outcome.STALE.value
                return fx
            previous, replay = self._view(ev.entity, item[2], item[3], item[4]), True
        else:
            previous = self._view(ev.entity, raw["v"], raw["d"], raw["s"]) if raw else None
        now = self.clock()
        plan = planner.plan(previous, ev, self._identities(tx, coords.partition), self.settings, now=now)
        if replay:
            # what a later version planned for a slot supersedes this version's plan for it: its
            # own redelivery follows (offsets are redelivered in order) and re-sends it
            later = {s for h in raw["h"] if h[1] > ev.version for s in h[5]}
            plan = _without_slots(plan, later)
        slots = self._apply_plan(tx, fx, coords.partition, key, ev, plan, now)
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
                "e|" + key,
                {
                    "v": ev.version,
                    "d": plan.view.deleted,
                    "s": ev.state.model_dump(mode="json"),
                    "h": history[-HISTORY_MAX:],
                },
            )
            was_live = raw is not None and not raw["d"]
            if was_live != (not plan.view.deleted) and self.settings.deletes_threshold_percent is not None:
                live_key = f"c|{coords.partition}|live"
                tx.set(live_key, max(0, (tx.get(live_key) or 0) + (-1 if was_live else 1)))
        fx.outcome = Outcome.REDELIVERED.value if replay else plan.outcome.value
        return tx.effects(fx)

    def _apply_plan(
        self, tx: _Tx, fx: Effects, p: int, key: str, ev: DirectoryEvent, plan: Plan, now: datetime
    ) -> set[str]:
        """Turn ``plan`` into effects; returns its slots."""
        slots = _slots(plan)
        if slots:
            # the newest plan for a slot supersedes whatever waited in it
            items = tx.get("p|" + key) or []
            kept = [i for i in items if i["slot"] not in slots]
            added = [_parked_json(x) for x in plan.parked]
            if len(kept) != len(items) or added:
                tx.set("p|" + key, (kept + added) or None)
            for x in plan.parked:
                for need in x.needs:
                    self._index(tx, p, need, key)
        for op in plan.operations:
            fx.send("operations", op.aggregate, op)
        for x in plan.parked:
            blocked = any(n.startswith("application:") for n in x.needs)
            outcome = ResultOutcome.BLOCKED if blocked else ResultOutcome.PARKED
            fx.send("results", ev.entity_id, _result(x.operation, outcome, now, waiting_for=list(x.needs)))
        for op in plan.dropped:
            fx.send(
                "results", ev.entity_id, _result(op, ResultOutcome.REJECTED, now, reason="deletion rejected")
            )
        for entry in plan.journal:
            self._journal(fx, entry, now)
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
            self._fan_out(fx, fact)
            self._review_home(tx, fx, p, app, now, ev.source.committed_at, pending=seen)
        if plan.deletion is not None:
            d = plan.deletion
            request = DeletionRequested(
                candidate=d.candidate,
                entity=d.entity,
                entity_id=d.entity_id,
                version=d.version,
                committed_at=d.committed_at,
                partition=p,
                live=tx.get(f"c|{p}|live") or 0,
            )
            fx.send("control", d.candidate, request, GATE_PARTITION)
        return slots

    # -- parking ------------------------------------------------------------------------

    def _index(self, tx: _Tx, p: int, need: str, key: str) -> None:
        base = f"n|{p}|{need}"
        buckets = tx.get(base) or 0
        last = tx.get(f"{base}|{buckets - 1}") if buckets else None
        if last is not None and key in last:
            return
        if last is None or len(last) >= BUCKET:
            tx.set(base, buckets + 1)
            tx.set(f"{base}|{buckets}", [key])
        else:
            tx.set(f"{base}|{buckets - 1}", [*last, key])

    def _waiting_for(self, tx: _Tx, p: int, need: str) -> list[str]:
        base = f"n|{p}|{need}"
        keys: dict[str, None] = {}
        for i in range(tx.get(base) or 0):
            keys.update(dict.fromkeys(tx.get(f"{base}|{i}") or ()))
        return list(keys)

    def _release(self, tx: _Tx, fx: Effects, p: int, need: str, now: datetime) -> None:
        """Send what waited for ``need`` and may go now; re-index what still waits."""
        keys = self._waiting_for(tx, p, need)
        base = f"n|{p}|{need}"
        for i in range(tx.get(base) or 0):
            tx.set(f"{base}|{i}", None)
        if keys:
            tx.set(base, None)
        if not keys:
            return
        ids = self._identities(tx, p)
        for key in keys:
            items = tx.get("p|" + key) or []
            still: list[dict[str, Any]] = []
            for item in items:
                if need not in item["needs"]:
                    still.append(item)
                    continue
                parked = _parked_from_json(item)
                verdict, value = planner.settle(parked, ids)
                if verdict == "send":
                    op: Any = value
                    fx.send("operations", op.aggregate, op)
                elif verdict == "drop":
                    entity_id = parked.operation.entity_id
                    fx.send(
                        "results",
                        entity_id,
                        _result(parked.operation, ResultOutcome.REJECTED, now, reason="deletion rejected"),
                    )
                else:
                    needs: tuple[str, ...] = value  # type: ignore[assignment]
                    for n in needs:
                        if n not in item["needs"]:
                            self._index(tx, p, n, key)
                    still.append({**item, "needs": list(needs)})
            if still != items:
                tx.set("p|" + key, still or None)

    # -- results: what the cloud did ----------------------------------------------------

    def on_result(self, result: OperationResult, coords: Coords) -> Effects:
        """Learn from a result: cloud ids, the registry, the catalogue; the review journal."""
        fx = Effects()
        if result.outcome not in _APPLIED:
            return fx
        seen = result.recorded_at
        kind = result.kind
        if kind in ("user.upsert", "user.deactivate") and result.cloud_id:
            # to every partition, like every fact: which partition holds the user's parked
            # operations depends on the directory producer's partitioner, which need not be
            # the sink's (librdkafka hashes keys differently from the Java and Python clients)
            self._fan_out(
                fx,
                PlannerFact(
                    kind=FactKind.USER,
                    subject=result.entity_id,
                    cloud_id=result.cloud_id,
                    observed_at=seen,
                    source="results",
                ),
            )
        elif kind == "company.upsert" and result.cloud_id:
            self._fan_out(
                fx,
                PlannerFact(
                    kind=FactKind.COMPANY,
                    subject=result.entity_id,
                    cloud_id=result.cloud_id,
                    observed_at=seen,
                    source="results",
                ),
            )
            review = result.details.get("review")
            if review and "linked" in (result.effect or ""):
                entry = JournalEntry(
                    EntityType.COMPANY,
                    result.entity_id,
                    "company_review",
                    f"company {result.entity_id} was linked to the existing cloud company with the same "
                    f"organisation number; it differs in: {', '.join(review)} — review it before "
                    "activating services",
                    "warning",
                    result.source_version,
                    result.source_committed_at,
                    ref=result.operation_id,
                )
                self._journal(fx, entry, self.clock(), ResultOutcome.REVIEW)
        elif kind in ("catalogue.upsert", "catalogue.remove"):
            catalogue = _CATALOGUE_KIND.get(result.entity)
            if catalogue is not None:
                app, _, name = result.entity_id.partition(":")
                self._fan_out(
                    fx,
                    PlannerFact(
                        kind=FactKind.CATALOGUE,
                        subject=f"{app}:{catalogue}:{name}",
                        present=kind == "catalogue.upsert",
                        observed_at=seen,
                        source="results",
                    ),
                )
        elif kind == "application_instance.register":
            self._fan_out(
                fx,
                PlannerFact(
                    kind=FactKind.REGISTRY,
                    subject=result.entity_id,
                    present=True,
                    uri=result.details.get("uri"),
                    license_fingerprint=result.details.get("license_fingerprint"),
                    observed_at=seen,
                    source="results",
                ),
            )
        return fx

    def _fan_out(self, fx: Effects, fact: PlannerFact) -> None:
        for partition in range(self.partitions):
            fx.send("facts", fact.key, fact, partition)

    # -- facts: one partition's copy ----------------------------------------------------

    def on_fact(self, fact: PlannerFact, coords: Coords) -> Effects:
        """Record a fact in this partition's copy; release what waited for it."""
        tx, fx = _Tx(self.store), Effects()
        p = coords.partition
        kkey = f"k|{p}|{fact.key}"
        old = tx.get(kkey)
        now = self.clock()
        if fact.kind in (FactKind.USER, FactKind.COMPANY):
            if not fact.present or not fact.cloud_id or old == fact.cloud_id:
                return fx
            tx.set(kkey, fact.cloud_id, late=True)
            self._release(tx, fx, p, fact.key, now)
        elif fact.kind is FactKind.CATALOGUE:
            if old is not None and old["at"] >= _ts(fact.observed_at):
                return fx
            tx.set(kkey, {"present": fact.present, "at": _ts(fact.observed_at)}, late=True)
            if fact.present and not (old and old["present"]):
                self._release(tx, fx, p, fact.key, now)
        else:
            app = ApplicationType(fact.subject)
            before = self._verdict(tx, p, app)
            value: dict[str, Any]
            if fact.kind is FactKind.INSTANCE:
                if old is not None and old["version"] >= fact.version:
                    return fx
                value = {
                    "present": fact.present,
                    "uri": fact.uri,
                    "fp": fact.license_fingerprint,
                    "version": fact.version,
                }
            else:
                if old is not None and old["at"] >= _ts(fact.observed_at):
                    return fx
                value = {
                    "present": fact.present,
                    "uri": fact.uri,
                    "fp": fact.license_fingerprint,
                    "at": _ts(fact.observed_at),
                }
            tx.set(kkey, value, late=True)
            after = self._verdict(tx, p, app)
            if before.blocked and not after.blocked:
                self._release(tx, fx, p, f"application:{app.value}", now)
            if after != before or fact.kind is FactKind.REGISTRY:
                self._review_home(tx, fx, p, app, now, fact.observed_at)
        fx.acks_first = bool(fx.sends)
        return tx.effects(fx)

    def _review_home(
        self,
        tx: _Tx,
        fx: Effects,
        p: int,
        app: ApplicationType,
        now: datetime,
        committed_at: datetime,
        pending: InstanceSeen | None = None,
    ) -> None:
        """On the instance's home partition (the one holding its entity), say what the verdict
        is — once per instance version and registry — and register an instance the cloud lacks."""
        home = tx.get(f"e|{EntityType.APPLICATION_INSTANCE.value}:{app.value}")
        if home is None and pending is None:
            return
        instance = self._instance(tx, p, app)
        if pending is not None and (instance is None or pending.version > instance.version):
            instance = pending
        registry_raw = tx.get(f"k|{p}|registry:{app.value}")
        ref = f"{registry_raw['at']:.6f}" if registry_raw else "none"
        said = f"{instance.version if instance else 0}|{ref}"
        if tx.get(f"k|{p}|reviewed:{app.value}") == said:
            return  # said already, for this instance version and this registry
        tx.set(f"k|{p}|reviewed:{app.value}", said)
        _, ops, journal = planner.review_instance(
            app, instance, self._registry(tx, p, app), committed_at=committed_at, now=now, ref=ref
        )
        for op in ops:
            fx.send("operations", op.aggregate, op)
        for entry in journal:
            self._journal(fx, entry, now)

    # -- the accidental-delete gate -----------------------------------------------------

    def on_control(self, msg: BaseModel, coords: Coords) -> Effects:
        tx, fx = _Tx(self.store), Effects()
        now = self.clock()
        if isinstance(msg, DeletionRequested):
            self._gate_request(tx, fx, msg, now)
        elif isinstance(msg, DeletionsDecided):
            self._gate_operator(tx, fx, msg)
        elif isinstance(msg, DeletionDecided):
            p = coords.partition
            tx.set(f"k|{p}|deletion:{msg.candidate}", msg.decision.value, late=True)
            self._release(tx, fx, p, f"deletion:{msg.candidate}", now)
        elif isinstance(msg, DeletionHeld):
            for key in self._waiting_for(tx, coords.partition, f"deletion:{msg.candidate}"):
                for item in tx.get("p|" + key) or []:
                    if item.get("del") == msg.candidate:
                        op = _parked_from_json(item).operation
                        fx.send(
                            "results", op.entity_id, _result(op, ResultOutcome.HELD, now, reason=msg.reason)
                        )
        fx.acks_first = bool(fx.sends)
        return tx.effects(fx)

    def _gate_request(self, tx: _Tx, fx: Effects, req: DeletionRequested, now: datetime) -> None:
        decided = tx.get(f"g|d|{req.candidate}")
        if decided is not None:  # asked again (a redelivery upstream): the same answer
            fx.send("control", req.candidate, _decided(req, Decision(decided)), req.partition)
            return
        if tx.get(f"g|hc|{req.candidate}") is not None:
            return  # held already
        state = deletions.GateState.from_json(tx.get("g|gate"))
        state, decision = deletions.on_request(
            state,
            committed_at=_ts(req.committed_at),
            partition=req.partition,
            live=req.live,
            settings=self.settings,
        )
        tx.set("g|gate", state.to_json())
        if decision is not None:
            tx.set(f"g|d|{req.candidate}", decision.value)
            fx.send("control", req.candidate, _decided(req, decision), req.partition)
            return
        seq = tx.get("g|seq") or {"first": 0, "next": 0}
        tx.set(f"g|h|{seq['next']}", req.model_dump(mode="json"))
        tx.set(f"g|hc|{req.candidate}", seq["next"])
        tx.set("g|seq", {**seq, "next": seq["next"] + 1})
        reason = (
            f"more than {self.settings.deletes_threshold} deletions within "
            f"{self.settings.deletes_window_seconds:.0f}s: held until `vudsync deletes approve` (or reject)"
        )
        fx.send(
            "control",
            req.candidate,
            DeletionHeld(candidate=req.candidate, partition=req.partition, reason=reason),
            req.partition,
        )
        fx.journal.append("deletion_held")

    def _gate_operator(self, tx: _Tx, fx: Effects, msg: DeletionsDecided) -> None:
        state, decision = deletions.on_operator(deletions.GateState.from_json(tx.get("g|gate")), msg.approve)
        seq = tx.get("g|seq") or {"first": 0, "next": 0}
        for i in range(seq["first"], seq["next"]):
            raw = tx.get(f"g|h|{i}")
            if raw is None:
                continue
            req = DeletionRequested.model_validate(raw)
            tx.set(f"g|d|{req.candidate}", decision.value)
            tx.set(f"g|hc|{req.candidate}", None)
            tx.set(f"g|h|{i}", None)
            fx.send("control", req.candidate, _decided(req, decision), req.partition)
        tx.set("g|seq", {"first": seq["next"], "next": seq["next"]})
        tx.set("g|gate", state.to_json(), late=True)
        fx.journal.append("deletions_approved" if msg.approve else "deletions_rejected")

    def held_deletions(self) -> int:
        """Deletions the gate holds (0 unless this worker owns partition 0)."""
        return deletions.GateState.from_json(self.store.get("g|gate")).held

    # -- the journal --------------------------------------------------------------------

    def _journal(
        self, fx: Effects, entry: JournalEntry, now: datetime, outcome: ResultOutcome | None = None
    ) -> None:
        """Warnings and errors become results (the event journal); info entries are only counted."""
        fx.journal.append(entry.code)
        if entry.level == "info" and outcome is None:
            return
        suffix = f":{entry.ref}" if entry.ref else ""
        result = OperationResult(
            operation_id=f"journal:{entry.code}:{entry.entity.value}:{entry.entity_id}:{entry.version}{suffix}",
            kind=f"journal.{entry.code}",
            aggregate=f"{entry.entity.value}:{entry.entity_id}",
            entity=entry.entity,
            entity_id=entry.entity_id,
            source_version=entry.version,
            outcome=outcome or ResultOutcome.BLOCKED,
            error=entry.message if entry.level != "info" else None,
            details={"code": entry.code, "message": entry.message, "level": entry.level},
            source_committed_at=entry.committed_at or now,
            recorded_at=now,
        )
        fx.send("results", entry.entity_id, result)

    # -- inspection ---------------------------------------------------------------------

    def parked(self, keys: Iterator[str] | None = None) -> int:
        """Operations parked in the table (or among ``keys``)."""
        return sum(
            len(self.store.get(k) or ())
            for k in (keys or iter(list(self.store.keys())))
            if k.startswith("p|")
        )


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


def _decided(req: DeletionRequested, decision: Decision) -> DeletionDecided:
    return DeletionDecided(candidate=req.candidate, partition=req.partition, decision=decision)


def _parked_json(p: Parked) -> dict[str, Any]:
    return {
        "slot": slot_of(p.operation),
        "op": p.operation.model_dump(mode="json"),
        "needs": list(p.needs),
        "apps": [a.value for a in p.apps],
        "del": p.deletion,
    }


def _parked_from_json(raw: Mapping[str, Any]) -> Parked:
    return Parked(
        CLOUD_OPERATION_ADAPTER.validate_python(raw["op"]),
        tuple(raw["needs"]),
        tuple(ApplicationType(a) for a in raw["apps"]),
        raw.get("del"),
    )


def _result(op: CloudOperation, outcome: ResultOutcome, now: datetime, **details: Any) -> OperationResult:
    return OperationResult(
        operation_id=op.operation_id,
        kind=op.kind,
        aggregate=op.aggregate,
        entity=op.entity,
        entity_id=op.entity_id,
        source_version=op.source_version,
        outcome=outcome,
        details=details,
        source_committed_at=op.source_committed_at,
        recorded_at=now,
    )
