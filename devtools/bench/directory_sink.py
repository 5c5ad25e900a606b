"""``vudsync bench directory_sink``: the directory sink's throughput and latency, on real parts.

The store half of writeback (issue 16); ``vudsync bench writeback`` measures the capture half.

A run: a Kafka broker (``VUDSYNC_KAFKA_BOOTSTRAP``, else a temporary local one), a fresh
directory store (SQLite in a temporary folder, or ``--store-url``) seeded with ``--users``
users, one company and the Business roles, then one ``vudsync run directory-sink`` child
process, and ``--operations`` ``GrantDirectoryAccess`` written straight to
``vud.directory.operations`` (the planner is not measured, as ``bench sink`` does not measure
it): all at once (``--rate 0``: throughput) or paced at ``--rate`` per second (latency under a
steady load).

Figures, from the store itself: operations applied per second between the first and the last
commit; latency from each operation's ``cloud_changed_at`` (set to the moment it is
published) to its commit in ``directory_operations_applied`` — p50, p99, max; the directory
sink's CPU seconds per operation (``/proc``). Every run checks the store: one access row of
origin cloud and one applied id per operation, none missing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from devtools.bench import bench_broker, emit, latency_figures, process_cpu_seconds
from devtools.processes import ComponentProcess, component_env, wait_until
from devtools.seed.writer import open_writer
from kernel.publishing.confluent import ConfluentRecordPublisher
from kernel.settings import load_settings
from schemas.codec import encode
from schemas.directory import ApplicationType
from schemas.directory_operations import GrantDirectoryAccess, directory_operation_id
from schemas.topics import DIRECTORY_OPERATIONS
from vudsync.topics import ensure_catalogue

ROLES = ("Regnskap", "Lønn", "Innkjøp", "Salg", "Revisor")


def _grant(i: int, users: int, at: datetime) -> GrantDirectoryAccess:
    user, role = f"u{i % users}", ROLES[(i // users) % len(ROLES)]
    key = f"business/role/{role}"
    return GrantDirectoryAccess(
        operation_id=directory_operation_id("directory.access.grant", user, "c1", key, i + 1),
        user_id=user,
        company_id="c1",
        application=ApplicationType.BUSINESS,
        entry_kind="role",
        name=role,
        feed_seq=i + 1,
        cloud_changed_at=at,
        planned_at=at,
    )


def run_writeback_bench(
    operations: int, users: int, rate: float, store_url: str | None, bootstrap: str | None
) -> dict[str, Any]:
    if operations > users * len(ROLES):
        raise click.UsageError(f"at most {users * len(ROLES)} operations for {users} users (one per role)")
    home = Path(tempfile.mkdtemp(prefix="vudsync-bench-directory-sink-"))
    try:
        with bench_broker(bootstrap, home) as (broker, _):
            settings = load_settings(
                home=home,
                kafka_bootstrap=broker,
                topic_prefix=f"bench-{uuid.uuid4().hex[:8]}-",
                store_url=store_url or f"sqlite:///{home / 'directory.db'}",
                topic_partitions=3,
            )
            ensure_catalogue(settings, broker)
            writer = open_writer(settings.resolved_store_url())
            try:
                writer.upsert_catalogue("roles", [("business", r, r) for r in ROLES])
                writer.upsert_companies(
                    [{"id": "c1", "name": "Bench AS", "organisation_number": "923609016"}]
                )
                writer.upsert_users(
                    [{"id": f"u{i}", "username": f"u{i}", "email": f"u{i}@bench.no"} for i in range(users)]
                )
                before = writer.change_log_position()
                proc = ComponentProcess(
                    "directory-sink",
                    ["run", "directory-sink"],
                    env=component_env(settings, broker),
                    log_dir=home,
                ).start()
                try:
                    published = _publish(
                        settings.topic(DIRECTORY_OPERATIONS.name), broker, operations, users, rate
                    )
                    sql = "SELECT COUNT(*) FROM directory_operations_applied"
                    wait_until(
                        lambda: writer.conn.execute(sql).fetchone()[0] >= operations or not proc.alive(),
                        600,
                        interval=0.2,
                        what="every operation applied",
                    )
                    cpu = process_cpu_seconds(proc.pid) if proc.pid else None
                finally:
                    proc.stop()
                return _figures(writer, published, before, operations, cpu, rate, store_url)
            finally:
                writer.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _publish(topic: str, broker: str, operations: int, users: int, rate: float) -> dict[str, float]:
    """Write the operations (flushed every 100, or paced); operation id → published at."""
    publisher = ConfluentRecordPublisher(broker, client_id="bench-directory-sink")
    published: dict[str, float] = {}
    start = time.monotonic()
    try:
        for i in range(operations):
            if rate > 0:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the load, not waiting for a condition
            op = _grant(i, users, datetime.now(UTC))
            publisher.publish(topic, op.user_id, encode(op))
            published[op.operation_id] = op.cloud_changed_at.timestamp()
            if rate > 0 or i % 100 == 99:
                publisher.flush()
        publisher.flush()
    finally:
        publisher.close()
    return published


def _figures(
    writer: Any,
    published: dict[str, float],
    before: int,
    operations: int,
    cpu: float | None,
    rate: float,
    store_url: str | None,
) -> dict[str, Any]:
    rows = writer.conn.execute("SELECT operation_id, applied_at FROM directory_operations_applied").fetchall()
    applied = {str(r[0]): float(r[1]) for r in rows}
    cloud_rows = writer.conn.execute("SELECT COUNT(*) FROM access WHERE origin = 'cloud'").fetchone()[0]
    sql = "SELECT COUNT(*) FROM change_log WHERE seq > ?".replace("?", writer.placeholder)
    logged = writer.conn.execute(sql, (before,)).fetchone()[0]
    latencies = [applied[oid] - at for oid, at in published.items() if oid in applied]
    first, last = min(applied.values(), default=0.0), max(applied.values(), default=0.0)
    return {
        "store": "postgresql" if store_url else "sqlite",
        "operations": operations,
        "rate": rate or "burst",
        "applied": len(applied),
        "missing": sorted(set(published) - set(applied))[:5],
        "cloud_rows": cloud_rows,
        "change_log_rows": logged,
        "applied_per_second": round((len(applied) - 1) / (last - first), 1) if last > first else None,
        **latency_figures(latencies),
        "sink_cpu_ms_per_op": round(1000 * cpu / operations, 3) if cpu is not None else None,
        "load_average": os.getloadavg(),
    }


@click.command("directory_sink")
@click.option("--operations", type=int, default=5000, show_default=True)
@click.option(
    "--users", type=int, default=2000, show_default=True, help="users on premise (5 roles each at most)"
)
@click.option(
    "--rate", type=float, default=0.0, show_default=True, help="operations per second; 0: all at once"
)
@click.option("--store-url", default=None, help="a PostgreSQL store (default: a temporary SQLite one)")
@click.option(
    "--bootstrap", default=None, help="an existing broker (default: the settings', else a temporary one)"
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def command(
    operations: int, users: int, rate: float, store_url: str | None, bootstrap: str | None, as_json: bool
) -> None:
    """The directory sink: grants applied to the store per second, and their latency.

    \b
    Example:
      vudsync bench directory_sink --operations 5000            # throughput
      vudsync bench directory_sink --operations 1000 --rate 50  # latency under a steady load
    """
    emit(run_writeback_bench(operations, users, rate, store_url, bootstrap), as_json)
