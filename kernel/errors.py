"""The one error tree of vudsync. Third-party errors are translated into these at the edge.

Callers ask :func:`is_retriable` rather than matching on library exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class VudsyncError(Exception):
    """Base of every error vudsync raises on purpose. ``hint`` says what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigurationError(VudsyncError):
    """Settings are missing or contradict each other."""


class RetryableError(VudsyncError):
    """A transient failure: trying again later may succeed. ``retry_after`` in seconds, if known."""

    def __init__(self, message: str, *, retry_after: float | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class AuthenticationFailed(RetryableError):
    """The cloud refused our credentials (or their scopes) even after a fresh token.

    Retrying soon cannot help: the sink's circuit opens for a long cool-down (no request storm)
    until an operator fixes the client id/secret; operations wait, none is dead-lettered.
    """

    reason = "unauthorized"


class PermanentError(VudsyncError):
    """Trying again will fail the same way: dead-letter it with its reason."""


class KafkaAccessDenied(PermanentError):
    """The Kafka cluster refused this client's credentials, or an ACL forbids what it asked."""


class OversizedRecord(NamedTuple):
    """A record refused for its size: where it was going, its key, its size in bytes."""

    topic: str
    key: str
    size: int


class RecordsTooLarge(PermanentError):
    """``flush``: these records were refused for their size (by the client before sending, or by
    the broker); every other record queued with them was acknowledged. Sending them again fails
    the same way: dead-letter each."""

    def __init__(self, records: Sequence[OversizedRecord]) -> None:
        largest = max(r.size for r in records)
        super().__init__(f"{len(records)} record(s) too large for the broker, the largest {largest} bytes")
        self.records = tuple(records)


def is_retriable(exc: BaseException) -> bool:
    """True for failures worth another attempt."""
    return isinstance(exc, RetryableError)
