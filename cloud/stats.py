"""Request counters for ``GET /admin/stats`` (tests count requests to prove there is no storm)."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import Any


class Stats:
    """Counts by ``"METHOD /path/{template}"`` and status; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._batch_items: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._faults: Counter[str] = Counter()
        self._rate_limited = 0
        self._replayed = 0

    def record_request(self, route: str, status: str, *, batch_item: bool = False) -> None:
        with self._lock:
            (self._batch_items if batch_item else self._requests)[route][status] += 1

    def record_fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def record_rate_limited(self) -> None:
        with self._lock:
            self._rate_limited += 1

    def record_replayed(self) -> None:
        with self._lock:
            self._replayed += 1

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._batch_items.clear()
            self._faults.clear()
            self._rate_limited = 0
            self._replayed = 0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            requests = {route: dict(c) for route, c in sorted(self._requests.items())}
            token = self._requests.get("POST /oauth/token", Counter())
            return {
                "total_requests": sum(sum(c.values()) for c in self._requests.values()),
                "requests": requests,
                "token_requests": sum(token.values()),
                "batch_items": {r: dict(c) for r, c in sorted(self._batch_items.items())},
                "faults_injected": dict(self._faults),
                "rate_limited": self._rate_limited,
                "idempotent_replays": self._replayed,
            }
