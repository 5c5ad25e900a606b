"""The accidental-delete gate judges a burst as a whole, whatever order its deletions reach it
in. Pure: the reconciler over a dict, driven with the gate's own messages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors import gate
from processors.control import DeletionDecided, DeletionHeld, DeletionRequested, GateTick
from processors.engine import Coords, Reconciler
from processors.model import Decision, PlannerSettings
from schemas.directory import EntityType
from tests.factories import T0

SETTLE = 5.0


def _request(i: int, committed: float, arrived: float) -> DeletionRequested:
    return DeletionRequested(
        candidate=f"user:u{i}:3",
        entity=EntityType.USER,
        entity_id=f"u{i}",
        version=3,
        committed_at=T0 + timedelta(seconds=committed),
        partition=i % 3,
        live=0,
        requested_at=T0 + timedelta(seconds=arrived),
    )


def _verdicts(threshold: int, requests: list[DeletionRequested], tick_at: float) -> dict[str, Any]:
    """What the gate answered each candidate: a decision, ``held``, or nothing (pending)."""
    table: dict[str, Any] = {}
    r = Reconciler(
        table, PlannerSettings(deletes_threshold=threshold, deletes_settle_seconds=SETTLE), 3, lambda: T0
    )
    answers: dict[str, Any] = {}
    messages: list[Any] = [*requests, GateTick(at=T0 + timedelta(seconds=tick_at))]
    for offset, msg in enumerate(messages):
        fx = r.on_control(msg, Coords("control", 0, offset))
        for s in fx.sends:
            if isinstance(s.value, DeletionDecided):
                answers[s.value.candidate] = s.value.decision
            elif isinstance(s.value, DeletionHeld):
                answers[s.value.candidate] = "held"
        for key, value in fx.writes.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
    answers["#held"] = r.held_deletions()
    return answers


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 12),
    threshold=st.integers(0, 10),
    commits=st.lists(st.floats(0, 60), min_size=12, max_size=12),
    gaps=st.lists(st.floats(0, SETTLE - 0.01), min_size=12, max_size=12),
    order=st.randoms(use_true_random=False),
)
def test_any_arrival_order_within_a_window_gets_the_same_verdict(
    n: int, threshold: int, commits: list[float], gaps: list[float], order: Any
) -> None:
    """Each deletion reaches the gate less than the settling time after the one before it, in
    any order: the whole burst is granted when it is within the threshold, else all held."""
    shuffled = list(range(n))
    order.shuffle(shuffled)
    arrived, requests = 0.0, []
    for k, i in enumerate(shuffled):
        arrived += gaps[k]
        requests.append(_request(i, commits[i], arrived))
    answers = _verdicts(threshold, requests, tick_at=arrived + SETTLE)
    expected: Any = Decision.GRANTED if n <= threshold else "held"
    assert all(answers.get(f"user:u{i}:3") == expected for i in range(n)), answers
    assert answers["#held"] == (0 if n <= threshold else n)


def test_a_tick_before_the_window_settled_grants_nothing() -> None:
    requests = [_request(i, 0, i) for i in range(3)]
    assert _verdicts(5, requests, tick_at=2 + SETTLE - 0.1) == {"#held": 0}
    assert set(_verdicts(5, requests, tick_at=2 + SETTLE).values()) == {Decision.GRANTED, 0}


def test_a_pause_longer_than_the_settling_time_closes_the_window() -> None:
    """Two bursts apart: the first is granted when the second begins; the second passes the
    count (commit time within the count window) and is held as a whole."""
    first = [_request(i, 0, 0) for i in range(3)]
    second = [_request(i, 30, 30 + i) for i in range(3, 6)]
    answers = _verdicts(4, [*first, *second], tick_at=1000)
    assert [answers[f"user:u{i}:3"] for i in range(6)] == [Decision.GRANTED] * 3 + ["held"] * 3


def test_the_held_list_reads_the_control_messages_in_any_order() -> None:
    held = [DeletionHeld(candidate=f"user:u{i}:3", partition=i, reason="r", seq=i) for i in range(3)]
    decided = DeletionDecided(candidate="user:u1:3", partition=1, decision=Decision.APPROVED)
    out = gate.outstanding([decided, held[2], held[0], held[1]])
    assert [(h.seq, h.entity, h.entity_id, h.version) for h in out] == [
        (0, "user", "u0", 3),
        (2, "user", "u2", 3),
    ]
