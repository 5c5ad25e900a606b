"""kernel.signals.run_until_stopped: the one way the producer, cloud-capture and the lag exporter
run their loop (status server, signal handlers, closing order)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from kernel.signals import run_until_stopped


@pytest.fixture(autouse=True)
def _restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


class _Status:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def start(self) -> _Status:
        self.calls.append("status started")
        return self

    def close(self) -> None:
        self.calls.append("status closed")


def test_sigterm_sets_the_loops_stop_then_the_server_and_resources_close_in_order() -> None:
    calls: list[str] = []
    ports: list[int] = []

    def status(port: int) -> _Status:
        ports.append(port)
        return _Status(calls)

    def run(stop: threading.Event) -> None:
        calls.append("run")
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs on this (the main) thread
        assert stop.wait(5.0), "SIGTERM did not set the stop event"
        calls.append("stopped")

    run_until_stopped(
        "component",
        run,
        status_port=9123,
        status=status,  # type: ignore[arg-type]  # a stand-in with start() and close()
        close=(lambda: calls.append("publisher closed"), lambda: calls.append("store closed")),
    )
    assert ports == [9123]
    assert calls == ["status started", "run", "stopped", "status closed", "publisher closed", "store closed"]


def test_without_a_port_no_status_server_and_a_failing_loop_still_closes_everything() -> None:
    calls: list[str] = []

    def status(port: int) -> _Status:
        raise AssertionError("no status server without a port")

    def run(stop: threading.Event) -> None:
        raise RuntimeError("the loop failed")

    with pytest.raises(RuntimeError, match="the loop failed"):
        run_until_stopped(
            "component",
            run,
            status_port=None,
            status=status,  # type: ignore[arg-type]
            close=(lambda: calls.append("publisher closed"), lambda: calls.append("store closed")),
        )
    assert calls == ["publisher closed", "store closed"]
