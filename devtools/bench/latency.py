"""End-to-end latency of applied operations (store commit → applied in the cloud), per
operation kind and apart for the operations the accidental-delete gate held.

A destructive operation of a deletion candidate (a user deleted or deactivated, its access
revoked) waits in the planner for the gate's decision: by policy until no deletion has arrived
for ``VUDSYNC_PLANNER_DELETES_SETTLE`` seconds (or an operator's approval). Its latency is the
path's plus that deliberate wait, so one distribution over every operation mixes the two.
What the topics say about it:

- ``vud.cloud.results``: the planner's *parked* result of such an operation lists
  ``deletion:<candidate>`` in ``details.waiting_for`` (``recorded_at``: when it began to wait);
  the sink's *applied* result carries the same ``operation_id`` and its ``kind``;
- ``vud.planner.control``: the gate's :class:`~processors.control.DeletionDecided` for the
  candidate (granted, approved); its record's timestamp is when the gate decided.

*Held by the gate* = decision - parked (clipped to 0 … the whole latency); *without the gate's
hold* = latency - held. An operation parked for the gate whose decision is not on the control
topic has no held time (counted in ``held_unknown``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from devtools.bench import latency_figures, topic_reader
from kernel.kafka_security import PLAINTEXT, KafkaSecurity

GATE_NEED = "deletion:"
"""How a parked result names the gate's decision among what it waits for (``processors.needs``)."""


@dataclass(frozen=True)
class Applied:
    """One applied operation: its kind, store commit (Unix time), seconds from that commit to
    applied, and — when it waited for the gate — the seconds it was held there (None: held, for
    a time the topics do not tell)."""

    kind: str
    committed: float
    seconds: float
    gated: bool = False
    held_seconds: float | None = None


def applied_operations(
    bootstrap: str,
    results_topic: str,
    control_topic: str | None = None,
    *,
    security: KafkaSecurity = PLAINTEXT,
) -> list[Applied]:
    """Every applied operation on ``results_topic``; with ``control_topic``, whether and how
    long the gate held it (else none is marked gated)."""
    from schemas.codec import decode_model
    from schemas.results import OperationResult, ResultOutcome

    applied: list[OperationResult] = []
    waited: dict[str, tuple[str, float]] = {}  # operation id → (candidate, first parked for the gate)
    consumer = topic_reader(bootstrap, results_topic, security=security)
    try:
        for record in consumer:
            result = decode_model(OperationResult, record.value)
            if result.outcome is ResultOutcome.APPLIED:
                applied.append(result)
            elif result.outcome in (ResultOutcome.PARKED, ResultOutcome.HELD) and control_topic:
                candidate = _gate_candidate(result.details.get("waiting_for") or ())
                if candidate is not None and result.operation_id not in waited:
                    waited[result.operation_id] = (candidate, result.recorded_at.timestamp())
    finally:
        consumer.close()
    decided = _gate_decisions(bootstrap, control_topic, security) if control_topic and waited else {}
    out: list[Applied] = []
    for result in applied:
        committed = result.source_committed_at.timestamp()
        seconds = (result.recorded_at - result.source_committed_at).total_seconds()
        gate = waited.get(result.operation_id)
        if gate is None:
            out.append(Applied(result.kind, committed, seconds))
            continue
        candidate, parked_at = gate
        at = decided.get(candidate)
        held = None if at is None else min(max(0.0, at - parked_at), max(0.0, seconds))
        out.append(Applied(result.kind, committed, seconds, gated=True, held_seconds=held))
    return out


def _gate_candidate(waiting_for: Any) -> str | None:
    for need in waiting_for:
        if isinstance(need, str) and need.startswith(GATE_NEED):
            return need[len(GATE_NEED) :]
    return None


def _gate_decisions(bootstrap: str, topic: str, security: KafkaSecurity) -> dict[str, float]:
    """Candidate → when the gate first let it go (granted or approved), from the record's
    timestamp on the control topic."""
    from processors.control import CONTROL_ADAPTER, DeletionDecided
    from processors.model import Decision

    out: dict[str, float] = {}
    consumer = topic_reader(bootstrap, topic, security=security)
    try:
        for record in consumer:
            if b"deletion.decided" not in (record.value or b""):
                continue  # requests, ticks, notices: no need to decode
            msg = CONTROL_ADAPTER.validate_json(record.value)
            if isinstance(msg, DeletionDecided) and msg.decision is not Decision.REJECTED:
                at = record.timestamp / 1000
                out[msg.candidate] = min(at, out.get(msg.candidate, at))
    finally:
        consumer.close()
    return out


BREAKDOWN = ("latency_by_kind", "ungated", "gated", "gated_basis")
"""The keys :func:`breakdown` adds to a report."""


def _figures(seconds: list[float]) -> dict[str, Any]:
    return {"operations": len(seconds), **latency_figures(seconds)}


def breakdown(applied: list[Applied]) -> dict[str, Any]:
    """Latency figures per operation kind, for the operations the gate did not hold
    (``ungated``) and for those it did (``gated``: as measured, the time held, and without it)."""
    by_kind: dict[str, list[float]] = defaultdict(list)
    for a in applied:
        by_kind[a.kind].append(a.seconds)
    gated = [a for a in applied if a.gated]
    known = [a for a in gated if a.held_seconds is not None]
    return {
        "latency_by_kind": {kind: _figures(by_kind[kind]) for kind in sorted(by_kind)},
        "ungated": _figures([a.seconds for a in applied if not a.gated]),
        "gated": {
            **_figures([a.seconds for a in gated]),
            "operations_by_kind": dict(sorted(Counter(a.kind for a in gated).items())),
            "held_unknown": len(gated) - len(known),
            "held_by_gate": _figures([a.held_seconds for a in known if a.held_seconds is not None]),
            "without_gate_hold": _figures(
                [a.seconds - a.held_seconds for a in known if a.held_seconds is not None]
            ),
        },
        "gated_basis": (
            "gated: waited for the accidental-delete gate (a parked result naming deletion:<candidate>); "
            "held = the gate's decision (its record's time on vud.planner.control) - parked; "
            "without_gate_hold = latency - held (operations whose decision was not found: held_unknown)"
        ),
    }


def table(live: dict[str, Any]) -> list[str]:
    """The live phase's latency lines for a person: overall, ungated, gated (and without the
    gate's hold), then per kind."""

    def line(label: str, f: dict[str, Any]) -> str:
        return (
            f"  {label:<34} {f['operations']:>8,}  p50 {f['latency_p50_ms']:>9.1f}  "
            f"p99 {f['latency_p99_ms']:>9.1f}  max {f['latency_max_ms']:>9.1f}"
        )

    gated = live["gated"]
    rows = [
        "live latency, store commit → applied (ms):",
        line("all", {"operations": live["operations_applied"], **live}),
        line("ungated (the path)", live["ungated"]),
        line("gated, as measured", gated),
        line("gated, without the gate's hold", gated["without_gate_hold"]),
        line("gated, held by the gate", gated["held_by_gate"]),
    ]
    if gated["held_unknown"]:
        rows.append(f"  ({gated['held_unknown']:,} gated operation(s): the gate's decision not found)")
    rows += [line(kind, f) for kind, f in live["latency_by_kind"].items()]
    return rows
