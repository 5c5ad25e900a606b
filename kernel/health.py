"""Ready or not, and why: what each component answers on ``/readyz`` and ``/status``. Pure.

Each component gathers a few facts about itself (plain values, read where they live) and asks
its rule here; the HTTP side (:mod:`kernel.http_status`) only serves the answer. A component
that is not ready says every reason, in words an operator can act on.

The rules (docs/operations.md, "Health and readiness endpoints"):

- producer: the broker answers; the capture read the store recently (its loop reads at least
  every half second, so a read older than ``read_stale_after`` means the store hangs or fails);
- planner: the broker answers; it joined its group (partitions assigned, or none because the
  group has more workers than partitions: it waits as a standby); not rebalancing; not
  recovering its table;
- sink: the broker answers; the circuit to the cloud is closed; its partitions were not paused
  for back-pressure longer than ``paused_too_long``;
- lag exporter: its last successful read of the offsets is recent;
- cloud-capture: the broker answers; the cloud's change feed answered recently (it is polled
  every second or so) and the last attempt did not fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BROKER_DOWN = "the Kafka broker does not answer at {bootstrap}"


@dataclass(frozen=True)
class Readiness:
    """Ready when there is no reason not to be."""

    reasons: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class ProducerFacts:
    bootstrap: str
    broker_reachable: bool
    read_age: float | None  # seconds since the capture last read the store; None: not yet


@dataclass(frozen=True)
class PlannerFacts:
    bootstrap: str
    broker_reachable: bool
    joined: bool  # an assignment arrived since the worker started (an empty one counts)
    rebalancing: bool
    recovering: bool


@dataclass(frozen=True)
class SinkFacts:
    bootstrap: str
    broker_reachable: bool
    circuit_open: bool
    paused_for: float | None  # seconds the partitions have been paused; None: not paused


@dataclass(frozen=True)
class CloudCaptureFacts:
    bootstrap: str
    broker_reachable: bool
    cloud_url: str
    poll_age: float | None  # seconds since the feed last answered; None: not yet
    error: str | None  # the last failure (no secret in it), None after a success


@dataclass(frozen=True)
class LagExporterFacts:
    read_age: float | None  # seconds since the last successful read of the offsets; None: never


def _broker(bootstrap: str, reachable: bool) -> list[str]:
    return [] if reachable else [BROKER_DOWN.format(bootstrap=bootstrap)]


def _overdue(age: float | None, limit: float, *, never: str | None, stale: str) -> list[str]:
    """The reason a recurring activity is overdue: ``never`` while it has not happened yet
    (None: no reason then), ``stale`` (formatted with ``age``, in seconds) once it last
    happened more than ``limit`` seconds ago."""
    if age is None:
        return [] if never is None else [never]
    return [stale.format(age=age)] if age > limit else []


def producer_readiness(facts: ProducerFacts, *, read_stale_after: float = 30.0) -> Readiness:
    reasons = _broker(facts.bootstrap, facts.broker_reachable)
    reasons += _overdue(
        facts.read_age,
        read_stale_after,
        never="the capture has not read the directory store yet (starting, or snapshot)",
        stale="the capture last read the directory store {age:.0f}s ago: "
        "the store hangs or fails, or the broker does not acknowledge",
    )
    return Readiness(tuple(reasons))


def planner_readiness(facts: PlannerFacts) -> Readiness:
    reasons = _broker(facts.bootstrap, facts.broker_reachable)
    if not facts.joined:
        reasons.append("not a member of the planner's consumer group yet (joining)")
    if facts.rebalancing:
        reasons.append("the planner's consumer group is rebalancing")
    if facts.recovering:
        reasons.append("recovering the planner's table from its changelog")
    return Readiness(tuple(reasons))


def sink_readiness(facts: SinkFacts, *, paused_too_long: float = 60.0) -> Readiness:
    reasons = _broker(facts.bootstrap, facts.broker_reachable)
    if facts.circuit_open:
        reasons.append("the circuit to the cloud is open: the cloud fails or refuses our credentials")
    if facts.paused_for is not None and facts.paused_for > paused_too_long:
        reasons.append(
            f"paused for back-pressure for {facts.paused_for:.0f}s: the cloud is slow or throttles"
        )
    return Readiness(tuple(reasons))


def cloud_capture_readiness(facts: CloudCaptureFacts, *, poll_stale_after: float = 60.0) -> Readiness:
    reasons = _broker(facts.bootstrap, facts.broker_reachable)
    if facts.error is not None:
        reasons.append(f"the last read of the cloud at {facts.cloud_url} and publish failed: {facts.error}")
    reasons += _overdue(
        facts.poll_age,
        poll_stale_after,
        never=None if facts.error is not None else "the cloud's change feed has not been read yet (starting)",
        stale="the cloud's change feed last answered {age:.0f}s ago: the cloud or the broker hangs, "
        "or a full read is under way",
    )
    return Readiness(tuple(reasons))


def lag_exporter_readiness(facts: LagExporterFacts, *, stale_after: float) -> Readiness:
    reasons = _overdue(
        facts.read_age,
        stale_after,
        never="no successful read of the consumer offsets yet",
        stale="the last successful read of the consumer offsets was {age:.0f}s ago (broker unreachable?)",
    )
    return Readiness(tuple(reasons))


class Since:
    """Since when a condition has held, from observations: ``observe(True, now)`` returns the
    seconds it has held (0 at the first), ``observe(False, now)`` returns None and forgets."""

    def __init__(self) -> None:
        self._since: float | None = None

    def observe(self, holds: bool, now: float) -> float | None:
        if not holds:
            self._since = None
            return None
        if self._since is None:
            self._since = now
        return now - self._since
