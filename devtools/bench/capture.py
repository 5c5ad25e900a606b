"""``vudsync bench capture``: snapshot throughput and streaming latency of change capture.

1. A store (SQLite file, or a throwaway PostgreSQL server with durable settings, or
   ``--store-url``) is seeded with ``--users``/``--companies``/``--access-rows`` (not timed).
2. **Snapshot**: every entity is emitted to fresh topics; events/s = records acknowledged by
   the broker / wall time of ``ChangeCapture.snapshot``.
3. **Streaming**, for each ``--tail-rate``: ``vudsync seed churn`` runs as a separate process
   at that many changes/s for ``--tail-seconds``, while capture streams in this process.
   Capture latency of a change = the return of the flush that acknowledged its batch
   (``ChangeCapture.on_acked``, called with the batch's last seq) minus the commit time of
   its transaction (PostgreSQL with ``track_commit_timestamp``, as the throwaway server runs),
   else minus the change's ``committed_at`` (trigger time, a little before the commit:
   SQLite). The hook names the batch, so rows of batch N+1, read while batch N waits for its
   acks (pipelined streaming), are not stamped with N's ack.
4. **Backlog** (``--backlog`` changes): written while capture is stopped, then drained. The
   events/s and CPU per event of the drain are what streaming can sustain whatever the writer
   manages (``seed churn`` itself reaches ~2,000-3,000 changes/s against a durable
   PostgreSQL on this machine, and SQLite transactions bunch up under load).
5. With a broker the bench starts itself, ``--warm-up`` throwaway records go through it first:
   a fresh JVM broker costs several times the CPU per record until its JIT has compiled the
   produce path, which is no property of capture.

The machine is shared: besides wall-clock rates, every phase reports the CPU time this process
spent (``time.process_time()``: all its threads, librdkafka's included) per event, the broker's
CPU per event when its pid is known (the bench's own broker, or ``--broker-pid``), and the load
average before and after.

Targets (issue 3): snapshot ≥ 20,000 events/s; streaming p99 ≤ 100 ms at 1,000 changes/s.
"""

from __future__ import annotations

import cProfile
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
from prometheus_client import CollectorRegistry

from devtools.bench import bench_broker, emit, latency_figures, process_cpu_seconds

KEY = b"bench-fingerprint-key"
# a production-like server, plus commit timestamps so that latency is measured from the commit
DURABLE = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "track_commit_timestamp": "on",
}


