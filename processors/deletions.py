"""Accidental-delete protection: the gate every deletion passes. Pure.

Like the directory-sync tools' "prevent accidental deletes" (a run over the threshold exports
*none*), the gate judges a **burst** of deletions as a whole:

- *settle*: a deletion that reaches the gate waits (*pending*) until no further deletion has
  reached it for ``deletes_settle_seconds``; then the whole settled window is *granted*;
- *count*: when, with a new deletion, the deletions within ``deletes_window_seconds`` of
  commit time (granted and pending) are more than the threshold (a count, default 500, or a
  percentage of the live entities), **every** pending deletion is *held*, the new one with
  them — with a journal entry and the ``vudsync_held_deletions`` gauge — until an operator
  runs ``vudsync deletes approve`` (or ``reject``). While the gate holds, every further
  deletion is held too. An operator's decision names the held deletions it settles (up to a
  sequence number); once none is held, the gate opens and a new count starts.

What counts as a deletion (:func:`is_destructive`): a user deactivated (removed on premise, or
``active`` set to false), access revoked, a catalogue entry removed, a company set inactive.

One gate for the whole installation: every planner partition sends its deletion requests to
partition 0 of ``vud.planner.control`` and gets the decision back on its own partition, so the
count is global and exact whichever worker owns which partitions. Time is never read here: the
count uses each deletion's commit time in the directory store, the settling uses the time the
planner stamped on the request (and on the gate's ticks) when it produced the record, so a
replay of the control topic decides the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from processors.model import Decision, PlannerSettings
from schemas.operations import (
    CloudOperation,
    DeactivateUser,
    RemoveCatalogueEntry,
    RevokeAccess,
    RevokeAccessEntry,
    UpsertCompany,
    UpsertUser,
)

_REMOVALS = (DeactivateUser, RevokeAccess, RevokeAccessEntry, RemoveCatalogueEntry)


def is_destructive(op: CloudOperation) -> bool:
    """What the gate counts: a deactivation (also an upsert that leaves a user inactive), a
    revocation, a removal, a company set inactive."""
    if isinstance(op, _REMOVALS):
        return True
    if isinstance(op, UpsertUser):
        return not op.active
    return isinstance(op, UpsertCompany) and op.status == "inactive"


class Arrival(StrEnum):
    """What became of a deletion that reached the gate."""

    PENDING = "pending"  # waits for its window to settle
    HOLD_WINDOW = "hold_window"  # over the threshold: it and every pending deletion are held
    HELD = "held"  # the gate holds already: held too


@dataclass(frozen=True)
class GateState:
    """What the gate remembers (one table value): the deletions counted in the current window
    (their commit times, newest last), whether it holds and how many, the pending deletions of
    the settling window and when the newest of them arrived, and the live entity count
    reported by each partition (for the percentage)."""

    window: tuple[float, ...] = ()
    holding: bool = False
    held: int = 0  # how many deletions are held now
    live: Mapping[int, int] = field(default_factory=dict)
    pending: int = 0  # how many deletions wait for the settling window to close
    last_arrival: float | None = None  # the newest pending deletion's arrival (the planner's stamp)

    def to_json(self) -> dict[str, Any]:
        return {
            "window": list(self.window),
            "holding": self.holding,
            "held": self.held,
            "live": {str(k): v for k, v in self.live.items()},
            "pending": self.pending,
            "last": self.last_arrival,
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
            int(raw.get("pending", 0)),
            raw.get("last"),
        )


def _over(count: int, live_total: int, settings: PlannerSettings) -> bool:
    if count > settings.deletes_threshold:
        return True
    pct = settings.deletes_threshold_percent
    return pct is not None and live_total > 0 and count * 100.0 > pct * live_total


def _count(state: GateState, committed_at: float, settings: PlannerSettings) -> tuple[float, ...]:
    """The commit times still within the count window once ``committed_at`` is in it."""
    newest = max((committed_at, *state.window[-1:]))
    return tuple(t for t in state.window if t > newest - settings.deletes_window_seconds)


def on_request(
    state: GateState,
    *,
    committed_at: float,
    partition: int,
    live: int,
    settings: PlannerSettings,
) -> tuple[GateState, Decision | None]:
    """One deletion asks to go *now*, without settling (a repair pass, whose deletions are all
    known at once). Returns the new state and ``GRANTED``, or None: held."""
    live_counts = {**state.live, partition: live}
    if state.holding:
        return replace(state, held=state.held + 1, live=live_counts), None
    window = _count(state, committed_at, settings)
    if _over(len(window) + 1, sum(live_counts.values()), settings):
        return replace(state, window=window, holding=True, held=state.held + 1, live=live_counts), None
    # keep at most threshold+1 times: more are never needed to decide
    window = (*window, committed_at)[-(settings.deletes_threshold + 1) :]
    return replace(state, window=tuple(sorted(window)), live=live_counts), Decision.GRANTED


def on_burst(
    state: GateState,
    count: int,
    *,
    committed_at: float,
    partition: int,
    live: int,
    settings: PlannerSettings,
) -> tuple[GateState, bool]:
    """``count`` deletions known at once (a repair pass) ask to go *now*, as a whole: all are
    granted, or — when the window with all of them would pass the threshold, or the gate holds
    already — all are held, as a sync run over the threshold exports none. Returns the new
    state and whether they go."""
    live_counts = {**state.live, partition: live}
    if count == 0:
        return replace(state, live=live_counts), True
    window = _count(state, committed_at, settings)
    if state.holding or _over(len(window) + count, sum(live_counts.values()), settings):
        return replace(state, window=window, holding=True, held=state.held + count, live=live_counts), False
    window = (*window, *([committed_at] * count))[-(settings.deletes_threshold + 1) :]
    return replace(state, window=tuple(sorted(window)), live=live_counts), True


def on_arrival(
    state: GateState,
    *,
    committed_at: float,
    arrived_at: float,
    partition: int,
    live: int,
    settings: PlannerSettings,
) -> tuple[GateState, Arrival]:
    """One deletion reaches the gate (call :func:`on_tick` with ``arrived_at`` first: a window
    that settled before it is granted without it). ``HOLD_WINDOW``: hold every pending
    deletion and this one."""
    live_counts = {**state.live, partition: live}
    if state.holding:
        return replace(state, held=state.held + 1, live=live_counts), Arrival.HELD
    window = _count(state, committed_at, settings)
    if _over(len(window) + 1, sum(live_counts.values()), settings):
        held = state.held + state.pending + 1
        return GateState(window, True, held, live_counts, 0, None), Arrival.HOLD_WINDOW
    window = tuple(sorted((*window, committed_at)))[-(settings.deletes_threshold + 1) :]
    last = arrived_at if state.last_arrival is None else max(arrived_at, state.last_arrival)
    state = replace(state, window=window, live=live_counts, pending=state.pending + 1, last_arrival=last)
    return state, Arrival.PENDING


def on_tick(state: GateState, now: float, settings: PlannerSettings) -> tuple[GateState, bool]:
    """The gate's clock reads ``now`` (a tick's or a request's stamp). True: the settling
    window is quiet for long enough, grant every pending deletion."""
    if state.holding or not state.pending or state.last_arrival is None:
        return state, False
    if now < state.last_arrival + settings.deletes_settle_seconds:
        return state, False
    return replace(state, pending=0, last_arrival=None), True


def settling(state: GateState) -> bool:
    """Whether deletions wait for their window to settle (the gate wants ticks)."""
    return state.pending > 0 and not state.holding


def on_operator(state: GateState, settled: int) -> GateState:
    """An operator's decision settled ``settled`` of the held deletions; once none is held the
    gate opens and a new count starts."""
    held = max(0, state.held - settled)
    if held:
        return replace(state, held=held)
    return GateState((), False, 0, state.live)
