"""The planner's stop deadline (no broker: the timer and what it calls)."""

from __future__ import annotations

import threading

import faust
import pytest

from processors.service import EXIT_SHUTDOWN_STUCK, _PlannerWorker, arm_shutdown_deadline


def test_a_stop_that_does_not_finish_in_time_exits_with_its_code() -> None:
    exited = threading.Event()
    codes: list[int] = []

    def exit(code: int) -> None:
        codes.append(code)
        exited.set()

    timer = arm_shutdown_deadline(0.05, exit)
    assert exited.wait(10), "the deadline never fired"
    assert codes == [EXIT_SHUTDOWN_STUCK] and timer.daemon


def test_a_stop_that_finishes_in_time_is_not_cut_short() -> None:
    codes: list[int] = []
    timer = arm_shutdown_deadline(5.0, codes.append)
    timer.cancel()  # what the end of the process amounts to for a daemon timer
    timer.join(10)
    assert codes == [] and not timer.is_alive()


def test_sigterm_and_sigint_arm_the_deadline_then_begin_faust_s_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr("processors.service.arm_shutdown_deadline", lambda s: calls.append(f"armed {s}s"))
    monkeypatch.setattr(faust.Worker, "_on_sigterm", lambda self: calls.append("faust stop (TERM)"))
    monkeypatch.setattr(faust.Worker, "_on_sigint", lambda self: calls.append("faust stop (INT)"))
    worker = object.__new__(_PlannerWorker)  # the handlers only; no app, no event loop
    worker.shutdown_deadline = 7.0
    worker._on_sigterm()
    worker._on_sigint()
    assert calls == ["armed 7.0s", "faust stop (TERM)", "armed 7.0s", "faust stop (INT)"]