def _process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) another process has used so far, from /proc."""
    return None if pid is None else process_cpu_seconds(pid)


class _CaptureThread:
    """``capture.run(stop)`` started in a daemon thread; what it raised is kept in ``errors``
    for the bench to raise once it has stopped it."""

    def __init__(self, capture: Any) -> None:
        self.capture = capture
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.capture.run(self.stop)
        except BaseException as exc:
            self.errors.append(exc)

    def halt(self) -> None:
        self.stop.set()
        self._thread.join(timeout=30)


class _Meter:
    """Wall time, this process's CPU time, another process's CPU time and load averages of one
    phase: the figures that stay comparable on a machine other people's runs load."""

    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid
        self.load_before = os.getloadavg()
        self.wall = time.monotonic()
        self.cpu = time.process_time()
        self.broker_cpu = _process_cpu(broker_pid)

    def figures(self, events: int) -> dict[str, Any]:
        wall = time.monotonic() - self.wall
        cpu = time.process_time() - self.cpu
        out: dict[str, Any] = {
            "wall_seconds": round(wall, 2),
            "cpu_seconds": round(cpu, 2),
            "cpu_us_per_event": round(1e6 * cpu / events, 1) if events else None,
            "cpu_bound_events_per_s": round(events / cpu) if cpu else None,
            "load_average_before": [round(x, 2) for x in self.load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
        broker_after = _process_cpu(self.broker_pid)
        if self.broker_cpu is not None and broker_after is not None:
            broker = broker_after - self.broker_cpu
            out["broker_cpu_seconds"] = round(broker, 2)
            out["broker_cpu_us_per_event"] = round(1e6 * broker / events, 1) if events else None
        return out


def _store(kind: str, url: str | None, stack: ExitStack) -> str:
    if url:
        return url
    root = Path(tempfile.mkdtemp(prefix=f"vudsync-bench-{kind}-"))
    stack.callback(shutil.rmtree, root, True)
    if kind == "sqlite":
        return f"sqlite:///{root / 'directory.db'}"
    from devtools.pgserver import LocalPostgresServer

    server = LocalPostgresServer(root, options=DURABLE).start()
    stack.callback(server.stop)
    return server.create_database("vud")


def _seed(url: str, users: int, companies: int, access_rows: int) -> dict[str, Any]:
    from devtools.seed.data import sample_directory, write_sample
    from devtools.seed.writer import open_writer

    writer = open_writer(url)
    try:
        existing = writer.conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]
        if existing:
            return {"reused_store_users": existing}
        started = time.monotonic()
        sample = sample_directory(
            users, companies, seed=7, access_per_user=max(1.0, access_rows / max(users, 1))
        )
        write_sample(writer, sample, batch=10_000)
        return {
            "users": len(sample.users),
            "companies": len(sample.companies),
            "access_rows": len(sample.access),
            "seed_seconds": round(time.monotonic() - started, 1),
        }
    finally:
        writer.close()


class _Counting:
    """Wraps a publisher: counts published records."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.published = 0

    def publish(self, topic: str, key: str, value: bytes | None, headers: Any = ()) -> None:
        self.published += 1
        self.inner.publish(topic, key, value, headers)

    def flush(self, timeout: float = 60.0) -> int:
        return int(self.inner.flush(timeout))

    def close(self, timeout: float = 10.0) -> None:
        self.inner.close(timeout)


def _publisher(client: str, bootstrap: str, overrides: dict[str, Any]) -> Any:
    if client == "confluent":
        from kernel.publishing.confluent import ConfluentRecordPublisher

        return ConfluentRecordPublisher(bootstrap, client_id="vudsync-bench", **overrides)
    from kernel.publishing.kafka_python import KafkaRecordPublisher

    return KafkaRecordPublisher(bootstrap, client_id="vudsync-bench")


def _drain(
    capture: Any, publisher: _Counting, url: str, changes: int, broker_pid: int | None
) -> dict[str, Any]:
    """Sustained streaming throughput: ``changes`` are written while capture is stopped (a
    backlog, as after an outage), then capture streams until it has caught up. Events/s and
    CPU per event here are what capture can sustain, independent of how fast the writer is."""
    churn = subprocess.run(
        [sys.executable, "-m", "vudsync", "seed", "churn", "--rate", "5000", "--duration",
         str(changes / 5000), "--store", url, "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if churn.returncode != 0:
        raise click.ClickException(f"churn failed: {churn.stderr[-2000:]}")
    checkpoint = capture.log.load_checkpoint(capture.config.name)
    start, end = (checkpoint[1] if checkpoint else 0), _end_seq(url)
    acked_up_to = [start]
    hooked = hasattr(capture, "on_acked")  # else older capture: its checkpoint follows each ack
    if hooked:
        capture.on_acked = lambda seq: acked_up_to.__setitem__(0, seq)
    published_before = publisher.published
    meter = _Meter(broker_pid)
    runner = _CaptureThread(capture)
    deadline = time.monotonic() + 600
    while acked_up_to[0] < end and time.monotonic() < deadline and not runner.errors:
        time.sleep(0.01)
        if not hooked:
            checkpoint = capture.log.load_checkpoint(capture.config.name)
            acked_up_to[0] = checkpoint[1] if checkpoint else start
    events = publisher.published - published_before
    figures = meter.figures(events)
    runner.halt()
    if hooked:
        capture.on_acked = None
    if runner.errors:
        raise runner.errors[0]
    seconds = figures["wall_seconds"]
    return {
        "change_log_rows": end - start,
        "events_emitted": events,
        "rows_per_s": round((end - start) / seconds, 1) if seconds else None,
        "events_per_s": round(events / seconds, 1) if seconds else None,
        "batch_size": capture.config.batch_size,
        "capture_process": figures,
    }


def _tail(
    capture: Any, publisher: _Counting, url: str, rate: float, seconds: float, broker_pid: int | None
) -> dict[str, Any]:
    """Churn at ``rate`` in a child process while capture streams here; latency per change row."""
    pending: list[tuple[int, float]] = []  # (seq, change time) read, not yet checkpointed
    acked: list[tuple[int, float, float]] = []  # (seq, change time, ack time)
    rows_seen = [0]
    read_changes = capture.log.read_changes

    def recording_read(after_seq: int, limit: int) -> list[Any]:
        rows: list[Any] = read_changes(after_seq, limit)
        pending.extend((r.seq, r.committed_at) for r in rows)
        rows_seen[0] += len(rows)
        return rows

    acked_up_to = [0]

    def stamp(seq: int) -> None:
        # called right after a successful flush: every row up to seq is acknowledged now
        acked_up_to[0] = max(acked_up_to[0], seq)
        now = time.time()
        done = [p for p in pending if p[0] <= seq]
        pending[:] = [p for p in pending if p[0] > seq]
        acked.extend((s, changed, now) for s, changed in done)

    capture.log.read_changes = recording_read
    hooked = hasattr(capture, "on_acked")
    flush = publisher.flush
    if hooked:
        capture.on_acked = stamp
    else:  # older capture (before/after figures): one batch at a time, its flush is its ack

        def stamping_flush(timeout: float = 60.0) -> int:
            count = flush(timeout)
            stamp(max((p[0] for p in pending), default=0))
            return count

        publisher.flush = stamping_flush  # type: ignore[method-assign]
    published_before = publisher.published
    fast_before, slow_before = _encoded(capture)
    meter = _Meter(broker_pid)
    runner = _CaptureThread(capture)
    started = time.monotonic()
    churn = subprocess.run(
        [sys.executable, "-m", "vudsync", "seed", "churn", "--rate", str(rate), "--duration", str(seconds),
         "--store", url, "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if churn.returncode != 0:
        runner.stop.set()
        raise click.ClickException(f"churn failed: {churn.stderr[-2000:]}")
    report = json.loads(churn.stdout.strip().splitlines()[-1])
    writer_done = time.monotonic()
    end = _end_seq(url)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not runner.errors:
        if hooked:  # the checkpoint trails the acks by up to checkpoint_interval
            if acked_up_to[0] >= end:
                break
        else:
            checkpoint = capture.log.load_checkpoint(capture.config.name)
            if checkpoint and checkpoint[1] >= end:
                break
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    catch_up = time.monotonic() - writer_done
    runner.halt()
    capture.log.read_changes = read_changes
    if hooked:
        capture.on_acked = None
    else:
        publisher.flush = flush  # type: ignore[method-assign]
    if runner.errors:
        raise runner.errors[0]
    events = publisher.published - published_before
    latencies = [ack - changed for _seq, changed, ack in acked]
    commits = _commit_times(url, [seq for seq, _c, _a in acked])
    result: dict[str, Any] = {
        "target_changes_per_s": rate,
        "written_changes_per_s": report["changes_per_second"],
        "write_transactions": report["transactions"],
        "change_log_rows_captured": rows_seen[0],
        "events_emitted": events,
        "capture_rows_per_s": round(rows_seen[0] / elapsed, 1),
        "caught_up_seconds_after_writer_stopped": round(catch_up, 2),
        "encoded_fast": _encoded(capture)[0] - fast_before,
        "encoded_pydantic": _encoded(capture)[1] - slow_before,
        "capture_process": meter.figures(events),
        "latency_basis": "change (trigger time) → broker ack",
        **latency_figures(latencies),
    }
    if commits:
        # the store knows each transaction's commit time: the latency the issue asks for
        result["latency_basis"] = "commit (pg_xact_commit_timestamp) → broker ack"
        result["change_to_ack"] = latency_figures(latencies)
        result.update(latency_figures([ack - commits[seq] for seq, _c, ack in acked if seq in commits]))
    return result


def _warm_up(client: str, bootstrap: str, topic: str, records: int) -> dict[str, Any]:
    """Send ``records`` throwaway records through a fresh broker before measuring: a JVM
    broker interprets its produce path until the JIT has compiled it, which costs a fresh
    broker several times the CPU per record of a running one (see docs/benchmarks.md)."""
    from kernel.admin import ensure_topics

    ensure_topics(bootstrap, [(topic, 6)])
    publisher = _publisher(client, bootstrap, {})
    started = time.monotonic()
    value = b"x" * 600  # about the size of a user event
    for i in range(records):
        publisher.publish(topic, f"w{i}", value)
    publisher.flush()
    publisher.close()
    return {"records": records, "seconds": round(time.monotonic() - started, 2)}


def _encoded(capture: Any) -> tuple[int, int]:
    """Events encoded by the fast path and by pydantic so far (0, 0 for a capture without an
    encoder: lets this bench measure older code for before/after figures)."""
    encoder = getattr(capture, "encoder", None)
    return (encoder.fast_encoded, encoder.slow_encoded) if encoder else (0, 0)


def _commit_times(url: str, seqs: list[int]) -> dict[int, float]:
    """Commit time of each change row's transaction, where the store records it (PostgreSQL
    with ``track_commit_timestamp``, as the throwaway bench server runs); else empty."""
    if not url.startswith(("postgresql://", "postgres://")) or not seqs:
        return {}
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW track_commit_timestamp").fetchone()
        if not row or row[0] != "on":
            return {}
        out: dict[int, float] = {}
        for start in range(0, len(seqs), 10_000):
            for seq, committed in conn.execute(
                "SELECT seq, extract(epoch FROM pg_xact_commit_timestamp(xid::text::xid))::float8 "
                "FROM change_log WHERE seq = ANY(%s)",
                (seqs[start : start + 10_000],),
            ):
                if committed is not None:
                    out[int(seq)] = float(committed)
        return out


def _end_seq(url: str) -> int:
    from devtools.seed.writer import open_writer

    writer = open_writer(url)
    try:
        return int(writer.change_log_position())
    finally:
        writer.close()


@click.command(name="capture")
@click.option(
    "--store", "store_kind", type=click.Choice(["sqlite", "postgresql"]), default="sqlite", show_default=True
)
@click.option("--store-url", default=None, help="an existing store (seeded only if it has no users)")
@click.option("--users", type=int, default=100_000, show_default=True)
@click.option("--companies", type=int, default=1_000, show_default=True)
@click.option("--access-rows", type=int, default=300_000, show_default=True)
@click.option(
    "--tail-rate",
    type=float,
    multiple=True,
    default=(1000.0,),
    show_default=True,
    help="changes/s; repeatable",
)
@click.option("--tail-seconds", type=float, default=20.0, show_default=True, help="0: snapshot only")
@click.option(
    "--backlog",
    type=int,
    default=50_000,
    show_default=True,
    help="changes written while capture is stopped, then drained: sustained throughput (0: skip)",
)
@click.option("--batch-size", type=int, default=2000, show_default=True)
@click.option(
    "--client", type=click.Choice(["confluent", "kafka-python"]), default="confluent", show_default=True
)
@click.option(
    "--bootstrap", default=None, help="broker to use (default: VUDSYNC_KAFKA_BOOTSTRAP or a temporary one)"
)
@click.option(
    "--producer-config",
    multiple=True,
    metavar="KEY=VALUE",
    help="librdkafka setting over the publisher's defaults (confluent client); repeatable",
)
@click.option(
    "--warm-up",
    type=int,
    default=100_000,
    show_default=True,
    help="throwaway records sent through a broker this bench started, before measuring",
)
@click.option("--broker-pid", type=int, default=None, help="pid of the --bootstrap broker, for its CPU time")
@click.option(
    "--profile", type=click.Path(dir_okay=False, path_type=Path), default=None, help="cProfile the snapshot"
)
@click.option("--json", "as_json", is_flag=True)
def command(
    store_kind: str,
    store_url: str | None,
    users: int,
    companies: int,
    access_rows: int,
    tail_rate: tuple[float, ...],
    tail_seconds: float,
    backlog: int,
    batch_size: int,
    client: str,
    bootstrap: str | None,
    producer_config: tuple[str, ...],
    warm_up: int,
    broker_pid: int | None,
    profile: Path | None,
    as_json: bool,
) -> None:
    """Snapshot events/s and streaming latency (commit → broker ack) of change capture."""
    from kernel.settings import Settings
    from producers.capture import CaptureConfig, ChangeCapture
    from producers.metrics import ProducerMetrics
    from producers.service import open_change_log
    from vudsync.topics import ensure_catalogue

    with ExitStack() as stack:
        broker, own_broker_pid = stack.enter_context(bench_broker(bootstrap))
        broker_pid = broker_pid or own_broker_pid
        url = _store(store_kind, store_url, stack)
        seeded = _seed(url, users, companies, access_rows)
        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        topics = ensure_catalogue(Settings(topic_prefix=prefix, topic_partitions=6), broker)
        warmed: dict[str, Any] | None = None
        if own_broker_pid is None:  # someone else's broker: leave it as it was
            from kernel.admin import delete_topics

            stack.callback(delete_topics, broker, topics)
        elif warm_up > 0:
            warmed = _warm_up(client, broker, prefix + "warm-up", warm_up)
        overrides = dict(item.split("=", 1) for item in producer_config)
        publisher = _Counting(_publisher(client, broker, overrides))
        stack.callback(publisher.close)
        snapshot_publishers: list[_Counting] = []

        def snapshot_publisher() -> _Counting:
            # as the producer service does (producers.service.build_capture): a bulk-tuned
            # producer for the snapshot only; --producer-config applies to both
            from kernel.publishing.confluent import SNAPSHOT_OVERRIDES

            bulk = _publisher(client, broker, {**SNAPSHOT_OVERRIDES, **overrides})
            snapshot_publishers.append(_Counting(bulk))
            return snapshot_publishers[-1]

        change_log = open_change_log(url)
        stack.callback(change_log.close)
        capture = ChangeCapture(
            change_log,
            publisher,
            ProducerMetrics(CollectorRegistry()),
            CaptureConfig(topic_prefix=prefix, batch_size=batch_size, fingerprint_key=KEY),
            snapshot_publisher=snapshot_publisher if client == "confluent" else None,
        )
        profiler = cProfile.Profile() if profile else None
        meter = _Meter(broker_pid)
        started = time.monotonic()
        if profiler:
            profiler.enable()
        capture.snapshot()
        if profiler:
            profiler.disable()
            profiler.dump_stats(str(profile))
        seconds = time.monotonic() - started
        fast, slow = _encoded(capture)
        published = publisher.published + sum(p.published for p in snapshot_publishers)
        snapshot = {
            "events": published,
            "seconds": round(seconds, 2),
            "events_per_s": round(published / seconds, 1),
            "batch_size": batch_size,
            "encoded_fast": fast,
            "encoded_pydantic": slow,
            "capture_process": meter.figures(published),
        }
        tails = (
            [_tail(capture, publisher, url, rate, tail_seconds, broker_pid) for rate in tail_rate]
            if tail_seconds > 0
            else []
        )
        drained = _drain(capture, publisher, url, backlog, broker_pid) if backlog > 0 else None
    result = {
        "benchmark": "capture",
        "store": store_kind,
        "client": client,
        "producer_config": dict(item.split("=", 1) for item in producer_config),
        "broker": "started by the bench" if own_broker_pid else "given (--bootstrap or the settings)",
        "broker_warm_up": warmed,
        "store_data": seeded,
        "snapshot": snapshot,
        **{f"streaming_{int(t['target_changes_per_s'])}_per_s": t for t in tails},
        "streaming_backlog": drained,
    }
    emit(result, as_json)
