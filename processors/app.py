"""The Faust application of the planner. Built by :func:`create_app`; nothing at import."""

from __future__ import annotations

import faust

from kernel.errors import ConfigurationError
from kernel.settings import Settings, heartbeat_interval

STORES = {"memory": "memory://", "rocksdb": "rocksdb://"}


def app_id(settings: Settings) -> str:
    """The planner's consumer group (and the prefix of its changelog topics)."""
    return f"{settings.topic_prefix}vudsync-planner"


def store_url(settings: Settings) -> str:
    """The table store: memory (default; tables recovered from their changelog at start) or
    RocksDB through ``rocksdict`` (large installations; recovers only what it lacks)."""
    try:
        url = STORES[settings.planner_store]
    except KeyError:
        raise ConfigurationError(
            f"unknown planner store {settings.planner_store!r}",
            hint="VUDSYNC_PLANNER_STORE=memory or rocksdb",
        ) from None
    if url.startswith("rocksdb"):
        try:
            import rocksdict  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "VUDSYNC_PLANNER_STORE=rocksdb needs the rocksdict package",
                hint="pip install 'vudsync[rocksdb]'",
            ) from None
    return url


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    datadir = settings.home / "planner" / settings.worker_name
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id(settings),
        broker=f"kafka://{bootstrap}",
        **settings.kafka_security().for_faust(),
        # names the worker in its group, as the sinks' client ids do (replay's refusal and dry
        # run listed every planner worker as "faust-0.15.3 on <host>", Faust's default)
        broker_client_id=f"vudsync-planner-{settings.worker_name}",
        store=store_url(settings),
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        # 0 (from the cluster) is resolved by run_planner; an app built without a broker gets 1
        topic_replication_factor=settings.topic_replication or 1,
        producer_acks=-1,
        producer_linger=settings.planner_linger,
        # table changelog records carry states (~1-2 KB): the 16 KB default sends a produce
        # request every few records, and every request costs a system call on the event loop
        producer_max_batch_size=1024 * 1024,
        producer_max_request_size=4 * 1024 * 1024,
        processing_guarantee="at_least_once",
        web_enabled=False,
        autodiscover=False,
        # no standby replicas: a worker taking partitions over recovers them from the changelog
        # (see docs in processors/tables.py for why)
        table_standby_replicas=0,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=settings.planner_buffer,
        consumer_max_fetch_size=settings.planner_fetch_bytes,
        table_cleanup_interval=60.0,
        consumer_auto_offset_reset="earliest",
        # a killed worker's partitions move after this (faust's default is 60 s)
        broker_session_timeout=settings.planner_session_timeout,
        broker_heartbeat_interval=heartbeat_interval(settings.planner_session_timeout),
    )
