"""Where the Kafka broker is: the configured cluster, else the local broker vudsync manages."""

from __future__ import annotations

from kernel.errors import ConfigurationError
from kernel.settings import Settings


def resolve_bootstrap(settings: Settings, *, start: bool = False) -> str:
    """``VUDSYNC_KAFKA_BOOTSTRAP`` if set; else the local broker's address (started if ``start``)."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    # the local broker is a developer tool: a production install (no devtools package) names
    # its cluster with VUDSYNC_KAFKA_BOOTSTRAP and never gets here
    try:
        from devtools.broker import LocalKafkaBroker
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "no Kafka broker: VUDSYNC_KAFKA_BOOTSTRAP is not set",
            hint="set VUDSYNC_KAFKA_BOOTSTRAP=host:port (this install has no local broker)",
        ) from exc
    broker = LocalKafkaBroker.from_settings(settings)
    if start:
        return broker.up().bootstrap or ""
    status = broker.status()
    if not status.running or not status.bootstrap:
        raise ConfigurationError(
            "no Kafka broker: VUDSYNC_KAFKA_BOOTSTRAP is not set and the local broker is not running",
            hint="start one with `vudsync kafka up`, or set VUDSYNC_KAFKA_BOOTSTRAP=host:port",
        )
    return status.bootstrap
