"""The accidental-delete gate on the planner's table: requests, decisions, held deletions. Pure.

The gate's rule lives in :mod:`processors.deletions`; its messages in :mod:`processors.control`.
Here is what the planner does with those messages on ``vud.planner.control``:

- on partition 0 (:data:`~processors.control.GATE_PARTITION`), a :class:`DeletionRequested` is
  counted and answered — *granted*, or *held* (remembered under ``g|h|<n>`` until an operator
  decides; a request asked again gets the same answer, from ``g|d|<candidate>``); an operator's
  :class:`DeletionsDecided` (``vudsync deletes approve`` / ``reject``) settles everything held;
- on the requesting partition, a :class:`DeletionDecided` is copied into the partition's
  knowledge (``k|<p>|deletion:<candidate>``) and releases the deletion that waited for it (a
  rejected one is dropped, never applied); a :class:`DeletionHeld` puts a *held* result for the
  waiting deletion in the event journal.

Releases are sent and acknowledged before the table forgets them (``acks_first``), like a fact's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from processors import deletions, journal, keys, parking
from processors.control import DeletionDecided, DeletionHeld, DeletionRequested, DeletionsDecided
from processors.effects import Coords, Effects, Tx
from processors.keys import Known
from processors.knowledge import Knowledge
from processors.model import Decision, PlannerSettings
from processors.needs import Need
from schemas.results import ResultOutcome


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
        elif isinstance(msg, DeletionsDecided):
            self._operator(tx, fx, msg)
        elif isinstance(msg, DeletionDecided):
            p = coords.partition
            tx.set(keys.known_key(p, Known.DELETION, msg.candidate), msg.decision.value, late=True)
            parking.release(tx, fx, self.knowledge, p, Need.deletion(msg.candidate), now)
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
        if tx.get(keys.gate_candidate_key(req.candidate)) is not None:
            return  # held already
        state = deletions.GateState.from_json(tx.get(keys.GATE_STATE))
        state, decision = deletions.on_request(
            state,
            committed_at=req.committed_at.timestamp(),
            partition=req.partition,
            live=req.live,
            settings=self.settings,
        )
        tx.set(keys.GATE_STATE, state.to_json())
        if decision is not None:
            tx.set(keys.gate_decided_key(req.candidate), decision.value)
            fx.send("control", req.candidate, _decided(req, decision), req.partition)
            return
        seq = tx.get(keys.GATE_SEQ) or {"first": 0, "next": 0}
        tx.set(keys.gate_held_key(seq["next"]), req.model_dump(mode="json"))
        tx.set(keys.gate_candidate_key(req.candidate), seq["next"])
        tx.set(keys.GATE_SEQ, {**seq, "next": seq["next"] + 1})
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

    def _operator(self, tx: Tx, fx: Effects, msg: DeletionsDecided) -> None:
        state, decision = deletions.on_operator(
            deletions.GateState.from_json(tx.get(keys.GATE_STATE)), msg.approve
        )
        seq = tx.get(keys.GATE_SEQ) or {"first": 0, "next": 0}
        for i in range(seq["first"], seq["next"]):
            raw = tx.get(keys.gate_held_key(i))
            if raw is None:
                continue
            req = DeletionRequested.model_validate(raw)
            tx.set(keys.gate_decided_key(req.candidate), decision.value)
            tx.set(keys.gate_candidate_key(req.candidate), None)
            tx.set(keys.gate_held_key(i), None)
            fx.send("control", req.candidate, _decided(req, decision), req.partition)
        tx.set(keys.GATE_SEQ, {"first": seq["next"], "next": seq["next"]})
        tx.set(keys.GATE_STATE, state.to_json(), late=True)
        fx.journal.append("deletions_approved" if msg.approve else "deletions_rejected")


def held_deletions(store: Mapping[str, Any]) -> int:
    """Deletions the gate holds (0 unless this worker owns partition 0)."""
    return deletions.GateState.from_json(store.get(keys.GATE_STATE)).held


def _decided(req: DeletionRequested, decision: Decision) -> DeletionDecided:
    return DeletionDecided(candidate=req.candidate, partition=req.partition, decision=decision)
