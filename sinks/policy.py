"""What the sink does with a cloud call's answer: pure decisions, no I/O, no clock of its own.

* :meth:`SinkPolicy.judge` — what a call says about the cloud, for the circuit breaker: up
  (applied, a 4xx, a 429: the cloud answers), down (5xx, timeout, connection: a failure), or
  refusing our credentials (the circuit opens at once for the cool-down: no request storm).
* :meth:`SinkPolicy.split` — a batch refused as a whole (not an item of it) is applied one
  operation at a time: nothing is lost to a batch the cloud would not take.
* :meth:`SinkPolicy.next_step` — per operation: record it (applied), apply it alone, dead-
  letter it (a permanent failure), give up on it, or retry it.
* :meth:`SinkPolicy.superseded` — an operation older than the version already applied to its
  slot (:func:`schemas.operations.version_slot`) is not applied: whatever path brought it back
  (``vudsync dlq retry``, a replay, a repair), it would roll the cloud back.
* The give-up policy (:meth:`SinkPolicy.gives_up`): a retryable failure is dead-lettered as
  ``failed`` only after ``max_attempts`` attempts *and* ``retry_timeout`` seconds, and only
  while the circuit is closed (the cloud answers others); never for refused credentials or an
  open circuit — an operator's fix or the cloud's return, not time, ends those.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kernel.errors import PermanentError, VudsyncError
from sinks.errors import AuthenticationFailed, CircuitOpen, CloudUnavailable, retry_reason
from sinks.ports import Applied, BatchOutcome


@dataclass(frozen=True)
class Verdict:
    """What one call says about the cloud."""

    result: str  # the label of ``vudsync_sink_cloud_calls_total``
    cloud_up: bool  # True: ``breaker.success()``; False: ``breaker.failure(open_for)``
    open_for: float | None = None  # refused credentials: open the circuit at least this long


class Step(StrEnum):
    """What becomes of one operation after a call."""

    RECORD = "record"  # applied (or replayed): ledger, then its result
    ALONE = "alone"  # the batch path could not finish it: apply it alone (not a failure)
    DEAD_LETTER = "dead_letter"  # refused by the cloud (4xx): DLQ, result ``dead_lettered``
    GIVE_UP = "give_up"  # retried long enough: DLQ, result ``failed``
    RETRY = "retry"  # stays its aggregate's head, tried again after a backoff


@dataclass(frozen=True)
class SinkPolicy:
    max_attempts: int = 8
    retry_timeout: float = 300.0
    auth_cooldown: float = 30.0

    def judge(self, error: VudsyncError | None) -> Verdict:
        """What a call that ended with ``error`` (None: it answered) says about the cloud."""
        if error is None:
            return Verdict("ok", cloud_up=True)
        if isinstance(error, PermanentError):
            return Verdict("rejected", cloud_up=True)
        if isinstance(error, AuthenticationFailed):
            return Verdict(
                "unauthorized", cloud_up=False, open_for=max(self.auth_cooldown, error.retry_after or 0.0)
            )
        if isinstance(error, CloudUnavailable):
            return Verdict(error.reason, cloud_up=False)
        return Verdict(retry_reason(error), cloud_up=True)  # rate limited: the cloud is up

    @staticmethod
    def split(error: VudsyncError | None, size: int) -> bool:
        """Whether a call of ``size`` operations that failed with ``error`` was a batch the
        cloud refused as a whole: then each of its operations is applied alone."""
        return size > 1 and isinstance(error, PermanentError)

    def next_step(self, outcome: BatchOutcome, attempts: int, waited: float, circuit_open: bool) -> Step:
        """The step for one operation's ``outcome``, after ``attempts`` attempts over
        ``waited`` seconds since its first, the circuit to the cloud ``circuit_open`` or not."""
        if isinstance(outcome, Applied):
            return Step.RECORD
        if outcome is None:
            return Step.ALONE
        if isinstance(outcome, PermanentError):
            return Step.DEAD_LETTER
        if self.gives_up(outcome, attempts, waited, circuit_open):
            return Step.GIVE_UP
        return Step.RETRY

    @staticmethod
    def superseded(version: int, applied: int | None) -> bool:
        """Whether an operation of source ``version`` is older than ``applied``, the highest
        source version applied to its slot (None: nothing yet). An equal version goes: it is
        the same plan (a redelivery, the released remainder of a parked plan)."""
        return applied is not None and version < applied

    def gives_up(self, error: VudsyncError, attempts: int, waited: float, circuit_open: bool) -> bool:
        """The give-up policy of a retryable failure (see the module's docstring)."""
        return (
            not isinstance(error, AuthenticationFailed | CircuitOpen)
            and attempts >= self.max_attempts
            and waited >= self.retry_timeout
            and not circuit_open
        )

    @staticmethod
    def retry_floor(error: VudsyncError) -> float | None:
        """The least wait before the next attempt: the server's ``Retry-After``; none after
        refused credentials (the circuit holds every call back, and its probe decides)."""
        if isinstance(error, AuthenticationFailed):
            return None
        retry_after: float | None = getattr(error, "retry_after", None)
        return retry_after

    def warns(self, attempts: int) -> bool:
        """Whether an operation still failing after ``attempts`` attempts deserves a warning
        (twice: at ``max_attempts`` and at four times that, not at every retry)."""
        return attempts in (self.max_attempts, self.max_attempts * 4)
