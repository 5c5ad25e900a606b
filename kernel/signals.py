"""Stopping a process's loop on SIGTERM or SIGINT: the batch in flight finishes first."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kernel.http_status import StatusServer

log = logging.getLogger(__name__)


def stop_on_signals(name: str) -> threading.Event:
    """An event set by SIGTERM or SIGINT (logged as ``<name>: signal N, stopping``), for a loop
    that checks it between batches. Call from the main thread (Python's rule for handlers)."""
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: signal %d, stopping", name, signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return stop


def run_until_stopped(
    name: str,
    run: Callable[[threading.Event], object],
    *,
    status_port: int | None,
    status: Callable[[int], StatusServer],
    close: Sequence[Callable[[], object]],
) -> None:
    """Run a long-lived component's loop until SIGTERM/SIGINT: start its status server when a
    ``status_port`` is given, then :func:`stop_on_signals`, then ``run(stop)``; however the loop
    ended, close the status server and then each of ``close`` in order (publisher before the
    stores it reads), and log ``<name>: stopped``."""
    server = status(status_port).start() if status_port is not None else None
    stop = stop_on_signals(name)
    try:
        run(stop)
    finally:
        if server is not None:
            server.close()
        for closing in close:
            closing()
        log.info("%s: stopped", name)
