"""Composition root of a planner worker process."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import faust
from faust.types import TP
from prometheus_client import CollectorRegistry, start_http_server

from processors.agents import declare_agents
from processors.app import create_app
from processors.engine import Reconciler
from processors.handlers import Committed, PlannerHandlers
from processors.metrics import PlannerMetrics
from processors.model import PlannerSettings
from processors.tables import declare_table
from processors.topics import declare_topics, ensure_planner_topics
from vudsync.settings import Settings

log = logging.getLogger(__name__)


def planner_settings(settings: Settings) -> PlannerSettings:
    return PlannerSettings(
        deletes_threshold=settings.planner_deletes_threshold,
        deletes_threshold_percent=settings.planner_deletes_percent,
        deletes_window_seconds=settings.planner_deletes_window,
    )


def committed_offsets(app: faust.App) -> Committed:
    """The committed offset of a topic partition, as this worker's consumer knows it.

    Faust keeps it in ``Consumer._committed_offset`` (set when partitions are assigned and
    after each commit) and has no public accessor; faust-streaming is pinned, and
    tests/integration/test_planner_faust.py pins this behaviour.
    """

    def committed(topic: str, partition: int) -> int | None:
        offsets = getattr(app.consumer, "_committed_offset", None)
        return offsets.get(TP(topic, partition)) if offsets is not None else None

    return committed


def build_planner(settings: Settings, bootstrap: str, registry: CollectorRegistry) -> faust.App:
    app = create_app(settings, bootstrap)
    topics = declare_topics(app, settings)
    table = declare_table(app)
    reconciler = Reconciler(
        table, planner_settings(settings), settings.topic_partitions, lambda: datetime.now(UTC)
    )
    handlers = PlannerHandlers(
        reconciler,
        table,
        topics,
        PlannerMetrics(registry),
        committed_offsets(app),
        topic_prefix=settings.topic_prefix,
    )
    declare_agents(app, topics, handlers)
    return app


def run_planner(
    settings: Settings, bootstrap: str, *, metrics_port: int | None = None, loglevel: str = "warning"
) -> None:
    """Run one planner worker until SIGTERM/SIGINT (Faust stops gracefully and commits)."""
    ensure_planner_topics(settings, bootstrap)
    registry = CollectorRegistry()
    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.metrics_host, registry=registry)
    app = build_planner(settings, bootstrap, registry)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    # Faust's terminal spinner sets the *root* logger to DEBUG (so that every record turns it):
    # aiokafka then builds a debug record per message sent — a tenth of the worker's time
    worker.spinner = None
    worker.execute_from_commandline()
