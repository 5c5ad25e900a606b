"""The object graph of one server, built by :func:`cloud.app.build_app` and shared by routes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cloud.auth import Authenticator
from cloud.faults import FaultInjector
from cloud.ratelimit import RateLimiter
from cloud.settings import CloudSettings
from cloud.stats import Stats
from cloud.store import Store

# scope key marking a request that runs inside POST /v1/batch
BATCH_ITEM = "cloud.batch_item"


@dataclass(frozen=True, slots=True)
class CloudContext:
    settings: CloudSettings
    store: Store
    auth: Authenticator
    faults: FaultInjector
    limiter: RateLimiter
    stats: Stats
    customer_id: str
    clock: Callable[[], float]
