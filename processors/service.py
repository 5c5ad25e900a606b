"""Composition root of a planner worker process."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import faust
from prometheus_client import CollectorRegistry, start_http_server

from processors.agents import declare_agents
from processors.app import create_app
from processors.handlers import PlannerHandlers
from processors.metrics import PlannerMetrics
from processors.tables import declare_tables
from processors.topics import declare_topics
from vudsync.settings import Settings

log = logging.getLogger(__name__)


def build_planner(settings: Settings, bootstrap: str, registry: CollectorRegistry) -> faust.App:
    app = create_app(settings, bootstrap)
    topics = declare_topics(app, settings)
    tables = declare_tables(app)
    handlers = PlannerHandlers(
        tables,
        topics,
        PlannerMetrics(registry),
        lambda: datetime.now(UTC),
        topic_prefix=settings.topic_prefix,
        partitions=settings.topic_partitions,
    )
    declare_agents(app, topics, handlers)
    return app


def run_planner(
    settings: Settings, bootstrap: str, *, metrics_port: int | None = None, loglevel: str = "warning"
) -> None:
    """Run one planner worker until SIGTERM/SIGINT (Faust stops gracefully and commits)."""
    registry = CollectorRegistry()
    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.metrics_host, registry=registry)
    app = build_planner(settings, bootstrap, registry)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
