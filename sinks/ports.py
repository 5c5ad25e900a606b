"""Ports of the sink: the cloud directory it applies operations to, and its ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.operations import CloudOperation


@dataclass(frozen=True)
class Applied:
    """What applying one operation did in the cloud."""

    effect: str  # created | updated | linked | deactivated | assigned | revoked | noop | …
    cloud_id: str | None = None
    replayed: bool = False  # every write was answered from the cloud's idempotency store
    details: dict[str, Any] = field(default_factory=dict)


class CloudDirectory(Protocol):
    """The cloud's directory, by role. Errors: RetryableError / PermanentError subclasses."""

    async def apply(self, op: CloudOperation) -> Applied: ...

    async def aclose(self) -> None: ...


class Ledger(Protocol):
    """Operation ids already applied (durable), so replays skip them without a cloud call."""

    def get(self, operation_id: str) -> dict[str, Any] | None: ...

    def record(self, operation_id: str, result: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
