"""The accidental-delete gate on the planner's table: requests, decisions, held deletions. Pure.

The gate's rule lives in :mod:`processors.deletions`; its messages in :mod:`processors.control`.
Here is what the planner does with those messages on ``vud.planner.control``:

- on partition 0 (:data:`~processors.control.GATE_PARTITION`), a :class:`DeletionRequested` is
  numbered (``g|seq``) and remembered under ``g|h|<n>`` (``g|hc|<candidate>``: its number) while
  it waits: *pending* until its window settles — then every pending request is *granted* — or
  *held* until an operator decides, when the window passes the threshold (then every pending
  request is held with it). A request asked again gets the same answer (``g|d|<candidate>``).
  A :class:`GateTick` (or the next request) moves the gate's clock, which closes a quiet
  window. An operator's :class:`DeletionsDecided` (``vudsync deletes approve|reject
  --up-to <n>``) settles the held requests numbered up to ``n``, no more;
- on the requesting partition, a :class:`DeletionDecided` is copied into the partition's
  knowledge (``k|<p>|deletion:<candidate>``) and releases the deletion that waited for it (a
  rejected one is dropped, never applied); a :class:`DeletionHeld` puts a *held* result for the
  waiting deletion in the event journal.

Releases are sent and acknowledged before the table forgets them (``acks_first``), like a fact's.

Counting held deletions is done in one place for every reader: :func:`held_deletions` (the
gate's table, for the gauge) and :func:`outstanding` (the control topic, for ``vudsync
deletes list`` and ``approve``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from processors import connection, deletions, journal, keys, parking
from processors.control import (
    GATE_PARTITION,
    ConnectAwaited,
    DeletionDecided,
    DeletionHeld,
    DeletionRequested,
    DeletionsDecided,
    GateTick,
)
from processors.deletions import Arrival, GateState
from processors.effects import Coords, Effects, Tx
from processors.keys import Known
from processors.knowledge import Knowledge
from processors.model import Decision, DeletesFrom, DeletionRequest, PlannerSettings
from processors.needs import Need
from schemas.results import ResultOutcome

_HELD = "held"  # marks a held request in its g|h value (the others are pending)


class Gate:
    """The gate's messages, over one partition's table."""

    def __init__(
        self, knowledge: Knowledge, settings: PlannerSettings, clock: Callable[[], datetime]
    ) -> None:
        self.knowledge = knowledge
        self.settings = settings
        self.clock = clock

    def on_control(self, tx: Tx, msg: BaseModel, coords: Coords) -> Effects:
        fx = Effects()
        now = self.clock()
        if isinstance(msg, DeletionRequested):
            self._request(tx, fx, msg)
        elif isinstance(msg, GateTick):
            state = GateState.from_json(tx.get(keys.GATE_STATE))
            settled = self._settle(tx, fx, state, msg.at.timestamp())
            if settled is not state:
                tx.set(keys.GATE_STATE, settled.to_json())
        elif isinstance(msg, DeletionsDecided):
            self._operator(tx, fx, msg)
        elif isinstance(msg, DeletionDecided):
            p = coords.partition
            tx.set(keys.known_key(p, Known.DELETION, msg.candidate), msg.decision.value, late=True)
            parking.release(tx, fx, self.knowledge, p, Need.deletion(msg.candidate), now)
        elif isinstance(msg, ConnectAwaited):
            connection.say_waiting(tx, fx, coords.partition, msg, now)
        elif isinstance(msg, DeletionHeld):
            for ref in parking.waiting_for(tx, coords.partition, Need.deletion(msg.candidate)):
                for item in tx.get(keys.parked_key(ref)) or []:
                    if item.get("del") == msg.candidate:
                        op = parking.parked_from_json(item).operation
                        held = journal.operation_result(op, ResultOutcome.HELD, now, reason=msg.reason)
                        fx.send("results", op.entity_id, held)
        fx.acks_first = bool(fx.sends)
        return tx.effects(fx)

    def _request(self, tx: Tx, fx: Effects, req: DeletionRequested) -> None:
        decided = tx.get(keys.gate_decided_key(req.candidate))
        if decided is not None:  # asked again (a redelivery upstream): the same answer
            fx.send("control", req.candidate, _decided(req, Decision(decided)), req.partition)
            return
        number = tx.get(keys.gate_candidate_key(req.candidate))
        if number is not None:  # pending or held already
            raw = tx.get(keys.gate_held_key(number))
            if raw is not None and raw.get(_HELD):  # held: the same answer, to the asking partition
                # (a repair re-planned by the next `verify --repair` pass says "held" again)
                notice = DeletionHeld(
                    candidate=req.candidate,
                    partition=req.partition,
                    reason=self._reason(number),
                    seq=number,
                    deletes_from=req.deletes_from,
                )
                fx.send("control", req.candidate, notice, req.partition)
            return
        arrived = (req.requested_at or req.committed_at).timestamp()
        # the request's stamp moves the gate's clock: a window quiet for long enough goes first
        state = self._settle(tx, fx, GateState.from_json(tx.get(keys.GATE_STATE)), arrived)
        state, arrival = deletions.on_arrival(
            state,
            committed_at=req.committed_at.timestamp(),
            arrived_at=arrived,
            partition=req.partition,
            live=req.live,
            settings=self.settings,
        )
        seq = _seq(tx)
        n = seq["next"]
        tx.set(keys.GATE_SEQ, {**seq, "next": n + 1})
        tx.set(keys.gate_candidate_key(req.candidate), n)
        entry = req.model_dump(mode="json")
        if arrival is Arrival.PENDING:
            tx.set(keys.gate_held_key(n), entry)
            state = self._settle(tx, fx, state, arrived)  # no settling time: granted at once
        else:
            if arrival is Arrival.HOLD_WINDOW:  # the whole window is held with it
                for i in range(seq["first"], n):
                    raw = tx.get(keys.gate_held_key(i))
                    if raw is not None and not raw.get(_HELD):
                        self._hold(tx, fx, i, raw)
            self._hold(tx, fx, n, entry)
        tx.set(keys.GATE_STATE, state.to_json())

    def _hold(self, tx: Tx, fx: Effects, n: int, raw: dict[str, Any]) -> None:
        req = _request_of(raw)
        tx.set(keys.gate_held_key(n), {**raw, _HELD: True})
        fx.send(
            "control",
            req.candidate,
            DeletionHeld(
                candidate=req.candidate,
                partition=req.partition,
                reason=self._reason(n),
                seq=n,
                deletes_from=req.deletes_from,
            ),
            req.partition,
        )
        fx.journal.append("deletion_held")

    def _reason(self, n: int) -> str:
        return (
            f"held as #{n}: more than {self.settings.deletes_threshold} deletions within "
            f"{self.settings.deletes_window_seconds:.0f}s; the whole burst waits for "
            f"`vudsync deletes list`, then `vudsync deletes approve --up-to <n>` (or reject)"
        )

    def _settle(self, tx: Tx, fx: Effects, state: GateState, now: float) -> GateState:
        """Grant every pending request if the window has settled by ``now``."""
        state, released = deletions.on_tick(state, now, self.settings)
        if not released:
            return state
        seq = _seq(tx)
        for i in range(seq["first"], seq["next"]):
            raw = tx.get(keys.gate_held_key(i))
            if raw is not None and not raw.get(_HELD):
                self._decide(tx, fx, i, _request_of(raw), Decision.GRANTED)
        tx.set(keys.GATE_SEQ, _advanced(tx, seq))
        return state

    def _decide(self, tx: Tx, fx: Effects, n: int, req: DeletionRequested, decision: Decision) -> None:
        tx.set(keys.gate_decided_key(req.candidate), decision.value)
        tx.set(keys.gate_candidate_key(req.candidate), None)
        tx.set(keys.gate_held_key(n), None)
        fx.send("control", req.candidate, _decided(req, decision), req.partition)

    def _operator(self, tx: Tx, fx: Effects, msg: DeletionsDecided) -> None:
        if msg.approve and msg.up_to is None:
            fx.journal.append("deletions_approval_unbounded")  # approves nothing it did not name
            return
        decision = Decision.APPROVED if msg.approve else Decision.REJECTED
        seq = _seq(tx)
        last = seq["next"] - 1 if msg.up_to is None else min(msg.up_to, seq["next"] - 1)
        settled = 0
        for i in range(seq["first"], last + 1):
            raw = tx.get(keys.gate_held_key(i))
            if raw is not None and raw.get(_HELD):
                self._decide(tx, fx, i, _request_of(raw), decision)
                settled += 1
        tx.set(keys.GATE_SEQ, _advanced(tx, seq))
        state = deletions.on_operator(GateState.from_json(tx.get(keys.GATE_STATE)), settled)
        tx.set(keys.GATE_STATE, state.to_json(), late=True)
        fx.journal.append("deletions_approved" if msg.approve else "deletions_rejected")


def request(tx: Tx, fx: Effects, p: int, deletion: DeletionRequest, now: datetime) -> None:
    """Ask the gate (partition 0) whether ``deletion``, whose operations wait on partition
    ``p``, may go: the answer comes back to ``p`` (:class:`DeletionDecided`, or
    :class:`DeletionHeld` first)."""
    request = DeletionRequested(
        candidate=deletion.candidate,
        entity=deletion.entity,
        entity_id=deletion.entity_id,
        version=deletion.version,
        committed_at=deletion.committed_at,
        partition=p,
        live=tx.get(keys.live_key(p)) or 0,
        requested_at=now,
        deletes_from=deletion.deletes_from,
    )
    fx.send("control", deletion.candidate, request, GATE_PARTITION)


def _seq(tx: Tx) -> dict[str, int]:
    """``first``: the lowest number that may still wait; ``next``: the next to give."""
    return dict(tx.get(keys.GATE_SEQ) or {"first": 0, "next": 0})


def _advanced(tx: Tx, seq: dict[str, int]) -> dict[str, int]:
    first = seq["first"]
    while first < seq["next"] and tx.get(keys.gate_held_key(first)) is None:
        first += 1
    return {**seq, "first": first}


def _request_of(raw: Mapping[str, Any]) -> DeletionRequested:
    return DeletionRequested.model_validate({k: v for k, v in raw.items() if k != _HELD})


def _decided(req: DeletionRequested, decision: Decision) -> DeletionDecided:
    return DeletionDecided(candidate=req.candidate, partition=req.partition, decision=decision)


# -- counting, for every reader --------------------------------------------------------------


def held_deletions(store: Mapping[str, Any]) -> int:
    """Deletions the gate holds (0 unless this worker owns partition 0)."""
    return GateState.from_json(store.get(keys.GATE_STATE)).held


def tick_due(store: Mapping[str, Any], clock: Callable[[], datetime]) -> GateTick | None:
    """A tick for the gate when deletions settle in this worker's table (it owns partition 0)."""
    if not deletions.settling(GateState.from_json(store.get(keys.GATE_STATE))):
        return None
    return GateTick(at=clock())


