"""``vudsync bench pipeline``: the whole pipeline, as an operator runs it, in two phases.

Everything runs as its own process, started the way an operator starts it: a Kafka broker
(``VUDSYNC_KAFKA_BOOTSTRAP``, else a temporary local one), the reference cloud API
(``CloudServer``: ``vudsync cloud serve`` in a child), ``vudsync seed`` into a fresh SQLite
store, ``vudsync connect --no-snapshot`` (in this process: it only checks, reads and
publishes the cloud's catalogues), then ``vudsync run producer|planner|sink``.

1. **connect**: from the producer's start until the cloud holds every active user and every
   assignment of the store. Progress comes from the workers' counters (reading the cloud
   while it works would take its CPU); once they have settled and stayed still for 3 s, the
   cloud is read through its API and compared with the store
   (:func:`vudsync.ops.verify_runner.verify_once`, every page of the cloud). The
   phase ends at the first sample of that settled run if the comparison is clean; if not,
   the bench waits on (more operations may still come: a user's assignments are planned
   once its cloud id is known). Every ``--interval`` seconds a timeline row
   records captured / planned / handled / parked and each process's CPU seconds (from
   ``/proc``), so the slowest stage shows.
2. **live**: ``vudsync seed churn --rate R --duration D`` as a child; end-to-end latency of
   each operation applied from then on (store commit → applied, from ``vud.cloud.results``),
   the backlog (planned - handled, capture lag) over time, and the same comparison after.
3. **reference**: raw kafka-python produce (acks=all) then consume of as many records as the
   pipeline moved through Kafka during connect (events + operations + results), ~600-byte
   values, on the same broker; the pipeline's rate is reported as a share of it.

No figure here is a test assertion: tests run it small and check only correctness.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from devtools.bench import (
    bench_broker,
    bench_producer,
    bench_settings,
    bench_target,
    emit,
    latency_figures,
    process_cpu_seconds,
    topic_reader,
)

if TYPE_CHECKING:
    from devtools.processes import PipelineWorkers
    from kernel.settings import Settings

EXAMPLE = (
    "vudsync bench pipeline --users 10000 --companies 100 --access-per-user 3 "
    "--churn-rate 200 --churn-seconds 20\n"
    "    vudsync bench pipeline --users 10000 --churn-seconds 0 --planners 2 --sinks 2"
)


@dataclass(frozen=True)
class PipelineSpec:
    users: int
    companies: int
    access_per_user: float
    churn_rate: float
    churn_seconds: float
    interval: float = 5.0
    timeout: float = 3600.0
    planners: int = 1
    sinks: int = 1


@dataclass
class Timeline:
    """Samples of the pipeline's counters and its processes' CPU seconds, since a start."""

    started: float
    pids: dict[str, int]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def cpu(self) -> dict[str, float]:
        return {name: process_cpu_seconds(pid) or 0.0 for name, pid in self.pids.items()}

    def sample(
        self, progress: dict[str, float], per_worker: dict[str, dict[str, float]] | None = None
    ) -> dict[str, Any]:
        row = {
            "t": round(time.monotonic() - self.started, 1),
            **{k: int(v) for k, v in progress.items() if k != "capture_lag_seconds"},
            "capture_lag_seconds": round(progress["capture_lag_seconds"], 2),
            "cpu_seconds": {k: round(v, 1) for k, v in self.cpu().items()},
        }
        if per_worker:  # several planners or sinks: each one's own counters
            row["workers"] = {name: {k: int(v) for k, v in c.items()} for name, c in per_worker.items()}
        self.rows.append(row)
        return row


def _say(message: str) -> None:
    click.echo(message, err=True)


def _line(phase: str, row: dict[str, Any]) -> str:
    cpu = " ".join(f"{k} {v:.0f}" for k, v in row["cpu_seconds"].items())
    return (
        f"[{phase} {row['t']:>7.1f}s] captured {row['captured']:,} taken {row['planner_events']:,} "
        f"planned {row['planned']:,} "
        f"handled {row['handled']:,} parked {row['parked']:,} dead {row['dead_lettered']:,} "
        f"lag {row['capture_lag_seconds']:.1f}s | cpu s: {cpu}"
        + (f" | {row['unanswered']} metrics endpoint(s) did not answer" if row["unanswered"] else "")
        + "".join(
            f" | {name} {c.get('events', c.get('handled', 0)):,}"
            for name, c in row.get("workers", {}).items()
        )
    )


def _seed(spec: PipelineSpec, store_url: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "vudsync", "seed", "--users", str(spec.users), "--companies",
         str(spec.companies), "--access-per-user", str(spec.access_per_user), "--store", store_url, "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise click.ClickException(f"seed failed: {done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


HOLD = 3.0
"""Seconds the counters must stay settled before the cloud is read: the planner plans a user's
assignments only once the sink's result has told it the user's cloud id, so every planned
operation can be handled for a moment while more are still to come."""


def _until_in_cloud(
    phase: str, workers: PipelineWorkers, timeline: Timeline, spec: PipelineSpec, settings: Settings
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sample every ``interval`` s until the counters have settled (:func:`settled`) and not
    moved for :data:`HOLD` s, then compare the store with the cloud; until they match, go on.
    Returns the first row of the last settled run and the cloud's check."""
    from devtools.processes import settled

    deadline = time.monotonic() + spec.timeout
    first: dict[str, Any] | None = None
    checked: dict[str, Any] | None = None  # the row whose counters the cloud was last read at
    drift: list[dict[str, Any]] = []  # the last comparison's first drifts
    while True:
        workers.check_alive()
        per_worker: dict[str, dict[str, float]] = {}
        progress = workers.progress(per_worker)
        row = timeline.sample(progress, per_worker if len(per_worker) > 2 else None)
        _say(_line(phase, row))
        counters = ("captured", "planner_events", "planned", "handled")
        # a worker that did not answer reads 0: with several of a role the sums still look
        # settled (planned > 0), so such a row never counts as settled
        calm = settled(progress) and not progress["unanswered"]
        if not calm or first is None or any(row[k] != first[k] for k in counters):
            first = row if calm else None
        elif row["t"] - first["t"] >= HOLD and (checked is None or checked is not first):
            check = _cloud_check(settings)
            shown = {k: v for k, v in check.items() if k != "drift_sample"}
            _say(f"[{phase}] the store compared with the cloud: {json.dumps(shown)}")
            if check["clean"]:
                return first, check
            drift = check["drift_sample"]
            checked = first  # read again only once the counters have moved and settled again
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"{phase}: the cloud did not hold the store within {spec.timeout:.0f}s: {_line(phase, row)}"
                + (f"; drift: {drift}" if drift else "")
            )
        time.sleep(spec.interval if first is None else min(spec.interval, 1.0))


