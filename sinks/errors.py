"""Errors of the cloud adapter, translated once from httpx and HTTP statuses at the edge.

Each retryable error names its ``reason`` (a bounded metric label: ``server_error``,
``timeout``, ``connection``, ``rate_limited``, ``unauthorized``, ``circuit_open``).
"""

from __future__ import annotations

# AuthenticationFailed is the kernel's (kernel.auth raises it); re-exported for the sink
from kernel.errors import AuthenticationFailed as AuthenticationFailed
from kernel.errors import PermanentError, RetryableError, VudsyncError


class CloudUnavailable(RetryableError):
    """5xx, timeout or connection failure: the cloud may answer later."""

    def __init__(
        self,
        message: str,
        *,
        reason: str = "server_error",
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.reason = reason
        self.status = status


class RateLimited(RetryableError):
    """429: wait at least ``retry_after`` seconds. The cloud is up: not a circuit failure."""

    reason = "rate_limited"


class CircuitOpen(RetryableError):
    """The circuit to the cloud is open; no request was sent."""

    reason = "circuit_open"


class CloudRejected(PermanentError):
    """A 4xx the operation itself caused (validation, conflict): dead-letter it.

    ``excerpt`` is the start of the response body, withheld when it names a secret.
    """

    def __init__(self, message: str, *, status: int, excerpt: str) -> None:
        super().__init__(message)
        self.status = status
        self.excerpt = excerpt


def retry_reason(exc: BaseException) -> str:
    """The bounded label of a retryable failure, for metrics and logs."""
    return str(getattr(exc, "reason", type(exc).__name__))


class CommitRefused(VudsyncError):
    """The group refused an offset commit (a rebalance took the partitions): the new owner
    reads them from the last commit, and the ledger answers what was applied since."""
