"""``vudsync run lag-exporter``: the consumer-lag exporter, a pipeline component of its own.

It joins the ``run`` group (``vudsync.cli`` registers this module's ``run``, the very same
group object as ``vudsync.commands.run.run``, with ``lag-exporter`` added). Why a process of
its own rather than a thread in the planner and the sink: see :mod:`vudsync.ops.lag_exporter`.
"""

from __future__ import annotations

import click

from kernel.settings import load_settings
from vudsync.bootstrap import resolve_bootstrap
from vudsync.commands.run import run

__all__ = ["lag_exporter", "run"]


@run.command("lag-exporter")
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="serve Prometheus metrics on this port (127.0.0.1 unless VUDSYNC_METRICS_HOST)",
)
def lag_exporter(metrics_port: int | None) -> None:
    """Consumer lag of the planner's and the sink's groups, read from the broker every
    VUDSYNC_LAG_INTERVAL seconds, as vudsync_consumer_lag_messages{group,topic,partition}."""
    from vudsync.ops.lag_exporter import run_lag_exporter

    settings = load_settings()
    run_lag_exporter(settings, resolve_bootstrap(settings), metrics_port=metrics_port)