def _cloud_check(settings: Settings) -> dict[str, Any]:
    """The store compared with the cloud, read through its API."""
    from vudsync.ops.verify_runner import verify_once

    started = time.monotonic()
    verification = verify_once(settings)
    report = verification.report
    directory = verification.directory
    active = [u for u in directory.users.values() if u.active]
    return {
        "clean": report.clean,
        "drift": len(report.drifts),
        "drift_sample": [d.as_dict() for d in report.drifts[:5]],
        "active_users_in_store": len(active),
        "active_users_in_cloud": sum(1 for u in verification.cloud.users if u.get("active")),
        # every user's (company) assignments, active or not, on both sides
        "assignments_in_store": sum(len(u.access) for u in directory.users.values()),
        "assignments_in_cloud": sum(len(items) for items in verification.cloud.access.values()),
        "read_seconds": round(time.monotonic() - started, 1),
    }


def _cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 1) for k in after}


def _connect(
    workers: PipelineWorkers, timeline: Timeline, spec: PipelineSpec, settings: Settings
) -> dict[str, Any]:
    cpu_before = timeline.cpu()
    done, check = _until_in_cloud("connect", workers, timeline, spec, settings)
    seconds = done["t"]
    cpu = _cpu_delta(cpu_before, done["cpu_seconds"])
    moved = done["captured"] + done["planned"] + done["handled"]
    return {
        "seconds": seconds,
        "workers": _workers(workers, done, cpu),
        "events_captured": done["captured"],
        "operations_planned": done["planned"],
        "operations_handled": done["handled"],
        "operations_per_s": round(done["handled"] / seconds, 1) if seconds else None,
        "sink_calls": _sink_calls(done),
        "kafka_records_moved": moved,
        "kafka_records_per_s": round(moved / seconds, 1) if seconds else None,
        "cpu_seconds": cpu,
        "busiest_process": max(cpu, key=lambda k: cpu[k]) if cpu else None,
        "cloud": check,
    }


