"""Companies waiting for review before services are activated for them. Pure.

The seed's rule: "check that the companies have valid information before activating any other
cloud services for these companies". When the sink links an on-premise company to a cloud
company that existed before — found by organisation number, not created by vudsync (the
result's ``effect`` says ``linked``) — the planner publishes a *review* fact
(``PlannerFact(kind=review, subject=<company id>, present=True, cloud_id=…)``) to every
partition, **before** the company's cloud-id fact: each partition knows the company waits
before anything waiting for the company can be released. Its ``observed_at`` is the commit
time on premise of the change whose upsert linked it — the same link however often its result
comes (a redelivery, a replay: the sink's ledger repeats "linked").

While it waits, an assignment of access to that company (what activates services for it)
waits for the need ``review:<company id>``; revokes, the company's own upsert and everything
per application (catalogues, instances) go as usual. A company vudsync created, or one already
linked to its on-premise id when ``vudsync connect`` read the cloud, needs no review.

``vudsync review accept`` publishes the same fact with ``present=False`` and the **same**
``observed_at``: it accepts exactly that link, whatever the operator's clock says. The rule,
for the partition's copy (``k|<p>|review:<company id>``, ``{"w", "at", "cloud"}``) and for the
CLI reading the facts topic alike (:func:`supersedes`): a waiting fact counts when it is newer
than the copy; an acceptance when it is not older. A link answered again after its acceptance
therefore stays accepted, and an acceptance that overtakes its link on a partition is already
there when the link comes. A later link of the company (a new ``observed_at``) waits again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.results import FactKind, OperationResult, PlannerFact, ResultOutcome

_APPLIED = (ResultOutcome.APPLIED, ResultOutcome.ALREADY_APPLIED)


def is_waiting(value: Any) -> bool:
    """A partition copy's word: does the company wait for review?"""
    return bool(value["w"])


def linked_existing(result: OperationResult) -> bool:
    """Did this result link an on-premise company to a cloud company that existed before?"""
    return (
        result.kind == "company.upsert"
        and result.outcome in _APPLIED
        and bool(result.cloud_id)
        and "linked" in (result.effect or "").split("+")
    )


def waiting_fact(result: OperationResult) -> PlannerFact:
    """The review fact a linking result becomes (``linked_existing(result)``)."""
    return PlannerFact(
        kind=FactKind.REVIEW,
        subject=result.entity_id,
        present=True,
        cloud_id=result.cloud_id,
        # the linking change's commit time, not the result's: the same link however often answered
        observed_at=result.source_committed_at,
        source="results",
    )


def accepted_fact(waiting: PlannerFact) -> PlannerFact:
    """The operator's acceptance of exactly that link."""
    return waiting.model_copy(update={"present": False, "source": "operator"})


def supersedes(old: Any, waiting: bool, at: float) -> bool:
    """Does a review fact (``waiting``, ``at``) replace the copy ``old`` (None: no copy)?"""
    if old is None:
        return True
    before: float = old["at"]
    if waiting:
        return at > before
    return at > before or (at == before and bool(old["w"]))


def copy_of(fact: PlannerFact) -> dict[str, Any]:
    return {"w": fact.present, "at": fact.observed_at.timestamp(), "cloud": fact.cloud_id}


@dataclass(frozen=True)
class WaitingCompany:
    """A company waiting for review, as the facts topic says: ``number`` is the offset of its
    waiting fact on partition 0 (what ``vudsync review accept --all-up-to`` names)."""

    number: int
    company_id: str
    cloud_id: str | None
    linked_at: datetime
    fact: PlannerFact


def waiting_companies(records: Iterable[tuple[int, PlannerFact]]) -> list[WaitingCompany]:
    """The companies waiting for review after the review facts ``records`` (``(offset, fact)``
    of one partition, in offset order; other kinds are skipped), oldest first — the planner's
    rule, so the CLI and the planner agree."""
    copies: dict[str, dict[str, Any]] = {}
    waits: dict[str, WaitingCompany] = {}
    for offset, fact in records:
        if fact.kind is not FactKind.REVIEW:
            continue
        at = fact.observed_at.timestamp()
        if not supersedes(copies.get(fact.subject), fact.present, at):
            continue
        copies[fact.subject] = copy_of(fact)
        if fact.present:
            waits[fact.subject] = WaitingCompany(offset, fact.subject, fact.cloud_id, fact.observed_at, fact)
        else:
            waits.pop(fact.subject, None)
    return sorted(waits.values(), key=lambda w: w.number)


def count_waiting(values: Iterable[Any]) -> int:
    """How many of a partition's review copies wait (the gauge)."""
    return sum(1 for v in values if v is not None and v["w"])
