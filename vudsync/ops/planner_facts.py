"""What the planner has been told, read from ``vud.planner.facts``: the connection, reviews and
each application's verdict.

Every fact that concerns the whole installation reaches every partition of the facts topic, so
partition 0 holds them all (a user's cloud id may go to one partition only: not read here).
Only the keys ``connect:…``, ``review:…``, ``registry:…`` and ``instance:…`` are decoded; the
planner's own rules fold them (:mod:`processors.connection`, :mod:`processors.reviews`,
:func:`processors.planner.instance_verdict`), so this reader and the planner agree. Nothing is
committed and no group is joined.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kernel.settings import Settings
from processors import connection, reviews
from processors.model import InstanceSeen, Registry, VerdictStatus
from processors.planner import instance_verdict
from processors.reviews import WaitingCompany
from schemas.results import FactKind, PlannerFact
from schemas.topics import PLANNER_FACTS
from vudsync.ops.kafka_admin import group_admin
from vudsync.ops.kafka_reader import read_ranges

_WANTED = tuple(
    f"{kind.value}:".encode()
    for kind in (FactKind.CONNECT, FactKind.REVIEW, FactKind.REGISTRY, FactKind.INSTANCE)
)


@dataclass(frozen=True)
class PlannerFactsNow:
    """``connected``: the last connect fact said connected (False: never connected, or
    disconnected since); ``reviews``: the companies waiting for review, oldest first;
    ``disconnected``: the last connect fact says not connected, after a connect (``vudsync
    disconnect``); ``mismatched``: the applications whose on-premise instance differs from the cloud's
    registration (their assignments are held), with the differing fields (never values)."""

    connected: bool
    reviews: list[WaitingCompany]
    mismatched: dict[str, tuple[str, ...]] = field(default_factory=dict)
    disconnected: bool = False  # connected once, then `vudsync disconnect`

    @property
    def high_water(self) -> int | None:
        """The highest number listed: ``review accept --all-up-to`` it accepts exactly these."""
        return self.reviews[-1].number if self.reviews else None

    def up_to(self, number: int) -> list[WaitingCompany]:
        return [w for w in self.reviews if w.number <= number]


def fold(records: list[tuple[int, PlannerFact]]) -> PlannerFactsNow:
    """Partition 0's connect and review facts (``(offset, fact)`` in offset order), folded by
    the planner's rules (pure)."""
    state = None
    registry: dict[str, PlannerFact] = {}
    instance: dict[str, PlannerFact] = {}
    for _, fact in records:
        if fact.kind is FactKind.CONNECT:
            state = connection.newer(state, fact.present, fact.observed_at.timestamp()) or state
        elif fact.kind is FactKind.REGISTRY:  # a later observation wins
            old = registry.get(fact.subject)
            if old is None or fact.observed_at > old.observed_at:
                registry[fact.subject] = fact
        elif fact.kind is FactKind.INSTANCE:  # a higher version wins
            seen = instance.get(fact.subject)
            if seen is None or fact.version > seen.version:
                instance[fact.subject] = fact
    mismatched: dict[str, tuple[str, ...]] = {}
    for app, reg in registry.items():
        on_premise = instance.get(app)
        verdict = instance_verdict(
            None
            if on_premise is None
            else InstanceSeen(
                on_premise.uri or "",
                on_premise.license_fingerprint or "",
                on_premise.version,
                on_premise.present,
            ),
            Registry(reg.present, reg.uri, reg.license_fingerprint),
        )
        if verdict.status is VerdictStatus.MISMATCH:
            mismatched[app] = verdict.differing
    return PlannerFactsNow(
        bool(state and state["present"]),
        reviews.waiting_companies(records),
        dict(sorted(mismatched.items())),
        disconnected=state is not None and not state["present"],
    )


def read_planner_facts(settings: Settings, bootstrap: str, timeout: float = 60.0) -> PlannerFactsNow:
    """What partition 0 of the facts topic says now (a topic that does not exist yet: nothing)."""
    topic = settings.topic(PLANNER_FACTS.name)
    security = settings.kafka_security()
    with group_admin(bootstrap, security=security) as admin:
        partitions = [tp for tp in admin.partitions([topic]) if tp[1] == 0]
        start, end = admin.start_offsets(partitions), admin.end_offsets(partitions)
    ranges = {tp: (start.get(tp, 0), end.get(tp, 0)) for tp in partitions}
    records: list[tuple[int, PlannerFact]] = []
    for record in read_ranges(
        bootstrap, ranges, timeout=timeout, client_id="vudsync-facts", security=security
    ):
        if not (record.key or b"").startswith(_WANTED):
            continue
        try:
            records.append((record.offset, PlannerFact.model_validate_json(record.value or b"")))
        except ValueError:
            continue  # not a fact: not the planner's either
    return fold(records)