def _workers(workers: PipelineWorkers, done: dict[str, Any], cpu: dict[str, float]) -> dict[str, Any] | None:
    """Per planner and sink process, when there are several of a role: the records it took
    (events, operations planned / handled) and its CPU seconds over the phase — how the
    partitions split the work."""
    counters: dict[str, dict[str, int]] = done.get("workers") or {}
    if not counters:
        return None
    return {
        name: {**counters.get(name, {}), "cpu_seconds": cpu.get(name, 0.0)}
        for role in ("planner", "sink")
        for name in workers.names(role)
    }


def _sink_calls(row: dict[str, Any]) -> dict[str, Any]:
    """How the sinks reached the cloud up to ``row``: ``POST /v1/batch`` calls and the
    operations they carried, single-operation calls."""
    batches, batched = int(row["sink_batch_calls"]), int(row["sink_batched_operations"])
    return {
        "batch_calls": batches,
        "batched_operations": batched,
        "operations_per_batch_call": round(batched / batches, 1) if batches else None,
        "single_calls": int(row["sink_single_calls"]),
    }


def _cloud_requests(stats: dict[str, Any]) -> dict[str, Any]:
    """The cloud's own count of the requests it answered so far (``GET /admin/stats``): the
    ``POST /v1/batch`` requests (a sink's batch call is one or more: a look-up round, then a
    round per write step) and their items by route — the look-ups (``GET`` items) and the
    writes. Requests outside a batch also count the bench's own reads of the cloud."""
    requests: dict[str, dict[str, int]] = stats.get("requests") or {}
    items = {route: sum(c.values()) for route, c in (stats.get("batch_items") or {}).items()}
    return {
        "total_requests": int(stats.get("total_requests", 0)),
        "batch_requests": sum((requests.get("POST /v1/batch") or {}).values()),
        "batch_items": sum(items.values()),
        "batch_look_ups": sum(n for route, n in items.items() if route.startswith("GET ")),
        "batch_items_by_route": items,
    }


def _backlog(row: dict[str, Any]) -> int:
    """Events captured that the planner has not taken yet, plus operations planned that the
    sink has not handled yet."""
    untaken = int(row["captured"]) - int(row["planner_events"])
    return max(0, untaken) + max(0, int(row["planned"]) - int(row["handled"]))


