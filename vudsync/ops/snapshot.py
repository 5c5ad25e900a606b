"""Carries ``vudsync snapshot`` out: write an ad-hoc snapshot request into the store's signal
table, wait until the running producer claims it, and (``wait``) until it is done.

The request is served by the producer (:mod:`producers.adhoc`), not here: this writes one row
and reads it back. It is the one operator command that writes to the directory store, and only
to ``capture_signal``. A request no producer claims within ``pickup_timeout`` is cancelled (so
one that starts later does not emit it by surprise) and reported as such.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kernel.settings import Settings
from producers.signal_table import open_signal_table
from producers.signals import SignalStatus, SnapshotSignal, Where
from schemas.directory import EntityType

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25


@dataclass(frozen=True)
class SnapshotOutcome:
    """What became of the request: ``status`` is the row's, or ``not_picked_up``."""

    status: str
    signal: SnapshotSignal | None
    reasons: tuple[str, ...] = ()

    @property
    def exit_status(self) -> int:
        return 0 if self.status in (SignalStatus.DONE.value, SignalStatus.RUNNING.value) else 1

    def as_dict(self) -> dict[str, object]:
        return {
            "outcome": self.status,
            "exit_status": self.exit_status,
            "reasons": list(self.reasons),
            "request": self.signal.as_dict() if self.signal else None,
        }


def not_picked_up_reason(seconds: float) -> str:
    return (
        f"no producer picked the request up within {seconds:g}s, so it was cancelled and nothing "
        "was emitted: is the producer running? start it with `vudsync run producer` (it serves "
        "requests between its batches), then run this again"
    )


def request_snapshot(
    settings: Settings,
    entities: tuple[EntityType, ...],
    where: Where | None,
    *,
    pickup_timeout: float,
    wait: bool,
    wait_timeout: float,
    on_progress: Callable[[SnapshotSignal], None] | None = None,
) -> SnapshotOutcome:
    """Request, wait for the pickup, then (``wait``) for the end; see the module's docs."""
    table = open_signal_table(settings.resolved_store_url())
    try:
        signal_id = table.request(entities, where)
        signal = _until(table, signal_id, lambda s: s.status is not SignalStatus.PENDING, pickup_timeout)
        if signal.status is SignalStatus.PENDING:
            if table.cancel_pending(signal_id):
                cancelled = table.get(signal_id)
                return SnapshotOutcome("not_picked_up", cancelled, (not_picked_up_reason(pickup_timeout),))
            signal = table.get(signal_id) or signal  # claimed just now
        if on_progress:
            on_progress(signal)
        if not wait or not signal.status.open:
            return _outcome(signal)

        def finished(s: SnapshotSignal) -> bool:
            if on_progress:
                on_progress(s)
            return not s.status.open

        signal = _until(table, signal_id, finished, wait_timeout)
        if signal.status.open:
            return SnapshotOutcome(
                "timed_out",
                signal,
                (
                    f"not done within {wait_timeout:g}s; the producer goes on: "
                    "follow it with `vudsync status`",
                ),
            )
        return _outcome(signal)
    finally:
        table.close()


def _outcome(signal: SnapshotSignal) -> SnapshotOutcome:
    if signal.status is SignalStatus.FAILED:
        why = f"the producer stopped it: {signal.error}; run `vudsync snapshot` again once that is fixed"
        return SnapshotOutcome(signal.status.value, signal, (why,))
    return SnapshotOutcome(signal.status.value, signal)


def _until(
    table: object, signal_id: int, done: Callable[[SnapshotSignal], bool], timeout: float
) -> SnapshotSignal:
    """Read the request until ``done`` says so or ``timeout`` passes; the last read."""
    from producers.signal_table import SignalTable

    assert isinstance(table, SignalTable)
    deadline = time.monotonic() + timeout
    while True:
        signal = table.get(signal_id)
        if signal is None:
            raise LookupError(f"snapshot request #{signal_id} vanished from the signal table")
        if done(signal) or time.monotonic() >= deadline:
            return signal
        time.sleep(POLL_SECONDS)


def recent_snapshots(settings: Settings, limit: int = 5) -> list[SnapshotSignal]:
    """The newest requests, the store opened read-only (``vudsync status``); none when the
    store has no signal table."""
    from kernel.errors import ConfigurationError

    try:
        table = open_signal_table(settings.resolved_store_url(), read_only=True)
    except ConfigurationError:
        return []
    except Exception as exc:  # the store down: status still answers, with the rest
        log.warning("cannot read the ad-hoc snapshot requests: %s", type(exc).__name__)
        return []
    try:
        return table.recent(limit)
    finally:
        table.close()