@dataclass(frozen=True)
class HeldDeletion:
    """One deletion the gate holds, as ``vudsync deletes list`` shows it."""

    seq: int
    candidate: str  # <entity>:<id>:<version>
    partition: int
    reason: str
    deletes_from: DeletesFrom = "cloud"  # "directory": the writeback's revoke in the store

    @property
    def entity(self) -> str:
        return self.candidate.split(":", 1)[0]

    @property
    def entity_id(self) -> str:
        return self.candidate.split(":", 1)[1].rsplit(":", 1)[0]

    @property
    def version(self) -> int:
        return int(self.candidate.rsplit(":", 1)[1])


def outstanding(messages: Iterable[BaseModel]) -> list[HeldDeletion]:
    """The deletions held now, in the gate's order, from the control topic's messages in any
    order (a candidate is decided at most once: held, less decided, is what is held now)."""
    held: dict[str, HeldDeletion] = {}
    decided: set[str] = set()
    for msg in messages:
        if isinstance(msg, DeletionHeld) and msg.seq is not None:
            held[msg.candidate] = HeldDeletion(
                msg.seq, msg.candidate, msg.partition, msg.reason, msg.deletes_from
            )
        elif isinstance(msg, DeletionDecided):
            decided.add(msg.candidate)
    return sorted((h for c, h in held.items() if c not in decided), key=lambda h: h.seq)
