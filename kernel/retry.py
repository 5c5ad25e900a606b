"""The one back-off of vudsync: capped exponential with full jitter. Pure apart from the
injected random source (tests pass a seeded :class:`random.Random`)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential backoff with full jitter (the AWS architecture blog's "full jitter").

    The wait before attempt ``n + 1`` is uniform in ``[0, min(cap, base * 2**n)]``; a
    server's ``Retry-After`` is a floor: we never come back sooner than it asked.
    """

    base: float = 0.05
    cap: float = 10.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``attempt`` (1 = the first try) failed."""
        ceiling = min(self.cap, self.base * (2 ** min(max(attempt, 0), 30)))
        return max(self.rng.uniform(0, ceiling), retry_after or 0.0)
