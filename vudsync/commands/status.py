"""``vudsync status``: the pipeline on one screen (``--json`` for scripts, ``--watch`` to refresh).

What each line means and where it comes from: :mod:`vudsync.ops.status`.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import click

from kernel.settings import Settings, load_settings

if TYPE_CHECKING:
    from vudsync.ops.status import StatusReport


def collect(settings: Settings, bootstrap: str) -> StatusReport:
    """Read every source once and assemble the report."""
    from vudsync.ops.conflicts import read_open_conflicts
    from vudsync.ops.dlq_kafka import KafkaDeadLetterQueues
    from vudsync.ops.groups import Role, group_id
    from vudsync.ops.journal_index import SqliteJournalIndex
    from vudsync.ops.journal_sync import JournalIndexer, journal_path
    from vudsync.ops.kafka_admin import group_admin
    from vudsync.ops.lag_exporter import read_pipeline_lag
    from vudsync.ops.metrics_scrape import parse_endpoints, scrape
    from vudsync.ops.planner_facts import read_planner_facts
    from vudsync.ops.snapshot import recent_snapshots
    from vudsync.ops.staging import staged_count
    from vudsync.ops.status import LagRow, assemble

    scrapes = scrape(parse_endpoints(settings.status_metrics))
    index = SqliteJournalIndex(journal_path(settings))
    try:
        with group_admin(bootstrap, security=settings.kafka_security()) as admin:
            members = {r.value: (group_id(r, settings), admin.members(group_id(r, settings))) for r in Role}
            lag = [
                LagRow(r.group, r.topic, r.partition, r.committed, r.end, r.lag)
                for r in read_pipeline_lag(admin, settings)
            ]
            queues = KafkaDeadLetterQueues(settings, bootstrap, admin)
            dlq = {d.topic: d.unhandled for d in (queues.depth(q) for q in ("directory", "operations"))}
            now_staged = staged_count(settings, admin)
            indexer = JournalIndexer(settings, bootstrap, index)
            try:
                indexer.catch_up(admin, timeout=60)
            finally:
                indexer.close()
        stats = index.stats(time.time())
        conflicts = len(read_open_conflicts(index))
    finally:
        index.close()
    told = read_planner_facts(settings, bootstrap)
    return assemble(
        now=time.time(),
        members=members,
        lag=lag,
        scrapes=scrapes,
        dlq=dlq,
        journal=stats,
        told=told,
        conflicts=conflicts,
        staged=None if now_staged is None else now_staged.count,
        snapshots=[s.as_dict() for s in recent_snapshots(settings) if s.status.open],
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable (ok, problems, every figure)")
@click.option(
    "--watch",
    "watch",
    type=float,
    default=None,
    is_flag=False,
    flag_value=5.0,
    help="refresh every N seconds (default 5) until Ctrl-C",
)
def status(as_json: bool, watch: float | None) -> None:
    """Liveness, lag, parked and held operations, dead letters, circuit, last applied change,
    throughput, whether `vudsync connect` has succeeded, blocked applications, companies
    waiting for review, open conflicts — on one screen. Exit status 1 when something needs
    attention.

    \b
    Example:
        vudsync status
        vudsync status --json
        vudsync status --watch
    """
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.status import render

    settings = load_settings()
    bootstrap = resolve_bootstrap(settings)
    while True:
        report = collect(settings, bootstrap)
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2, default=str))
        else:
            if watch:
                click.clear()
            click.echo("\n".join(render(report)))
        if not watch:
            raise SystemExit(0 if not report.problems else 1)
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return
