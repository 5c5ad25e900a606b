"""Parking: operations that wait for their needs, and their release. Pure.

An operation whose needs (:mod:`processors.needs`) are not met is *parked* under its entity's
``p|`` key, one item per *slot* (the newest plan for a slot supersedes what waited in it), and
its entity is listed under each of its needs in the need index (``n|<p>|<need>``, in buckets of
:data:`BUCKET` entity refs, so that a company a thousand users wait for is not one ever-growing
value rewritten per user) — except a user's own cloud id (``user:<id>``), which only that user's
operations wait for, parked under its own ``p|`` key by the events of the partition its ``e|``
value names (``p``): that entry is implied, not written (:func:`index` with ``home``), so
assignments waiting for their user's creation write no index and delete none. (A new user's
assignments planned with its upsert do not wait for its id at all: they go behind the upsert,
:func:`processors.planner.needs_of`, ``behind``.) When a need is met — a fact arrives, an
application's verdict clears, the gate decides — every entity listed under it is decided
again: what may go is sent, what still waits is indexed under its remaining needs (and reported
again with them, as a parked or blocked result), a rejected deletion is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from processors import journal, keys, planner
from processors.effects import Effects, Tx
from processors.knowledge import Knowledge
from processors.model import DIRECTORY_OPERATIONS, Parked, slot_of
from processors.needs import Need, NeedKind
from schemas.directory import ApplicationType, EntityType
from schemas.directory_operations import DIRECTORY_OPERATION_ADAPTER
from schemas.operations import CLOUD_OPERATION_ADAPTER
from schemas.results import ResultOutcome

BUCKET = 256  # entity keys per index bucket
#: the ``op`` kind of a parked item that is no operation but a cloud change of the writeback
#: waiting for its user or company (:mod:`processors.cloud_changes`): a release hands it back
#: to be decided again (:attr:`Effects.released`) instead of sending it
CLOUD_CHANGE = "writeback.cloud_change"


@dataclass(frozen=True)
class Waiting:
    """Operations waiting in the table, one state each (the planner's gauges, one per state).

    - ``held``: waits for the accidental-delete gate (a ``deletion:`` need) — the
      deactivations and revokes of a deletion the gate holds or is about to decide;
    - ``blocked``: waits for its application to match the cloud (an ``application:`` need);
    - ``parked``: waits only for facts (cloud ids, catalogue entries).

    Held comes first: a deletion waits for an operator whatever else it needs.
    """

    parked: int = 0
    held: int = 0
    blocked: int = 0

    @property
    def total(self) -> int:
        return self.parked + self.held + self.blocked


_HELD_PREFIX = f"{NeedKind.DELETION.value}:"
_USER_PREFIX = f"{NeedKind.USER.value}:"
_BLOCKED_PREFIX = f"{NeedKind.APPLICATION.value}:"


def count_waiting(values: Iterable[Iterable[Mapping[str, Any]]]) -> Waiting:
    """Classify the parked items of ``p|`` values (see :class:`Waiting`)."""
    parked = held = blocked = 0
    # plain loops, no generator per item: the gauges count every parked item every few
    # seconds (70,000 of them in a 100,000-user initial sync)
    for items in values:
        for item in items:
            found = 0  # 2: held, 1: blocked
            for need in item.get("needs") or ():
                if need.startswith(_HELD_PREFIX):
                    found = 2
                    break
                if need.startswith(_BLOCKED_PREFIX):
                    found = 1
            if found == 2:
                held += 1
            elif found:
                blocked += 1
            else:
                parked += 1
    return Waiting(parked, held, blocked)


def parked_json(p: Parked) -> dict[str, Any]:
    """The table value of one parked item (``tag`` only for a repair's)."""
    value: dict[str, Any] = {
        "slot": slot_of(p.operation),
        "op": p.operation.model_dump(mode="json"),
        "needs": [n.encode() for n in p.needs],
        "apps": [a.value for a in p.apps],
        "del": p.deletion,
    }
    if p.tag:
        value["tag"] = p.tag
    if p.behind:
        value["behind"] = True
    return value


def parked_from_json(raw: Mapping[str, Any]) -> Parked:
    op = raw["op"]
    directory = op["kind"].startswith("directory.")  # the writeback's, held by the gate
    adapter: Any = DIRECTORY_OPERATION_ADAPTER if directory else CLOUD_OPERATION_ADAPTER
    return Parked(
        adapter.validate_python(op),
        tuple(Need.decode(n) for n in raw["needs"]),
        tuple(ApplicationType(a) for a in raw["apps"]),
        raw.get("del"),
        raw.get("tag") or "",
        bool(raw.get("behind")),
    )


def _own_user(need: str) -> str | None:
    """The entity ref of the user whose own cloud id ``need`` (encoded) is, else None."""
    if not need.startswith(_USER_PREFIX):
        return None
    return keys.entity_ref(EntityType.USER, need[len(_USER_PREFIX) :])


def index(tx: Tx, p: int, need: str, ref: str, *, home: bool = False) -> None:
    """List entity ``ref`` under ``need`` (encoded) on partition ``p``.

    ``home``: ``p`` is the partition ``ref``'s ``e|`` value names (its events arrive there, and
    the caller's step writes it so) — then a user's own cloud id is not listed: :func:`waiting_for`
    finds the user's ``p|`` key from the need itself."""
    if home and _own_user(need) == ref:
        return
    base = keys.index_key(p, need)
    buckets = tx.get(base) or 0
    last = tx.get(keys.bucket_key(p, need, buckets - 1)) if buckets else None
    if last is not None and ref in last:
        return
    if last is None or len(last) >= BUCKET:
        tx.set(base, buckets + 1)
        tx.set(keys.bucket_key(p, need, buckets), [ref])
    else:
        tx.set(keys.bucket_key(p, need, buckets - 1), [*last, ref])


def waiting_for(tx: Tx, p: int, need: Need) -> list[str]:
    """The entities with operations waiting for ``need`` on partition ``p``, in index order."""
    encoded = need.encode()
    refs: dict[str, None] = {}
    for i in range(tx.get(keys.index_key(p, encoded)) or 0):
        refs.update(dict.fromkeys(tx.get(keys.bucket_key(p, encoded, i)) or ()))
    if need.kind is NeedKind.USER:  # the user's own entry is implied (:func:`index`, ``home``)
        ref = keys.entity_ref(EntityType.USER, need.subject)
        raw = tx.get(keys.entity_key(ref))
        if raw is not None and raw.get("p") == p and tx.get(keys.parked_key(ref)):
            refs[ref] = None
    return list(refs)


def park(tx: Tx, fx: Effects, p: int, parked: Parked, now: datetime) -> None:
    """Park one operation planned outside a directory event (it supersedes what waited in its
    slot), index it under its needs and say so (a parked or blocked result)."""
    op = parked.operation
    ref = keys.entity_ref(op.entity, op.entity_id)
    pkey = keys.parked_key(ref)
    item = parked_json(parked)
    items = tx.get(pkey) or []
    kept = [i for i in items if i["slot"] != item["slot"]]
    for old in items:
        if old["slot"] == item["slot"] and old["op"]["operation_id"] != op.operation_id:
            gone = parked_from_json(old).operation
            fx.send("results", gone.entity_id, journal.operation_result(gone, ResultOutcome.SUPERSEDED, now))
    tx.set(pkey, [*kept, item])
    for need in item["needs"]:
        index(tx, p, need, ref)
    outcome = ResultOutcome.BLOCKED if any(n.blocks for n in parked.needs) else ResultOutcome.PARKED
    fx.send("results", op.entity_id, journal.operation_result(op, outcome, now, waiting_for=item["needs"]))


def drop_revokes(tx: Tx, fx: Effects, p: int, need: Need, now: datetime) -> None:
    """The cloud has no user linked to the one ``need`` names: the revokes waiting for its cloud
    id have nothing to revoke (the user never reached the cloud through vudsync: assignments wait
    for its cloud id too). Each is settled (*superseded*, with the reason) and forgotten; whatever
    else waits stays."""
    encoded = need.encode()
    for ref in waiting_for(tx, p, need):
        items = tx.get(keys.parked_key(ref)) or []
        still = []
        for item in items:
            if encoded in item["needs"] and item["op"]["kind"] == "access.revoke":
                op = parked_from_json(item).operation
                reason = "no cloud user is linked to this user: nothing to revoke"
                fx.send(
                    "results",
                    op.entity_id,
                    journal.operation_result(op, ResultOutcome.SUPERSEDED, now, reason=reason),
                )
            else:
                still.append(item)
        if len(still) != len(items):
            tx.set(keys.parked_key(ref), still or None)


def release(tx: Tx, fx: Effects, knowledge: Knowledge, p: int, need: Need, now: datetime) -> None:
    """Send what waited for ``need`` and may go now; re-index what still waits."""
    refs = waiting_for(tx, p, need)
    encoded = need.encode()
    base = keys.index_key(p, encoded)
    buckets = tx.get(base) or 0
    for i in range(buckets):
        tx.set(keys.bucket_key(p, encoded, i), None)
    if buckets:  # an implied entry (a user's own id) has no index to delete: no tombstone either
        tx.set(base, None)
    if not refs:
        return
    ids = knowledge.identities(tx, p)
    for ref in refs:
        items = tx.get(keys.parked_key(ref)) or []
        still: list[dict[str, Any]] = []
        for item in items:
            if encoded not in item["needs"]:
                still.append(item)
                continue
            if item["op"]["kind"] == CLOUD_CHANGE:  # decided again (and parked again if it still waits)
                fx.released.append(item["op"]["change"])
                continue
            parked = parked_from_json(item)
            verdict, value = planner.settle(parked, ids)
            if verdict == "send":
                fx.send_operation(value)  # type: ignore[arg-type]
            elif verdict == "drop":
                fx.send(
                    "results",
                    parked.operation.entity_id,
                    journal.operation_result(
                        parked.operation, ResultOutcome.REJECTED, now, reason="deletion rejected"
                    ),
                )
                if parked.operation.kind == "directory.access.revoke":  # the directory's entry stands
                    fx.rejected.append(parked.operation)
            else:
                needs: tuple[Need, ...] = value  # type: ignore[assignment]
                unblocked = planner.release_unblocked(parked, ids, need)
                if unblocked is not None:  # a blocked application holds only its own access
                    fx.send("operations", unblocked.aggregate, unblocked)
                remaining = [n.encode() for n in needs]
                for n in remaining:
                    if n not in item["needs"]:
                        index(tx, p, n, ref)
                still.append({**item, "needs": remaining})
                if set(remaining) != set(item["needs"]):
                    now_waiting = Parked(
                        parked.operation, needs, parked.apps, parked.deletion, behind=parked.behind
                    )
                    if not isinstance(parked.operation, DIRECTORY_OPERATIONS):  # staging: the cloud's
                        fx.waiting.append((now_waiting, parked.needs))
                    # the journal says what it waits for now (explain, parked list), and a blocked
                    # operation that only waits for facts now is parked, no longer blocked
                    outcome = ResultOutcome.BLOCKED if any(n.blocks for n in needs) else ResultOutcome.PARKED
                    fx.send(
                        "results",
                        parked.operation.entity_id,
                        journal.operation_result(parked.operation, outcome, now, waiting_for=remaining),
                    )
        if still != items:
            tx.set(keys.parked_key(ref), still or None)
