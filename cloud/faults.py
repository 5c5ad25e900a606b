"""Fault injection: the decision logic, free of I/O.

A :class:`FaultConfig` says how often each kind of failure happens; :func:`decide`
draws one :class:`FaultDecision` per request from a ``random.Random`` (seeded for
reproducible runs). The HTTP side (``cloud.middleware``) carries the decision out.

Every fault except ``drop`` with ``drop_after_effect`` is carried out **before** the
request reaches its handler, so an injected 5xx or 429 never had an effect. Latency too,
unless ``latency_after_effect``: then a request that reaches its handler is answered that
much later, its effect already made (what a client killed while it waits leaves behind).
"""

from __future__ import annotations

import enum
import random
import threading
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator


def parse_latency(text: str) -> tuple[int, int]:
    """``"20"`` → (20, 20); ``"10,50"`` or ``"10-50"`` → (10, 50): ``latency_ms`` as written on
    a command line. Raises ValueError for anything else."""
    try:
        values = [int(p) for p in text.replace("-", ",").split(",") if p.strip()]
    except ValueError:
        raise ValueError("not MIN,MAX in milliseconds") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise ValueError("not MIN,MAX in milliseconds")
    return values[0], values[1]


class FaultConfig(BaseModel):
    """Rates are probabilities per ``/v1`` request; their sum must not exceed 1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    error_rate: float = Field(default=0.0, ge=0, le=1, description="answer 5xx, no effect")
    rate_limit_rate: float = Field(
        default=0.0, ge=0, le=1, description="answer 429 with Retry-After, no effect"
    )
    retry_after_seconds: float = Field(default=1.0, ge=0, le=3600, description="Retry-After of injected 429s")
    latency_ms: tuple[int, int] = Field(
        default=(0, 0), description="[min, max] added latency per request, uniform"
    )
    latency_after_effect: bool = Field(
        default=False,
        description="add the latency after the handler ran (a slow answer to a write already made)",
    )
    drop_rate: float = Field(default=0.0, ge=0, le=1, description="close the connection without a response")
    drop_after_effect: bool = Field(
        default=False, description="drop after the handler ran (the effect happened)"
    )
    timeout_rate: float = Field(
        default=0.0, ge=0, le=1, description="hold the request timeout_seconds, then answer"
    )
    timeout_seconds: float = Field(
        default=10.0, ge=0, le=600, description="set it above the client's read timeout"
    )
    seed: int | None = Field(default=None, description="seed of the fault RNG; null = random")

    @model_validator(mode="after")
    def _check(self) -> FaultConfig:
        low, high = self.latency_ms
        if low < 0 or high < low or high > 60_000:
            raise ValueError("latency_ms must be [min, max] with 0 <= min <= max <= 60000")
        total = self.error_rate + self.rate_limit_rate + self.drop_rate + self.timeout_rate
        if total > 1.0 + 1e-9:
            raise ValueError("error_rate + rate_limit_rate + drop_rate + timeout_rate > 1")
        return self

    @property
    def active(self) -> bool:
        return bool(
            self.error_rate
            or self.rate_limit_rate
            or self.drop_rate
            or self.timeout_rate
            or self.latency_ms[1]
        )


class FaultKind(enum.Enum):
    NONE = "none"
    ERROR = "error"
    RATE_LIMIT = "rate_limit"
    DROP_BEFORE = "drop_before_effect"
    DROP_AFTER = "drop_after_effect"
    TIMEOUT = "timeout"


ERROR_STATUSES: tuple[int, ...] = (500, 502, 503)


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What to do with one request. ``status`` only for ERROR / RATE_LIMIT."""

    kind: FaultKind
    latency_seconds: float = 0.0
    latency_after: bool = False  # the latency follows the handler instead of preceding it
    status: int | None = None
    retry_after_seconds: float | None = None
    hold_seconds: float = 0.0


NO_FAULT = FaultDecision(FaultKind.NONE)


def decide(config: FaultConfig, rng: random.Random) -> FaultDecision:
    """Draw the fate of one request.

    One uniform draw picks the fault by bands in the order error, rate limit, drop,
    timeout; latency is drawn independently and applies to every outcome (after the handler,
    with ``latency_after_effect``, for the outcomes that run it).
    """
    if not config.active:
        return NO_FAULT
    low, high = config.latency_ms
    latency = rng.uniform(low, high) / 1000.0 if high else 0.0
    after = config.latency_after_effect and latency > 0
    draw = rng.random()
    edge = config.error_rate
    if draw < edge:
        return FaultDecision(FaultKind.ERROR, latency, status=rng.choice(ERROR_STATUSES))
    edge += config.rate_limit_rate
    if draw < edge:
        return FaultDecision(
            FaultKind.RATE_LIMIT,
            latency,
            status=429,
            retry_after_seconds=config.retry_after_seconds,
        )
    edge += config.drop_rate
    if draw < edge:
        if config.drop_after_effect:
            return FaultDecision(FaultKind.DROP_AFTER, latency, latency_after=after)
        return FaultDecision(FaultKind.DROP_BEFORE, latency)
    edge += config.timeout_rate
    if draw < edge:
        return FaultDecision(
            FaultKind.TIMEOUT, latency, latency_after=after, hold_seconds=config.timeout_seconds
        )
    return FaultDecision(FaultKind.NONE, latency, latency_after=after)


class FaultInjector:
    """The run-time fault configuration and its RNG; thread-safe."""

    def __init__(self, config: FaultConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(config.seed)

    @property
    def config(self) -> FaultConfig:
        return self._config

    def configure(self, config: FaultConfig) -> None:
        """Replace the configuration; the RNG restarts from ``config.seed``."""
        with self._lock:
            self._config = config
            self._rng = random.Random(config.seed)

    def next_decision(self) -> FaultDecision:
        with self._lock:
            return decide(self._config, self._rng)
