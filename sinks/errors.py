"""Errors of the cloud adapter, translated once from httpx at the edge."""

from __future__ import annotations

from vudsync.errors import PermanentError, RetryableError


class CloudUnavailable(RetryableError):
    """5xx, timeout or connection failure: the cloud may answer later."""


class RateLimited(RetryableError):
    """429: wait ``retry_after`` seconds."""


class AuthenticationFailed(RetryableError):
    """The cloud refused our credentials even after a fresh token.

    Retrying soon cannot help: the circuit opens for a long cool-down (no request storm)
    until an operator fixes the client secret.
    """


class CircuitOpen(RetryableError):
    """The circuit to the cloud is open; no request was sent."""


class CloudRejected(PermanentError):
    """A 4xx the operation itself caused (validation, conflict): dead-letter it."""

    def __init__(self, message: str, *, status: int, excerpt: str) -> None:
        super().__init__(message)
        self.status = status
        self.excerpt = excerpt
