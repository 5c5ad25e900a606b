"""Accidental-delete protection: the gate every deletion passes. Pure.

Like the directory-sync tools' "prevent accidental deletes": when more deletions than a
threshold (a count, default 500, or a percentage of the live entities) arrive within a window,
the deletions beyond it are *held* — with a journal entry and the ``vudsync_held_deletions``
gauge — until an operator runs ``vudsync deletes approve`` (or ``reject``). While the gate
holds, every further deletion is held too; a decision settles everything held and starts a
new window.

One gate for the whole installation: every planner partition sends its deletion requests to
partition 0 of ``vud.planner.control`` and gets the decision back on its own partition, so the
count is global and exact whichever worker owns which partitions. Time is event time (the
deletion's commit time in the directory store), so a replay decides the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from processors.model import Decision, PlannerSettings


@dataclass(frozen=True)
class GateState:
    """What the gate remembers (one table value): the deletions counted in the current window
    (their commit times, newest last), whether it holds, and the live entity count reported
    by each partition (for the percentage)."""

    window: tuple[float, ...] = ()
    holding: bool = False
    held: int = 0  # how many deletions are held now
    live: Mapping[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "window": list(self.window),
            "holding": self.holding,
            "held": self.held,
            "live": {str(k): v for k, v in self.live.items()},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> GateState:
        if not raw:
            return cls()
        return cls(
            tuple(raw["window"]),
            bool(raw["holding"]),
            int(raw["held"]),
            {int(k): int(v) for k, v in raw["live"].items()},
        )


def _over(count: int, live_total: int, settings: PlannerSettings) -> bool:
    if count > settings.deletes_threshold:
        return True
    pct = settings.deletes_threshold_percent
    return pct is not None and live_total > 0 and count * 100.0 > pct * live_total


def on_request(
    state: GateState,
    *,
    committed_at: float,
    partition: int,
    live: int,
    settings: PlannerSettings,
) -> tuple[GateState, Decision | None]:
    """One deletion asks to go. Returns the new state and ``GRANTED``, or None: held."""
    live_counts = {**state.live, partition: live}
    if state.holding:
        return replace(state, held=state.held + 1, live=live_counts), None
    newest = max((committed_at, *state.window[-1:]))
    window = tuple(t for t in state.window if t > newest - settings.deletes_window_seconds)
    count = len(window) + 1
    if _over(count, sum(live_counts.values()), settings):
        return GateState(window, True, state.held + 1, live_counts), None
    # keep at most threshold+1 times: more are never needed to decide
    window = (*window, committed_at)[-(settings.deletes_threshold + 1) :]
    return GateState(tuple(sorted(window)), False, state.held, live_counts), Decision.GRANTED


def on_operator(state: GateState, approve: bool) -> tuple[GateState, Decision]:
    """The operator's decision on everything held: the gate opens and a new window starts."""
    return GateState((), False, 0, state.live), Decision.APPROVED if approve else Decision.REJECTED
