"""Results and facts: what the cloud did, learned by every partition. Pure.

A *fact* (:class:`~schemas.results.PlannerFact`) is something the planner must know: a user's
or company's cloud id, a catalogue entry's existence, the cloud's registered instance of an
application (learned from results, or told by ``vudsync connect``), the on-premise instance
(from directory events). A result the sink applied becomes facts, sent to *every* partition of
``vud.planner.facts`` (a user's cloud id: to the partition its events arrive on, when known —
only the user's own operations wait for it); each partition records its own copy under
``k|<p>|`` and releases what waited for it (:mod:`processors.parking`). A later
``observed_at`` (instances: a higher ``version``) wins.

Why facts are copied to every partition instead of a Faust ``GlobalTable``: a partition's
copy is written in the same changelog partition, in the same order, as the parked operations
that wait for it, so "the company became known" and "the operations waiting for it were sent"
can never be recovered out of step — and there is no second, unordered path (a global table
updated behind the stream) for a worker to race against.

Releases are sent and their acknowledgement awaited *before* the table forgets them
(``acks_first``); a fact's own knowledge key is written last, so a recovered "known" always
comes with its released operations gone.

*Review*: a company linked to a cloud company that existed before is journalled, and waits for
an operator's review before assignments of access to it go (:mod:`processors.reviews`); the
*connect* fact releases what waited for ``vudsync connect`` (:mod:`processors.connection`). On
an application instance's home partition (the one holding its entity) the planner says what the
verdict is — once per instance version and registry — and registers an instance the cloud lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from processors import connection, journal, keys, parking, planner, reviews
from processors.effects import Coords, Effects, Tx
from processors.keys import Known
from processors.knowledge import Knowledge
from processors.model import InstanceSeen, JournalEntry, Parked, slot_of
from processors.needs import Need
from schemas.directory import ApplicationType, EntityType
from schemas.operations import CLOUD_OPERATION_ADAPTER, AssignAccess
from schemas.results import FactKind, OperationResult, PlannerFact, ResultOutcome

_CATALOGUE_KIND = {
    EntityType.ROLE: "roles",
    EntityType.LAYOUT_GROUP: "layout_groups",
    EntityType.MODULE: "modules",
}
_APPLIED = (ResultOutcome.APPLIED, ResultOutcome.ALREADY_APPLIED)
#: the results that teach a cloud id, and the fact each becomes
_LEARNED_FROM = {
    "user.upsert": FactKind.USER,
    "user.deactivate": FactKind.USER,
    "company.upsert": FactKind.COMPANY,
}

#: the other results the planner learns from: the catalogue, the cloud's registry
_ALSO_TEACH = frozenset({"catalogue.upsert", "catalogue.remove", "application_instance.register"})


def teaches(kind: str, outcome: str) -> bool:
    """Whether a result of ``kind`` with ``outcome`` can teach the planner anything (a cloud
    id, the catalogue, the registry, a company to review): only applied ones of those kinds.
    The others — the planner's own journal entries (parked, held …), failures, applied access
    — it skips unread (:meth:`processors.handlers.PlannerHandlers.skips`, by the record's
    headers); :meth:`Facts.on_result` asks the same first. Also an assignment the sink could
    not resolve (*unresolved*): the planner parks it again."""
    if outcome == ResultOutcome.UNRESOLVED:
        return kind == "access.assign"
    return outcome in _APPLIED and (kind in _LEARNED_FROM or kind in _ALSO_TEACH)


def _ts(moment: datetime) -> float:
    return moment.timestamp()


class Facts:
    """Results into facts, and one partition's copy of each fact."""

    def __init__(self, knowledge: Knowledge, partitions: int, clock: Callable[[], datetime]) -> None:
        self.knowledge = knowledge
        self.partitions = partitions
        self.clock = clock

    # -- results: what the cloud did ----------------------------------------------------

    def on_result(self, tx: Tx, result: OperationResult, coords: Coords) -> Effects:
        """Learn from a result: cloud ids, the registry, the catalogue; the review journal."""
        fx = Effects()
        if not teaches(result.kind, result.outcome):
            return fx
        if result.outcome is ResultOutcome.UNRESOLVED:
            return self._unresolved(tx, fx, result, coords)
        seen = result.recorded_at
        kind = result.kind
        learned = _LEARNED_FROM.get(kind)
        if learned is not None and result.cloud_id:
            fact = PlannerFact(
                kind=learned,
                subject=result.entity_id,
                cloud_id=result.cloud_id,
                observed_at=seen,
                source="results",
            )
            home = self._home(tx, result) if learned is FactKind.USER else None
            linked = learned is FactKind.COMPANY and reviews.linked_existing(result)
            if linked:
                waiting = reviews.waiting_fact(result)
                copy = tx.get(keys.fact_key(coords.partition, waiting.key))
                if reviews.supersedes(copy, True, waiting.observed_at.timestamp()):
                    # before the company's cloud id, on every partition: nothing that waited for the
                    # company may be released before its partition knows it waits for review
                    self.fan_out(fx, waiting)
                # else: the same link, accepted already (a replay of the results): said once,
                # so that the topic's last word on it stays the acceptance
            if home is None:
                # to every partition: which partition holds the parked operations depends on
                # the directory producer's partitioner, which need not be the sink's
                # (librdkafka hashes keys differently from the Java and Python clients)
                self.fan_out(fx, fact)
            elif home == coords.partition:
                # the result came to the partition that needs the id (the sink's partitioner
                # and the directory producer's agree, as with both on librdkafka, the
                # default): learn it now, as its fact would — no fact record to read back
                fx.absorb(self.on_fact(tx, fact, coords))
            else:
                fx.send("facts", fact.key, fact, home)
                if tx.get(keys.index_key(coords.partition, Need.user(result.entity_id).encode())):
                    # an assignment the sink could not resolve waits here, where its result came
                    # (and so this one: the sink keys both by the user's id) — _unresolved
                    fx.absorb(self.on_fact(tx, fact, coords))
            if linked:
                differing = result.details.get("review")
                entry = JournalEntry(
                    EntityType.COMPANY,
                    result.entity_id,
                    "company_review",
                    f"company {result.entity_id} was linked to the existing cloud company {result.cloud_id} "
                    "with the same organisation number"
                    + (f"; it differs in: {', '.join(differing)}" if differing else "")
                    + f" — its assignments wait for review: `vudsync review accept {result.entity_id}`",
                    "warning",
                    result.source_version,
                    result.source_committed_at,
                    ref=result.operation_id,
                )
                journal.record(fx, entry, self.clock(), ResultOutcome.REVIEW)
        elif kind == "user.deactivate":
            # no cloud user is linked to this user (its upsert never went: e.g. it was created and
            # removed on premise before `vudsync connect`): its parked revokes have nothing to revoke
            fact = PlannerFact(
                kind=FactKind.USER,
                subject=result.entity_id,
                present=False,
                observed_at=seen,
                source="results",
            )
            home = self._home(tx, result)
            if home is None:
                self.fan_out(fx, fact)
            else:
                fx.send("facts", fact.key, fact, home)
        elif kind in ("catalogue.upsert", "catalogue.remove"):
            catalogue = _CATALOGUE_KIND.get(result.entity)
            if catalogue is not None:
                app, _, name = result.entity_id.partition(":")
                self.fan_out(
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
            self.fan_out(
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
        return tx.effects(fx)

    def _unresolved(self, tx: Tx, fx: Effects, result: OperationResult, coords: Coords) -> Effects:
        """An assignment sent behind its user's upsert found no cloud user linked to its user
        (that upsert linked none: a conflict, a dead letter): it waits again for the user's cloud
        id, as it would have without going behind the upsert — parked here, on the partition
        its result came to, where the user's next result comes too (:meth:`on_result`). Unless
        a newer plan for its slot waits already (it supersedes this one); one the planner sent
        already is newer at the sink, which answers this one *superseded* when it comes."""
        raw = result.details.get("operation")
        op = CLOUD_OPERATION_ADAPTER.validate_python(raw) if raw is not None else None
        if not isinstance(op, AssignAccess):
            return fx
        p = coords.partition
        ref = keys.entity_ref(op.entity, op.entity_id)
        slot = slot_of(op)
        for item in tx.get(keys.parked_key(ref)) or ():
            if item["slot"] == slot and item["op"]["source_version"] >= op.source_version:
                return fx  # waiting already: the same plan, or a newer one
        now = self.clock()
        ids = self.knowledge.identities(tx, p)
        apps = tuple(sorted(op.services, key=lambda a: a.value))
        needs = planner.needs_of(op, ids, apps)
        if needs:
            parking.park(tx, fx, p, Parked(op, needs, apps), now)
        elif needs is not None:  # its user became known here meanwhile
            fx.send_operation(planner.with_cloud_ids(op, ids))
        return tx.effects(fx)

    @staticmethod
    def _home(tx: Tx, result: OperationResult) -> int | None:
        """The partition a user's directory events arrive on, if this worker's table knows it:
        the only partition that needs the user's cloud id (only the user's own operations
        wait for it, and they are planned from its events). None: not known here (another
        worker owns the partition, or the value predates the field): every partition."""
        raw = tx.get(keys.entity_key(keys.entity_ref(EntityType.USER, result.entity_id)))
        home = raw.get("p") if raw is not None else None
        return home if isinstance(home, int) else None

    def fan_out(self, fx: Effects, fact: PlannerFact) -> None:
        """Send ``fact`` to every partition."""
        for partition in range(self.partitions):
            fx.send("facts", fact.key, fact, partition)

    # -- facts: one partition's copy ----------------------------------------------------

    def on_fact(self, tx: Tx, fact: PlannerFact, coords: Coords) -> Effects:
        """Record a fact in this partition's copy; release what waited for it."""
        fx = Effects()
        p = coords.partition
        kkey = keys.fact_key(p, fact.key)
        old = tx.get(kkey)
        now = self.clock()
        if fact.kind in (FactKind.USER, FactKind.COMPANY):
            if not fact.present and fact.kind is FactKind.USER and old is None:
                parking.drop_revokes(tx, fx, p, Need.user(fact.subject), now)
                fx.acks_first = bool(fx.sends)
                return tx.effects(fx)
            if not fact.present or not fact.cloud_id or old == fact.cloud_id:
                return fx
            tx.set(kkey, fact.cloud_id, late=True)
            self._release(tx, fx, p, fact, now)
        elif fact.kind is FactKind.CONNECT:
            copy = connection.newer(old, fact.present, _ts(fact.observed_at))
            if copy is None:
                return fx
            tx.set(kkey, copy, late=True)
            if fact.present and not (old and old["present"]):
                parking.release(tx, fx, self.knowledge, p, Need.connect(), now)
        elif fact.kind is FactKind.REVIEW:
            if not reviews.supersedes(old, fact.present, _ts(fact.observed_at)):
                return fx
            tx.set(kkey, reviews.copy_of(fact), late=True)
            if not fact.present and old is not None and old["w"]:
                parking.release(tx, fx, self.knowledge, p, Need.review(fact.subject), now)
        elif fact.kind is FactKind.CATALOGUE:
            if old is not None and old["at"] >= _ts(fact.observed_at):
                return fx
            tx.set(kkey, {"present": fact.present, "at": _ts(fact.observed_at)}, late=True)
            if fact.present and not (old and old["present"]):
                self._release(tx, fx, p, fact, now)
        else:
            app = ApplicationType(fact.subject)
            before = self.knowledge.verdict(tx, p, app)
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
            after = self.knowledge.verdict(tx, p, app)
            if before.blocked and not after.blocked:
                parking.release(tx, fx, self.knowledge, p, Need.application(app), now)
            if after != before or fact.kind is FactKind.REGISTRY:
                self.review_home(tx, fx, p, app, now, fact.observed_at)
        fx.acks_first = bool(fx.sends)
        return tx.effects(fx)

    def _release(self, tx: Tx, fx: Effects, p: int, fact: PlannerFact, now: datetime) -> None:
        need = Need.of_fact(fact.kind, fact.subject)
        if need is not None:
            parking.release(tx, fx, self.knowledge, p, need, now)

    def review_home(
        self,
        tx: Tx,
        fx: Effects,
        p: int,
        app: ApplicationType,
        now: datetime,
        committed_at: datetime,
        pending: InstanceSeen | None = None,
    ) -> None:
        """On the instance's home partition (the one its directory events arrive on), say what
        the verdict is — once per instance version and registry — and register an instance the
        cloud lacks.

        The home is the partition that reviewed the instance's event (``pending``: the directory
        path) and so holds a ``reviewed`` key of its own. Not "the partition whose store holds
        the entity": a worker owning several partitions keeps them in one store, so every one
        of its partitions would find the entity and say the same verdict again (once per
        partition: six journal entries for one mismatch)."""
        reviewed = keys.known_key(p, Known.REVIEWED, app.value)
        already = tx.get(reviewed)
        if already is None and pending is None:
            return  # not the home partition, or the instance's event has not arrived yet
        instance = self.knowledge.instance(tx, p, app)
        if pending is not None and (instance is None or pending.version > instance.version):
            instance = pending
        registry_raw = tx.get(keys.registry_key(p, app))
        ref = f"{registry_raw['at']:.6f}" if registry_raw else "none"
        said = f"{instance.version if instance else 0}|{ref}"
        if already == said:
            return  # said already, for this instance version and this registry
        tx.set(reviewed, said)
        _, ops, entries = planner.review_instance(
            app, instance, self.knowledge.registry(tx, p, app), committed_at=committed_at, now=now, ref=ref
        )
        for op in ops:
            if connection.is_connected(tx, p):
                fx.send("operations", op.aggregate, op)
            else:  # a registry from a connect that did not finish: nothing goes before it did
                parking.park(tx, fx, p, Parked(op, (Need.connect(),)), now)
                connection.awaited(tx, fx, p, op)
        for entry in entries:
            journal.record(fx, entry, now)
