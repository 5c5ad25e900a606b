"""The Faust application of the planner. Built by :func:`create_app`; nothing at import."""

from __future__ import annotations

import faust

from vudsync.settings import Settings


def app_id(settings: Settings) -> str:
    """The planner's consumer group (and the prefix of its changelog topics)."""
    return f"{settings.topic_prefix}vudsync-planner"


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    datadir = settings.home / "planner" / settings.worker_name
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id(settings),
        broker=f"kafka://{bootstrap}",
        store="rocksdb://" if settings.planner_store == "rocksdb" else "memory://",
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        producer_acks=-1,
        processing_guarantee="at_least_once",
        web_enabled=False,
        autodiscover=False,
        broker_commit_every=500,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=4096,
        table_cleanup_interval=60.0,
        consumer_auto_offset_reset="earliest",
    )
