"""The one error tree of vudsync. Third-party errors are translated into these at the edge.

Callers ask :func:`is_retriable` rather than matching on library exceptions.
"""

from __future__ import annotations


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


class PermanentError(VudsyncError):
    """Trying again will fail the same way: dead-letter it with its reason."""


class KafkaAccessDenied(PermanentError):
    """The Kafka cluster refused this client's credentials, or an ACL forbids what it asked."""


class InvalidEvent(PermanentError):
    """A message that does not decode or validate against its schema."""


def is_retriable(exc: BaseException) -> bool:
    """True for failures worth another attempt."""
    return isinstance(exc, RetryableError)
