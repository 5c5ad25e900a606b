"""The reconciler: what one planner partition does with each message, over its table. Pure.

The Faust shell (:mod:`processors.handlers`) decodes a message and hands it here together with
its coordinates; the reconciler reads the partition's state through a ``MutableMapping`` (the
Faust table, or a dict in tests), calls the rules of :mod:`processors.planner` and returns
:class:`Effects`: the records to send and the table writes to make. The shell performs them —
in the order :attr:`Effects.acks_first` says — and nothing else; the property tests drive this
very class with a dict and a simulated cloud.

:class:`Reconciler` only composes the paths, one concept per module:

- :mod:`processors.keys` — the table's key layout (the on-disk format);
- :mod:`processors.needs` — what a parked operation waits for;
- :mod:`processors.effects` — a message's reads (``Tx``) and its :class:`Effects`;
- :mod:`processors.knowledge` — what a partition knows of the cloud, and the verdicts;
- :mod:`processors.directory` — directory events, and their redelivery;
- :mod:`processors.facts` — results and facts, copied to every partition, and review;
- :mod:`processors.parking` — parked operations, the need index, releases;
- :mod:`processors.gate` — the accidental-delete gate's messages;
- :mod:`processors.journal` — the event journal, as results;
- :mod:`processors.cloud_changes` — the cloud's access changes (writeback, issue 16), decided
  by the pure rule in :mod:`processors.writeback`.

Delivery (at least once, no loss). Faust flushes the producer before it commits offsets, so
the records of a committed message are durable. Two windows remain, both closed: a directory
event's (its uncommitted history, :mod:`processors.directory`) and a release's (acknowledged
before the table forgets it, :mod:`processors.facts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from pydantic import BaseModel

from processors import full_reads, gate, keys, parking, reviews, staging
from processors.cloud_changes import CloudChanges
from processors.control import GATE_PARTITION
from processors.directory import DirectoryEvents
from processors.effects import BatchTx, Coords, Effects, Send, Tx
from processors.facts import Facts
from processors.gate import Gate
from processors.gauge_keys import oldest_committed
from processors.keys import Known, is_parked
from processors.knowledge import Knowledge
from processors.model import Identities, PlannerSettings, VerdictStatus
from schemas.cloud_changes import CloudAccessChanged, CloudAccessRead, CloudChange
from schemas.directory import ApplicationType
from schemas.directory_operations import RevokeDirectoryAccess
from schemas.events import DirectoryEvent
from schemas.results import OperationResult, PlannerFact

__all__ = ["Coords", "Effects", "Input", "Reconciler", "Send"]


class Input(NamedTuple):
    """One decoded message of a batch: ``kind`` is ``directory`` (``value`` a
    :data:`~schemas.events.DirectoryEvent`, ``committed`` the committed offset of its topic
    partition), ``result``, ``fact``, ``control`` or ``cloud`` (a
    :class:`~schemas.cloud_changes.CloudAccessChanged`, or a full read's end-of-read marker
    :class:`~schemas.cloud_changes.CloudAccessRead`)."""

    kind: str
    value: Any
    coords: Coords
    committed: int | None = None


class Reconciler:
    """One planner worker's logic for every partition it owns. Not thread-safe; one message at
    a time (the agent's concurrency is 1)."""

    def __init__(
        self,
        store: Mapping[str, Any],
        settings: PlannerSettings,
        partitions: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self._partitions = partitions
        self._clock = clock
        self._knowledge = Knowledge()
        self._facts = Facts(self._knowledge, partitions, clock)
        self._directory = DirectoryEvents(self._knowledge, self._facts, settings, clock)
        self._gate = Gate(self._knowledge, settings, clock)
        self._cloud = CloudChanges(clock, self._knowledge)

    @property
    def settings(self) -> PlannerSettings:
        return self._directory.settings

    @settings.setter
    def settings(self, settings: PlannerSettings) -> None:
        """New knobs for every path (the tests tighten the gate after building the pipeline)."""
        self._directory.settings = self._gate.settings = settings

    @property
    def partitions(self) -> int:
        return self._partitions

    @property
    def clock(self) -> Callable[[], datetime]:
        return self._clock

    def on_batch(self, inputs: Sequence[Input]) -> Effects:
        """Handle ``inputs`` in order, as if each were handled alone and its effects performed
        before the next: the same records, in the same order, and the table ends the same —
        but each key is written once, every send comes before the first write, and the
        acknowledgements are awaited once for the whole batch (``acks_first`` if any message
        needs them). A message whose handling raises leaves no effect and is listed in
        :attr:`Effects.failed`; the others go on."""
        tx = BatchTx(self.store)
        out = Effects(partitions=tx.partitions)
        for i, item in enumerate(inputs):
            tx.begin(item.coords.partition)
            try:
                fx = self._dispatch(item, tx)
            except Exception as exc:  # the shell dead-letters it, as a message handled alone
                tx.rollback()
                out.failed.append((i, exc))
                continue
            for key, value in fx.writes.items():  # none from the paths here: their Tx collects them
                tx.set(key, value)
            out.absorb(fx)
            if fx.outcome is not None and fx.entity is not None:
                out.tallies.append((fx.entity, fx.outcome))
        out.writes = tx.all_writes()
        return out

    def _dispatch(self, item: Input, tx: Tx) -> Effects:
        kind, value, coords = item.kind, item.value, item.coords
        if kind == "directory":
            return self.on_directory_event(value, coords, item.committed, tx)
        if kind == "result":
            return self.on_result(value, coords, tx)
        if kind == "fact":
            return self.on_fact(value, coords, tx)
        if kind == "control":
            return self.on_control(value, coords, tx)
        if kind == "cloud":
            return self.on_cloud_change(value, coords, tx)
        raise ValueError(f"unknown input kind {kind!r}")

    def on_directory_event(
        self, ev: DirectoryEvent, coords: Coords, committed: int | None, tx: Tx | None = None
    ) -> Effects:
        """Plan one directory event. ``committed``: the committed offset of its topic partition."""
        tx = tx or Tx(self.store)
        fx = self._directory.on_directory_event(tx, ev, coords, committed)
        return self._staged(self._decide_released(tx, fx, coords))

    def on_result(self, result: OperationResult, coords: Coords, tx: Tx | None = None) -> Effects:
        """Learn from a result: cloud ids, the registry, the catalogue; the review journal."""
        tx = tx or Tx(self.store)  # a fact learned on its home partition may release too
        return self._staged(self._decide_released(tx, self._facts.on_result(tx, result, coords), coords))

    def on_fact(self, fact: PlannerFact, coords: Coords, tx: Tx | None = None) -> Effects:
        """Record a fact in this partition's copy; release what waited for it."""
        tx = tx or Tx(self.store)
        return self._staged(self._decide_released(tx, self._facts.on_fact(tx, fact, coords), coords))

    def _decide_released(self, tx: Tx, fx: Effects, coords: Coords) -> Effects:
        """Decide again, in this step, the writeback's cloud changes a release took from the
        table (their user's directory state or their company's link arrived), and re-assert the
        entries whose store revoke an operator's rejection dropped: sent before the table
        forgets them, like every release (``acks_first``)."""
        if not fx.released and not fx.rejected:
            return fx
        released, fx.released = fx.released, []
        for raw in released:
            self._cloud.decide(tx, fx, CloudAccessChanged.model_validate(raw), coords.partition)
        rejected, fx.rejected = fx.rejected, []
        for op in rejected:  # the writeback's store revokes an operator rejected: re-asserted
            assert isinstance(op, RevokeDirectoryAccess)
            self._cloud.reassert(tx, fx, coords.partition, op, self._clock())
        fx.acks_first = fx.acks_first or bool(fx.sends)
        return tx.effects(fx)

    def on_control(self, msg: BaseModel, coords: Coords, tx: Tx | None = None) -> Effects:
        """A message of the accidental-delete gate."""
        tx = tx or Tx(self.store)
        return self._staged(self._decide_released(tx, self._gate.on_control(tx, msg, coords), coords))

    def _staged(self, fx: Effects) -> Effects:
        """In staging mode, the operations to send are staged instead (:mod:`processors.staging`)."""
        if self.settings.staging:
            now = self._clock()
            fx.sends = staging.stage_sends(fx.sends, now)
            staging.stage_waiting(fx, fx.waiting, now)
        return fx

    def on_cloud_change(self, change: CloudChange, coords: Coords, tx: Tx | None = None) -> Effects:
        """Writeback: what of the cloud's access of a user in a company the directory must hold;
        a full read's end-of-read marker of a user (:mod:`processors.full_reads`)."""
        if isinstance(change, CloudAccessRead):
            return full_reads.on_access_read(self._cloud, tx or Tx(self.store), change, coords)
        return self._cloud.on_cloud_change(tx or Tx(self.store), change, coords)

    # -- inspection ---------------------------------------------------------------------

    def identities(self, partition: int) -> Identities:
        """What ``partition`` knows now (for tests and inspection)."""
        return self._knowledge.identities(Tx(self.store), partition)

    def held_deletions(self) -> int:
        """Deletions the gate holds (0 unless this worker owns partition 0)."""
        return gate.held_deletions(self.store)

    def reviews_waiting(self, keys: Iterable[str] | None = None) -> int:
        """Companies waiting for review, as partition 0 knows them (every review fact reaches
        every partition: one count, on the worker that owns partition 0); ``keys``: where to
        look (the table's keys, or a superset of its review keys: :mod:`processors.gauge_keys`)."""
        prefix = self.review_prefix()
        chosen = list(self.store.keys()) if keys is None else keys
        return reviews.count_waiting(self.store.get(k) for k in chosen if k.startswith(prefix))

    @staticmethod
    def review_prefix() -> str:
        """The keys :meth:`reviews_waiting` reads."""
        return keys.known_prefix(GATE_PARTITION, Known.REVIEW)

    def mismatched_applications(self) -> dict[ApplicationType, tuple[str, ...]]:
        """The applications whose on-premise instance differs from the cloud's registration, as
        partition 0 judges them (instance and registry facts reach every partition), with the
        differing fields."""
        tx = Tx(self.store)
        verdicts = {app: self._knowledge.verdict(tx, GATE_PARTITION, app) for app in ApplicationType}
        return {app: v.differing for app, v in verdicts.items() if v.status is VerdictStatus.MISMATCH}

    def gate_tick(self) -> BaseModel | None:
        """A tick to send the gate (partition 0) while its deletions settle, else None."""
        return gate.tick_due(self.store, self._clock)

    def parked(self, keys: Iterator[str] | None = None) -> int:
        """Operations waiting in the table (or among ``keys``), whatever for."""
        return self.waiting(keys).total

    def waiting(self, keys: Iterable[str] | None = None) -> parking.Waiting:
        """Operations waiting in the table (or among ``keys``): parked, held, blocked."""
        chosen = list(self.store.keys()) if keys is None else keys
        return parking.count_waiting(self.store.get(k) or () for k in chosen if is_parked(k))

    def oldest_parked_age(self, keys: Iterator[str] | None = None) -> float:
        """Seconds since the change behind the oldest operation parked in the table (or among
        ``keys``) was committed on premise: how long it has waited to reach the cloud; 0 when
        nothing is parked."""
        oldest: datetime | None = None
        for k in keys or iter(list(self.store.keys())):
            if not is_parked(k):
                continue
            at = oldest_committed(self.store.get(k) or ())  # a writeback's: the cloud's commit
            if at is not None and (oldest is None or at < oldest):
                oldest = at
        return self.age(oldest)

    def age(self, committed: datetime | None) -> float:
        """Seconds since ``committed`` by the reconciler's clock; 0 for None."""
        return 0.0 if committed is None else max((self._clock() - committed).total_seconds(), 0.0)
