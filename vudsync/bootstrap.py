"""Where the Kafka broker is: the configured cluster, else the local broker vudsync manages."""

from __future__ import annotations

from vudsync.broker import LocalKafkaBroker
from vudsync.errors import ConfigurationError
from vudsync.settings import Settings


def resolve_bootstrap(settings: Settings, *, start: bool = False) -> str:
    """``VUDSYNC_KAFKA_BOOTSTRAP`` if set; else the local broker's address (started if ``start``)."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
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