def _live(
    workers: PipelineWorkers,
    timeline: Timeline,
    spec: PipelineSpec,
    settings: Settings,
    bootstrap: str,
    store_url: str,
) -> dict[str, Any]:
    from devtools.bench.latency import applied_operations, breakdown
    from schemas.topics import PLANNER_CONTROL, RESULTS

    cpu_before = timeline.cpu()
    since = time.time()
    first_row = len(timeline.rows)
    churn = subprocess.Popen(
        [sys.executable, "-m", "vudsync", "seed", "churn", "--rate", str(spec.churn_rate), "--duration",
         str(spec.churn_seconds), "--store", store_url, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        while churn.poll() is None:
            workers.check_alive()
            per_worker: dict[str, dict[str, float]] = {}
            progress = workers.progress(per_worker)
            _say(_line("live", timeline.sample(progress, per_worker if len(per_worker) > 2 else None)))
            with contextlib.suppress(subprocess.TimeoutExpired):
                churn.wait(timeout=min(spec.interval, 2.0))
        out, err = churn.communicate()
    finally:
        if churn.poll() is None:
            churn.kill()
            churn.wait()
    if churn.returncode != 0:
        raise click.ClickException(f"churn failed: {err[-2000:]}")
    written: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    churned = time.monotonic()
    during = timeline.rows[first_row:]
    done, check = _until_in_cloud("live", workers, timeline, spec, settings)
    applied = [
        a
        for a in applied_operations(
            bootstrap,
            settings.topic(RESULTS.name),
            settings.topic(PLANNER_CONTROL.name),
            security=settings.kafka_security(),
        )
        if a.committed >= since
    ]
    latencies = [a.seconds for a in applied]
    backlogs = [_backlog(r) for r in during]
    third = max(1, len(backlogs) // 3)
    return {
        "target_changes_per_s": spec.churn_rate,
        "seconds": spec.churn_seconds,
        "churn": written,
        "operations_applied": len(latencies),
        "latency_basis": "store commit → applied in the cloud (vud.cloud.results)",
        **latency_figures(latencies),
        # the gate holds deletions and revokes by policy (VUDSYNC_PLANNER_DELETES_SETTLE): the
        # path's latency is the ungated operations'; per kind, every operation applied
        **breakdown(applied),
        "backlog_basis": "events captured, not taken by the planner + operations planned, not handled",
        "backlog_max": max(backlogs, default=0),
        "backlog_first_third_max": max(backlogs[:third], default=0),
        "backlog_last_third_max": max(backlogs[-third:], default=0),
        "capture_lag_max_seconds": max((r["capture_lag_seconds"] for r in during), default=0.0),
        # bounded: the backlog does not keep growing while the churn runs
        "backlog_bounded": max(backlogs[-third:], default=0) <= 2 * max(backlogs[:third], default=0) + 10,
        "settled_seconds_after_churn": round(timeline.started + done["t"] - churned, 1),
        "cpu_seconds": _cpu_delta(cpu_before, done["cpu_seconds"]),
        "dead_lettered": done["dead_lettered"],
        "parked": done["parked"],
        "cloud": check,
    }


def reference(
    bootstrap: str,
    records: int,
    value_size: int = 600,
    partitions: int = 6,
    *,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Raw kafka-python: produce ``records`` records (acks=all, idempotent) to a fresh topic,
    then consume them all with one consumer; the rate of a record produced *and* consumed.
    ``settings``: connect as they say, the topic under their prefix (a secured cluster's ACLs)."""
    from kernel.admin import delete_topics, ensure_topics, replication_factor
    from kernel.kafka_security import PLAINTEXT

    security = settings.kafka_security() if settings else PLAINTEXT
    name = f"vud.bench-reference-{uuid.uuid4().hex[:8]}"
    topic = settings.topic(name) if settings else name
    replicas = replication_factor(bootstrap, settings.topic_replication if settings else 0, security=security)
    ensure_topics(bootstrap, [(topic, partitions, replicas)], security=security)
    value = b"x" * value_size
    try:
        producer = bench_producer(bootstrap, security=security)
        started = time.monotonic()
        for i in range(records):
            producer.send(topic, key=f"k{i}".encode(), value=value)
        producer.flush(timeout=600)
        produce_seconds = time.monotonic() - started
        producer.close(timeout=10)
        consumer = topic_reader(bootstrap, topic, idle_ms=10_000, security=security)
        started = time.monotonic()
        consumed = 0
        for _record in consumer:
            consumed += 1
            if consumed >= records:
                break
        consume_seconds = time.monotonic() - started
        consumer.close()
    finally:
        delete_topics(bootstrap, [topic], security=security)
    total = produce_seconds + consume_seconds
    return {
        "records": records,
        "consumed": consumed,
        "value_bytes": value_size,
        "produce_seconds": round(produce_seconds, 2),
        "consume_seconds": round(consume_seconds, 2),
        "produce_per_s": round(records / produce_seconds, 1) if produce_seconds else None,
        "consume_per_s": round(consumed / consume_seconds, 1) if consume_seconds else None,
        "produced_and_consumed_per_s": round(records / total, 1) if total else None,
    }


def run_bench(spec: PipelineSpec, bootstrap: str | None = None) -> dict[str, Any]:
    """One run (see the module docstring); raises ClickException when the cloud does not end
    up holding the store, a worker dies or a phase does not settle within ``spec.timeout``."""

    from cloud.server import CloudServer
    from devtools.processes import PipelineWorkers
    from vudsync.commands.connect import run_connect
    from vudsync.topics import ensure_catalogue

    load_before = [round(x, 2) for x in os.getloadavg()]
    home = Path(tempfile.mkdtemp(prefix="vudsync-bench-pipeline-"))
    failed = True
    try:
        with bench_broker(bootstrap, home=home) as (broker, broker_pid):
            store_url = f"sqlite:///{home / 'directory.db'}"
            _say(
                f"seeding {spec.users:,} users, {spec.companies:,} companies, {spec.access_per_user} per user"
            )
            seeded = _seed(spec, store_url)
            with CloudServer(db_path=home / "cloud.db", extra_args=("--log-level", "warning")) as cloud:
                settings = bench_settings(home, broker, store_url, cloud)
                # a given cluster: as the settings connect (the home's secured one: a principal each)
                target = bench_target(broker, broker_pid)
                if target.cluster is not None and target.cluster.secure:
                    target.cluster.grant(settings)
                settings = settings.with_kafka_security(target.security("ops"))
                ensure_catalogue(settings, broker)
                run_connect(settings, broker, snapshot=False)
                workers = PipelineWorkers(
                    settings, broker, home / "logs", target.security, planners=spec.planners, sinks=spec.sinks
                )
                try:
                    _say(
                        f"starting the producer, {spec.planners} planner(s) and {spec.sinks} sink(s) "
                        f"(logs in {home / 'logs'})"
                    )
                    started = time.monotonic()  # the connect phase starts with the producer
                    workers.start()
                    pids = {
                        **workers.pids,
                        "cloud": cloud.pid,
                        **({"broker": broker_pid} if broker_pid else {}),
                    }
                    timeline = Timeline(started, pids)
                    connect = _connect(workers, timeline, spec, settings)
                    connect["cloud_requests"] = _cloud_requests(cloud.stats())
                    live = (
                        _live(workers, timeline, spec, settings, broker, store_url)
                        if spec.churn_seconds > 0
                        else None
                    )
                finally:
                    workers.stop()
            _say(f"reference: kafka-python produce + consume of {connect['kafka_records_moved']:,} records")
            ref = reference(broker, connect["kafka_records_moved"], settings=settings)
        failed = False
    finally:
        if failed:
            _say(f"failed: logs kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    pipeline_rate = connect["kafka_records_per_s"]
    reference_rate = ref["produced_and_consumed_per_s"]
    return {
        "benchmark": "pipeline",
        "command": "vudsync bench pipeline "
        + f"--users {spec.users} --companies {spec.companies} --access-per-user {spec.access_per_user} "
        + f"--churn-rate {spec.churn_rate} --churn-seconds {spec.churn_seconds}"
        + f" --planners {spec.planners} --sinks {spec.sinks}",
        "partitions": settings.topic_partitions,
        "cpu_count": os.cpu_count(),
        "broker": "started by the bench" if broker_pid else "given (--bootstrap or the settings)",
        "kafka": target.describe(),
        "store_data": seeded,
        "connect": connect,
        "live": live,
        "reference_kafka_python": ref,
        "pipeline_share_of_reference": round(pipeline_rate / reference_rate, 4)
        if pipeline_rate and reference_rate
        else None,
        "timeline": timeline.rows,
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
    }


_WORKERS = click.IntRange(1, 6)  # at most one per partition (VUDSYNC_TOPIC_PARTITIONS, 6)
_SPLIT = "{} processes, one consumer group: the partitions split between them"


@click.command("pipeline", epilog=f"\b\nExample:\n    {EXAMPLE}")
@click.option("--users", type=click.IntRange(1), default=10_000, show_default=True)
@click.option("--companies", type=click.IntRange(1), default=100, show_default=True)
@click.option("--access-per-user", type=click.FloatRange(1.0), default=3.0, show_default=True)
@click.option(
    "--churn-rate", type=click.FloatRange(0.1), default=200.0, show_default=True, help="live changes/s"
)
@click.option(
    "--churn-seconds", type=click.FloatRange(0), default=20.0, show_default=True, help="0: connect only"
)
@click.option(
    "--interval", type=click.FloatRange(0.5), default=5.0, show_default=True, help="seconds per timeline row"
)
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="give up a phase after (s)")
@click.option("--planners", type=_WORKERS, default=1, show_default=True, help=_SPLIT.format("planner"))
@click.option("--sinks", type=_WORKERS, default=1, show_default=True, help=_SPLIT.format("sink"))
@click.option(
    "--bootstrap", default=None, help="broker (default: VUDSYNC_KAFKA_BOOTSTRAP or a temporary one)"
)
@click.option("--json", "as_json", is_flag=True, help="print JSON (progress goes to stderr)")
def command(
    users: int,
    companies: int,
    access_per_user: float,
    churn_rate: float,
    churn_seconds: float,
    interval: float,
    timeout: float,
    planners: int,
    sinks: int,
    bootstrap: str | None,
    as_json: bool,
) -> None:
    """The whole pipeline as separate processes: initial sync (connect) of a seeded store until
    the cloud holds it, then live churn with end-to-end latency; raw kafka-python as the
    reference."""
    spec = PipelineSpec(
        users, companies, access_per_user, churn_rate, churn_seconds, interval, timeout, planners, sinks
    )
    result = run_bench(spec, bootstrap)
    if as_json:
        emit(result, as_json)
        return
    from devtools.bench.latency import BREAKDOWN, table

    live = result["live"]
    shown = {k: v for k, v in live.items() if k not in BREAKDOWN} if live else live
    emit({**{k: v for k, v in result.items() if k != "timeline"}, "live": shown}, as_json)
    if live:  # per kind, ungated and gated: a table rather than nested dicts
        click.echo("\n".join(table(live)))
