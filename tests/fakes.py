"""Fakes of the ports, shared by the unit tests: one per port, small and inspectable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kernel.errors import RetryableError

Queued = tuple[str, str, bytes | None]  # topic, key, value


class FakeClock:
    """A clock the test moves by hand: call it for the time, :meth:`advance` it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakePublisher:
    """The ``RecordPublisher`` port: ``publish`` queues, ``flush`` acknowledges the queue as one
    batch (``batches``). ``fail_flush``: that flush (1-based) raises instead, as a broker that
    did not acknowledge. ``events``, if given, hears ``"<name> flushed <n>"`` per flush."""

    def __init__(
        self, name: str = "publisher", events: list[str] | None = None, fail_flush: int | None = None
    ) -> None:
        self.name = name
        self.events = events if events is not None else []
        self.fail_flush = fail_flush
        self.queued: list[Queued] = []
        self.batches: list[list[Queued]] = []  # what each flush acknowledged
        self.closed = False

    @property
    def acked(self) -> list[tuple[str, str]]:
        """(topic, key) of every acknowledged record, in order."""
        return [(topic, key) for batch in self.batches for topic, key, _ in batch]

    def publish(self, topic: str, key: str, value: bytes | None, headers: Sequence[Any] = ()) -> None:
        assert not self.closed, f"{self.name}: publish after close"
        self.queued.append((topic, key, value))

    def flush(self, timeout: float = 60.0) -> int:
        if self.fail_flush is not None and len(self.batches) + 1 == self.fail_flush:
            raise RetryableError("broker did not acknowledge 1 record(s): test")
        batch, self.queued = self.queued, []
        self.batches.append(batch)
        self.events.append(f"{self.name} flushed {len(batch)}")
        return len(batch)

    def close(self, timeout: float = 10.0) -> None:
        self.closed = True
