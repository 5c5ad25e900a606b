"""Ad-hoc snapshots: the running producer emits the current state of chosen entities again when
an operator asks (``vudsync snapshot``), like Debezium's signal-table snapshots.

The request is a row in the store's ``capture_signal`` table (the producer reads no Kafka
topic). Between two streaming batches, at most every ``poll_seconds``, the capture loop asks
:meth:`AdhocSnapshots.poll` to look for one; an open request is emitted on a helper thread
through its own Kafka producer (of the same client library as streaming's, so each key lands
on the partition streaming puts it on), while streaming goes on in the capture loop.

What it emits and why that is safe beside live changes:

* the chosen entities' current state, **each entity once**, through the initial snapshot's
  code (:meth:`ChangeCapture.snapshot_entities`): op ``r``, ``source.snapshot`` true, and
  the change-log position ``P`` read (in the capture loop) *before* any state is read as
  ``version``;
* a change committed before ``P`` is in the state read, so streaming's own event for it
  (version ≤ P, possibly still to come) is older and the planner ignores it; a change after
  ``P`` is streamed with a higher version, so it wins whichever event reaches the planner
  first. Versions order the two producers' events per entity; the topic order need not.
* unchanged state plans nothing: the planner compares the state, not only the version (a
  newer version with the same state is ``no_change``), so nothing is applied twice.

Progress (entities done of the total) is written to the request's row at most every
``progress_seconds``; the row is ``done`` once the broker has acknowledged every event. A
producer stopped mid-way leaves it ``running`` and starts it again when it restarts (emitting
twice is harmless: see above). An error marks it ``failed`` with the reason; nothing retries it
by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from producers.capture import ChangeCapture
from producers.model import EntityRecord
from producers.ports import ChangeLog, SnapshotSignals
from producers.signals import SnapshotSignal
from schemas.directory import EntityType

log = logging.getLogger(__name__)

#: the entities a request selects: None for every one of a type, else these ids in id order
Selection = dict[EntityType, list[str] | None]


def select(change_log: ChangeLog, signal: SnapshotSignal) -> Selection:
    """Which entities a request names. ``id=`` keeps the ids the store holds; ``company=``
    is a company's users (by their access) and the company itself."""
    where = signal.where
    chosen: Selection = {}
    for entity in signal.entities:
        if where is None:
            chosen[entity] = None
        elif where.field == "company" and entity is EntityType.USER:
            chosen[entity] = change_log.users_in_company(where.values[0])
        else:
            chosen[entity] = sorted(change_log.read_entities(entity, list(where.values)))
    return chosen


class AdhocSnapshots:
    """Finds open requests between batches and emits each on a helper thread, one at a time."""

    def __init__(
        self,
        signals: SnapshotSignals,
        worker: Callable[[], ChangeCapture],
        *,
        poll_seconds: float = 1.0,
        progress_seconds: float = 0.5,
    ) -> None:
        """``worker``: a capture over the same store with a publisher of its own (closed after
        each request); the thread never touches the capture loop's publisher."""
        self.signals = signals
        self.worker = worker
        self.poll_seconds = poll_seconds
        self.progress_seconds = progress_seconds
        self._thread: threading.Thread | None = None
        self._next_poll = 0.0
        self.current: SnapshotSignal | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def poll(self, capture: ChangeCapture, stop: threading.Event) -> None:
        """Called by the capture loop between batches: start the next open request, if any,
        unless one is being emitted. The position is read here, in the capture loop's thread
        (the change log's reader state belongs to it)."""
        now = time.monotonic()
        if self.running or now < self._next_poll:
            return
        self._next_poll = now + self.poll_seconds
        try:
            signal = self.signals.next_open()
        except Exception as exc:  # a store hiccup: streaming notices it itself; look again later
            log.warning("ad-hoc snapshot: cannot read the signal table: %s", type(exc).__name__)
            return
        if signal is None:
            return
        position = capture.log.position()
        self._thread = threading.Thread(
            target=self.emit, args=(signal, position, stop), name=f"adhoc-snapshot-{signal.id}", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float = 60.0) -> None:
        """Wait for the request in progress to leave (after ``stop``: after its batch in hand)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def emit(self, signal: SnapshotSignal, position: int, stop: threading.Event) -> int:
        """Emit one request (see the module's docs); returns the entities done."""
        capture = self.worker()
        try:
            return self._emit(capture, signal, position, stop)
        finally:
            capture.publisher.close()

    def _emit(
        self, capture: ChangeCapture, signal: SnapshotSignal, position: int, stop: threading.Event
    ) -> int:
        chosen = select(capture.log, signal)
        totals = {e: capture.log.count(e) if ids is None else len(ids) for e, ids in chosen.items()}
        if not self.signals.claim(signal.id, position, sum(totals.values())):
            log.info("ad-hoc snapshot #%d: cancelled before it started", signal.id)
            return 0
        self.current = signal
        log.info("ad-hoc snapshot #%d: %s at position %d, %d entities", signal.id, signal.describe(),
                 position, sum(totals.values()))  # fmt: skip
        for entity, total in totals.items():
            capture.metrics.snapshot_entities.labels(entity=entity.value).set(total)
            capture.metrics.snapshot_done.labels(entity=entity.value).set(0)
        done_before: dict[EntityType, int] = {}
        done = 0
        written = time.monotonic()

        def progress(entity: EntityType, entity_done: int, _total: int) -> None:
            nonlocal done, written
            done_before[entity] = entity_done
            done = sum(done_before.values())
            if time.monotonic() - written >= self.progress_seconds:
                self.signals.progress(signal.id, done)
                written = time.monotonic()

        def batches(entity: EntityType) -> Iterator[tuple[list[str], dict[str, EntityRecord]]]:
            ids = chosen[entity]
            if ids is None:
                yield from capture.read_ahead(entity)
                return
            size = capture.config.batch_size
            for start in range(0, len(ids), size):
                chunk = ids[start : start + size]
                yield chunk, capture.log.read_entities(entity, chunk)

        try:
            capture.snapshot_entities(position, totals, capture.publisher, progress, batches, stop)
        except Exception as exc:  # no exception escapes: the request says why it stopped
            reason = f"{type(exc).__name__}: {exc}"
            log.error("ad-hoc snapshot #%d failed after %d entities: %s", signal.id, done, reason)
            self.signals.finish(signal.id, done, error=reason)
            return done
        finally:
            self.current = None
        if stop.is_set():
            log.info(
                "ad-hoc snapshot #%d: stopped after %d entities; starts again with the producer",
                signal.id,
                done,
            )
            self.signals.progress(signal.id, done)
            return done
        self.signals.finish(signal.id, done)
        log.info("ad-hoc snapshot #%d: done, %d entities", signal.id, done)
        return done
