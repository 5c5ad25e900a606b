"""Settings for every vudsync process: environment (``VUDSYNC_*``) and an optional TOML file.

One ``Settings`` object is built per process, in its composition root, and passed down.
Nothing reads the environment anywhere else.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from kernel.errors import ConfigurationError
from kernel.kafka_security import KafkaSecurity, Mechanism, Protocol

#: the secret fields: none has a default (``Settings.require_secret``)
SecretName = Literal["cloud_client_secret", "cloud_admin_token", "fingerprint_key"]
SECRET_FIELDS: tuple[SecretName, ...] = ("cloud_client_secret", "cloud_admin_token", "fingerprint_key")


def _default_home() -> Path:
    return Path(os.environ.get("VUDSYNC_HOME", Path.cwd() / "var")).resolve()


class Settings(BaseSettings):
    """Every knob of vudsync. Field ``foo`` is read from ``VUDSYNC_FOO``."""

    model_config = SettingsConfigDict(
        env_prefix="VUDSYNC_",
        toml_file=os.environ.get("VUDSYNC_CONFIG", "vudsync.toml"),
        extra="ignore",
    )

    home: Path = Field(default_factory=_default_home, description="state folder (broker, stores, ledgers)")

    # Kafka
    kafka_bootstrap: str | None = Field(
        default=None, description="bootstrap servers; unset = the local broker managed by vudsync"
    )
    kafka_security_protocol: Protocol = Field(
        default="PLAINTEXT", description="PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL"
    )
    kafka_sasl_mechanism: Mechanism = Field(
        default="SCRAM-SHA-512", description="SCRAM-SHA-512 | SCRAM-SHA-256 | PLAIN"
    )
    kafka_username: str | None = Field(default=None, description="SASL user (one per component)")
    kafka_password: SecretStr | None = Field(default=None, description="SASL password")
    kafka_ca_file: Path | None = Field(default=None, description="CA that signed the brokers' certificates")
    kafka_cert_file: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    kafka_key_file: Path | None = Field(default=None, description="its private key (PEM, unencrypted)")
    kafka_version: str = "4.4.0"
    kafka_port: int = 0
    kafka_heap: str = "512m"
    topic_prefix: str = Field(default="", description="prefix for every topic name (tests use it)")
    topic_partitions: int = 6
    topic_replication: int = Field(
        default=0,
        ge=0,
        description="replicas per topic; 0 = from the cluster's configured size (brokers that are "
        "down included): 3 (min.insync.replicas=2) when it has three or more brokers, else one per broker",
    )
    history_days: int = Field(default=7, description="days of history kept on compacted topics (replay)")

    # directory store
    store_url: str = Field(
        default="", description="sqlite:///path or postgresql://…; empty = home/directory.db"
    )
    capture_batch_size: int = 2000
    capture_client: Literal["confluent", "kafka-python"] = Field(
        default="confluent", description="Kafka client of the producer (librdkafka: ~4x the records/s)"
    )

    # planner
    planner_store: str = Field(default="memory", description="memory | rocksdb (large installations)")
    worker_name: str = Field(default="worker-1", description="names this process's state folder")
    planner_deletes_threshold: int = Field(
        default=500, ge=0, description="more deletions than this within the window are held"
    )
    planner_deletes_percent: float | None = Field(
        default=None, gt=0, le=100, description="… or more than this % of the live entities (unset: off)"
    )
    planner_deletes_window: float = Field(default=3600.0, gt=0, description="seconds (source commit time)")
    planner_deletes_settle: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="seconds: deletions wait until none came for this long, and a burst over the "
        "threshold is held whole",
    )
    planner_staging: bool = Field(
        default=False,
        description="staging mode: plan every change, send nothing to the cloud; the operations "
        "wait on vud.cloud.operations.staged for `vudsync staging diff|promote|discard`",
    )
    # 50 ms, not 5: a produce request per few events was the largest item of the planner's
    # profile (the socket write, the broker's CPU); what must not wait is flushed at once
    # (a release's sends before its table write, faust_compat.producer_send_now), and 50 ms
    # is a twentieth of the 1 s end-to-end target (docs/benchmarks.md, "Fewer produce requests")
    planner_linger: float = Field(default=0.05, ge=0, description="producer linger of the planner, seconds")
    planner_fetch_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="bytes the planner fetches per partition at a time (Faust's consumer_max_fetch_size): "
        "smaller lets results in between a directory backlog's records",
    )
    planner_buffer: int = Field(
        default=1000,
        ge=1,
        description="messages the planner's stream buffers ahead (Faust's stream_buffer_maxsize): a result "
        "waits behind at most this many",
    )
    planner_session_timeout: float = Field(
        default=30.0, gt=0, description="seconds until a silent planner worker's partitions move"
    )
    planner_shutdown_deadline: float = Field(
        default=60.0,
        gt=0,
        description="seconds a stop (SIGTERM) may take before the worker exits without its last "
        "commit (a broker gone for good)",
    )
    planner_allow_untested_faust: bool = Field(
        default=False,
        description="start on faust-streaming/aiokafka versions other than the tested ones "
        "(processors/faust_compat.py): only after re-checking its workarounds",
    )

    # reference cloud API
    cloud_url: str = "http://127.0.0.1:8700"
    cloud_client_id: str = "vudsync"
    # secrets: no defaults. A component that needs one and finds it unset stops with a
    # ConfigurationError naming the variable (require_secret); the demo, devtools and the
    # tests generate random ones per run (devtools.secrets).
    cloud_client_secret: SecretStr | None = Field(
        default=None, description="required by sink, connect, verify"
    )
    cloud_admin_token: SecretStr | None = Field(
        default=None, description="X-Admin-Token of the reference cloud (vudsync cloud …)"
    )
    fingerprint_key: SecretStr | None = Field(
        default=None, description="HMAC key of the license fingerprints (producer, connect, verify)"
    )

    # sink
    sink_concurrency: int = Field(default=16, description="cloud calls in flight per worker (a batch = 1)")
    sink_batch: bool = Field(default=True, description="POST /v1/batch when simple operations queue up")
    sink_batch_size: int = Field(default=500, ge=1, le=500, description="operations per batch call")
    sink_max_outstanding: int = Field(
        default=5000, ge=1, description="operations taken and unfinished before the sink takes no more"
    )
    sink_hold_timeout: float = Field(
        default=5.0, gt=0, description="seconds at that limit before the sink pauses its partitions"
    )
    sink_max_attempts: int = Field(default=8, description="give up a retryable failure after this many …")
    sink_retry_timeout: float = Field(default=300.0, description="… and this many seconds (then DLQ)")
    sink_http_timeout: float = Field(default=10.0, description="seconds per cloud call")
    sink_auth_cooldown: float = Field(default=30.0, description="circuit open after refused credentials")
    sink_session_timeout: float = Field(
        default=45.0,
        gt=0,
        description="seconds until a silent sink's partitions move (the operations sink and the "
        "directory sink; librdkafka's default; within the broker's group.min/max.session.timeout.ms)",
    )
    sink_ledger_url: str = Field(
        default="", description="sqlite:///path or postgresql://…; empty = home/sink/<prefix>ledger.db"
    )

    # writeback: cloud-capture (vudsync run cloud-capture)
    writeback_poll_interval: float = Field(
        default=1.0, gt=0, description="seconds between polls of the cloud's change feed while it has no more"
    )
    writeback_page_limit: int = Field(default=500, ge=1, le=1000, description="items per page of the feed")

    # logging
    log_levels: str = Field(
        default="",
        description="levels of single loggers, name=LEVEL,… (processors=DEBUG,faust.tables.recovery=DEBUG): "
        "one component's inner workings without the DEBUG of every library",
    )

    # metrics
    metrics_host: str = "127.0.0.1"
    # metrics: consumer-lag exporter (vudsync run lag-exporter)
    lag_interval: float = Field(default=10.0, gt=0, description="seconds between two reads of consumer lag")

    # operations (vudsync status / replay / dlq / journal / verify)
    journal_path: Path | None = Field(default=None, description="journal index; unset = home/journal.db")
    status_metrics: str = Field(
        default="", description="name=url,… of the components' /metrics endpoints `vudsync status` reads"
    )
    verify_every: str = Field(
        default="", description="`vudsync verify` repeats at this interval (10m); empty = once"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def require_secret(self, name: SecretName) -> str:
        """The value of secret field ``name``; a ``ConfigurationError`` naming its variable if unset."""
        value: SecretStr | None = getattr(self, name)
        if value is None or not value.get_secret_value():
            raise ConfigurationError(
                f"VUDSYNC_{name.upper()} is not set",
                hint=f"set VUDSYNC_{name.upper()} (or {name} in the TOML file); "
                "it has no default outside `vudsync demo`",
            )
        return value.get_secret_value()

    def kafka_security(self) -> KafkaSecurity:
        """The ``kafka_*`` connection options as one model (field ``f`` is setting ``kafka_f``)."""
        fields = KafkaSecurity.model_fields
        return KafkaSecurity(**{field: getattr(self, f"kafka_{field}") for field in fields})

    def with_kafka_security(self, security: KafkaSecurity) -> Settings:
        """These settings connecting as ``security`` says (the inverse of :meth:`kafka_security`):
        each component of a secured cluster has a principal of its own."""
        return self.model_copy(
            update={f"kafka_{field}": value for field, value in security.model_dump().items()}
        )

    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.home / 'directory.db'}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def logger_levels(self) -> dict[str, int]:
        """``log_levels`` as logger name → level number; ``ConfigurationError`` if malformed."""
        levels: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in self.log_levels.split(","))):
            name, _, level = item.partition("=")
            number = logging.getLevelName(level.strip().upper())
            if not name.strip() or not isinstance(number, int):
                raise ConfigurationError(
                    f"VUDSYNC_LOG_LEVELS: {item!r} is not name=LEVEL",
                    hint="e.g. VUDSYNC_LOG_LEVELS=processors=DEBUG,faust.tables.recovery=DEBUG",
                )
            levels[name.strip()] = number
        return levels


def heartbeat_interval(session_timeout: float) -> float:
    """Seconds between a group member's heartbeats for ``session_timeout``: a quarter of it, at
    most 3 s (the clients' default), so that a member misses three before the broker drops it."""
    return min(3.0, session_timeout / 4)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings of this process (environment, TOML file, then ``overrides``)."""
    return Settings(**overrides)
