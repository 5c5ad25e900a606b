"""Stopping a process's loop on SIGTERM or SIGINT: the batch in flight finishes first."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

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
