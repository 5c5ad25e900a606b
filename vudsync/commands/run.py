"""``vudsync run <component>``: one pipeline component in the foreground until SIGTERM."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from kernel.settings import load_settings
from vudsync.bootstrap import resolve_bootstrap
from vudsync.topics import ensure_component_topics

_METRICS = click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="serve /metrics, /healthz, /readyz and /status on this port (127.0.0.1 unless VUDSYNC_METRICS_HOST)",
)


@click.group()
def run() -> None:
    """Run one component of the pipeline in the foreground (SIGTERM stops it gracefully)."""


@run.command()
@_METRICS
def producer(metrics_port: int | None) -> None:
    """Change capture: snapshot the directory store, then stream its change log to Kafka."""
    from producers.service import run_producer

    settings = load_settings()
    bootstrap = resolve_bootstrap(settings)
    ensure_component_topics(settings, bootstrap, "producer")  # what it uses: nothing its ACLs refuse
    with _snapshot_bar() as progress:
        run_producer(settings, bootstrap, metrics_port=metrics_port, progress=progress)


@run.command("cloud-capture")
@_METRICS
def cloud_capture(metrics_port: int | None) -> None:
    """Writeback: follow the cloud's change feed and publish its access changes to Kafka.

    \b
    Example:
      VUDSYNC_CLOUD_URL=https://cloud.example VUDSYNC_CLOUD_CLIENT_SECRET=… \\
        vudsync run cloud-capture --metrics-port 9105

    The first start (and a cursor the cloud expired) reads the cloud's access in full, then
    follows the feed (`GET /v1/changes`) from a cursor kept in the directory store.
    """
    from cloudcapture.service import run_cloud_capture
    from producers.service import open_store_migrations

    settings = load_settings()
    bootstrap = resolve_bootstrap(settings)
    ensure_component_topics(settings, bootstrap, "cloud-capture")  # what it uses: nothing its ACLs refuse
    open_store_migrations(settings.resolved_store_url())  # the cursor's column (0003 / 0002)
    run_cloud_capture(settings, bootstrap, metrics_port=metrics_port)


@contextmanager
def _snapshot_bar() -> Iterator[Callable[[Any, int, int], None] | None]:
    """A rich progress bar per entity type for the snapshot, when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("snapshot {task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True),
    )  # fmt: skip
    tasks: dict[Any, Any] = {}

    def update(entity: Any, done: int, total: int) -> None:
        if not tasks:
            bar.start()
        if entity not in tasks:
            tasks[entity] = bar.add_task(str(entity.value), total=total)
        bar.update(tasks[entity], completed=done, total=total)
        if entity.value == "user" and done >= total:  # users come last in the snapshot
            bar.stop()

    try:
        yield update
    finally:
        bar.stop()


@run.command()
@_METRICS
@click.option("--worker-name", default=None, help="names this worker's state folder (default worker-1)")
@click.option("--loglevel", default="warning", show_default=True)
@click.option(
    "--staging",
    is_flag=True,
    help="staging mode: plan everything, send nothing to the cloud; inspect with "
    "`vudsync staging diff`, apply with `vudsync staging promote` (default: VUDSYNC_PLANNER_STAGING)",
)
def planner(metrics_port: int | None, worker_name: str | None, loglevel: str, staging: bool) -> None:
    """Reconciliation: Faust worker that plans cloud operations from directory events.

    \b
    Example:
      vudsync run planner --metrics-port 9102
      vudsync run planner --staging        # a new installation: compute, inspect, then promote
    """
    from processors.service import run_planner

    overrides: dict[str, object] = {"worker_name": worker_name} if worker_name else {}
    if staging:
        overrides["planner_staging"] = True
    settings = load_settings(**overrides)
    bootstrap = resolve_bootstrap(settings)
    ensure_component_topics(settings, bootstrap, "planner")  # what it uses: nothing its ACLs refuse
    run_planner(settings, bootstrap, metrics_port=metrics_port, loglevel=loglevel)


@run.command()
@_METRICS
@click.option("--worker-name", default=None, help="names this worker (client id)")
def sink(metrics_port: int | None, worker_name: str | None) -> None:
    """Apply cloud operations to the cloud API, idempotently, and publish their results."""
    from sinks.service import run_sink

    settings = load_settings(**({"worker_name": worker_name} if worker_name else {}))
    bootstrap = resolve_bootstrap(settings)
    ensure_component_topics(settings, bootstrap, "sink")  # what it uses: nothing its ACLs refuse
    run_sink(settings, bootstrap, metrics_port=metrics_port)


@run.command("directory-sink")
@_METRICS
@click.option("--worker-name", default=None, help="names this worker (client id)")
def directory_sink(metrics_port: int | None, worker_name: str | None) -> None:
    """Writeback: apply the planner's directory operations (the cloud's access changes) to the
    directory store, idempotently, and publish their results.

    \b
    Example:
      vudsync run directory-sink --metrics-port 9104
    """
    from sinks.directory_service import run_directory_sink

    settings = load_settings(**({"worker_name": worker_name} if worker_name else {}))
    bootstrap = resolve_bootstrap(settings)
    ensure_component_topics(settings, bootstrap, "directory-sink")  # what it uses: nothing its ACLs refuse
    run_directory_sink(settings, bootstrap, metrics_port=metrics_port)
