"""``vudsync bench capture``: snapshot throughput and streaming latency of change capture.

1. A store (SQLite file, or a throwaway PostgreSQL server with durable settings, or
   ``--store-url``) is seeded with ``--users``/``--companies``/``--access-rows`` (not timed).
2. **Snapshot**: every entity is emitted to fresh topics; events/s = records acknowledged by
   the broker / wall time of ``ChangeCapture.snapshot``.
3. **Streaming**, for each ``--tail-rate``: ``vudsync seed churn`` runs as a separate process
   at that many changes/s for ``--tail-seconds``, while capture streams in this process.
   Capture latency of a change = broker ack of its batch minus the commit time of its
   transaction (PostgreSQL with ``track_commit_timestamp``, as the throwaway server runs),
   else minus the change's ``committed_at`` (trigger time, a little before the commit: SQLite).

Targets (issue 3): snapshot ≥ 20,000 events/s; streaming p99 ≤ 100 ms at 1,000 changes/s.
"""

from __future__ import annotations

import cProfile
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
from prometheus_client import CollectorRegistry

from vudsync.bench import emit

KEY = b"bench-fingerprint-key"
# a production-like server, plus commit timestamps so that latency is measured from the commit
DURABLE = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "track_commit_timestamp": "on",
}


@contextmanager
def _broker(bootstrap: str | None, stack: ExitStack) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    from vudsync.broker import LocalKafkaBroker
    from vudsync.settings import load_settings

    configured = load_settings().kafka_bootstrap
    if configured:
        yield configured
        return
    home = Path(tempfile.mkdtemp(prefix="vudsync-bench-kafka-"))
    stack.callback(shutil.rmtree, home, True)
    broker = LocalKafkaBroker.from_settings(load_settings(home=home, kafka_port=0), bind_to_parent=True)
    status = broker.up(timeout=180)
    try:
        yield status.bootstrap or ""
    finally:
        broker.down()


def _store(kind: str, url: str | None, stack: ExitStack) -> str:
    if url:
        return url
    root = Path(tempfile.mkdtemp(prefix=f"vudsync-bench-{kind}-"))
    stack.callback(shutil.rmtree, root, True)
    if kind == "sqlite":
        return f"sqlite:///{root / 'directory.db'}"
    from vudsync.pgserver import LocalPostgresServer

    server = LocalPostgresServer(root, options=DURABLE).start()
    stack.callback(server.stop)
    return server.create_database("vud")


def _seed(url: str, users: int, companies: int, access_rows: int) -> dict[str, Any]:
    from vudsync.seed.data import sample_directory, write_sample
    from vudsync.seed.writer import open_writer

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
    """Wraps a publisher: counts published records and stamps each flush's return."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.published = 0
        self.acked_at: list[float] = []

    def publish(self, topic: str, key: str, value: bytes | None, headers: Any = ()) -> None:
        self.published += 1
        self.inner.publish(topic, key, value, headers)

    def flush(self, timeout: float = 60.0) -> int:
        acked = int(self.inner.flush(timeout))
        self.acked_at.append(time.time())
        return acked

    def close(self, timeout: float = 10.0) -> None:
        self.inner.close(timeout)


def _publisher(client: str, bootstrap: str) -> Any:
    if client == "confluent":
        from producers.confluent_publisher import ConfluentRecordPublisher

        return ConfluentRecordPublisher(bootstrap, client_id="vudsync-bench")
    from producers.kafka_publisher import KafkaRecordPublisher

    return KafkaRecordPublisher(bootstrap, client_id="vudsync-bench")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _tail(capture: Any, publisher: _Counting, url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Churn at ``rate`` in a child process while capture streams here; latency per change row."""
    pending: list[tuple[int, float]] = []
    acked: list[tuple[int, float, float]] = []  # (seq, change time, ack time)
    rows_seen = [0]
    read_changes = capture.log.read_changes
    flush = publisher.flush

    def recording_read(after_seq: int, limit: int) -> list[Any]:
        rows: list[Any] = read_changes(after_seq, limit)
        pending.extend((r.seq, r.committed_at) for r in rows)
        rows_seen[0] += len(rows)
        return rows

    def stamping_flush(timeout: float = 60.0) -> int:
        count = flush(timeout)
        now = time.time()
        acked.extend((seq, changed, now) for seq, changed in pending)
        pending.clear()
        return count

    capture.log.read_changes = recording_read
    publisher.flush = stamping_flush  # type: ignore[method-assign]
    published_before = publisher.published
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            capture.run(stop)
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=run, name="capture", daemon=True)
    runner.start()
    started = time.monotonic()
    churn = subprocess.run(
        [sys.executable, "-m", "vudsync", "seed", "churn", "--rate", str(rate), "--duration", str(seconds),
         "--store", url, "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if churn.returncode != 0:
        stop.set()
        raise click.ClickException(f"churn failed: {churn.stderr[-2000:]}")
    report = json.loads(churn.stdout.strip().splitlines()[-1])
    end = _end_seq(url)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not errors:
        checkpoint = capture.log.load_checkpoint(capture.config.name)
        if checkpoint and checkpoint[1] >= end:
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    stop.set()
    runner.join(timeout=30)
    capture.log.read_changes = read_changes
    publisher.flush = flush  # type: ignore[method-assign]
    if errors:
        raise errors[0]
    latencies = [ack - changed for _seq, changed, ack in acked]
    commits = _commit_times(url, [seq for seq, _c, _a in acked])
    result: dict[str, Any] = {
        "target_changes_per_s": rate,
        "written_changes_per_s": report["changes_per_second"],
        "write_transactions": report["transactions"],
        "change_log_rows_captured": rows_seen[0],
        "events_emitted": publisher.published - published_before,
        "capture_rows_per_s": round(rows_seen[0] / elapsed, 1),
        "latency_basis": "change (trigger time) → ack",
        **_latency_figures(latencies),
    }
    if commits:
        # the store knows each transaction's commit time: the latency the issue asks for
        result["latency_basis"] = "commit (pg_xact_commit_timestamp) → ack"
        result["change_to_ack"] = _latency_figures(latencies)
        result.update(_latency_figures([ack - commits[seq] for seq, _c, ack in acked if seq in commits]))
    return result


def _latency_figures(latencies: list[float]) -> dict[str, Any]:
    return {
        "latency_p50_ms": round(1000 * _percentile(latencies, 0.50), 1),
        "latency_p99_ms": round(1000 * _percentile(latencies, 0.99), 1),
        "latency_max_ms": round(1000 * max(latencies, default=float("nan")), 1),
        "latency_mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
    }


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
    from vudsync.seed.writer import open_writer

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
@click.option("--tail-seconds", type=float, default=20.0, show_default=True)
@click.option("--batch-size", type=int, default=2000, show_default=True)
@click.option(
    "--client", type=click.Choice(["confluent", "kafka-python"]), default="confluent", show_default=True
)
@click.option(
    "--bootstrap", default=None, help="broker to use (default: VUDSYNC_KAFKA_BOOTSTRAP or a temporary one)"
)
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
    batch_size: int,
    client: str,
    bootstrap: str | None,
    profile: Path | None,
    as_json: bool,
) -> None:
    """Snapshot events/s and streaming latency (commit → broker ack) of change capture."""
    from producers.capture import CaptureConfig, ChangeCapture
    from producers.metrics import ProducerMetrics
    from producers.service import open_change_log
    from vudsync.settings import Settings
    from vudsync.topics import ensure_catalogue

    with ExitStack() as stack:
        broker = stack.enter_context(_broker(bootstrap, stack))
        url = _store(store_kind, store_url, stack)
        seeded = _seed(url, users, companies, access_rows)
        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        ensure_catalogue(Settings(topic_prefix=prefix, topic_partitions=6), broker)
        publisher = _Counting(_publisher(client, broker))
        stack.callback(publisher.close)
        change_log = open_change_log(url)
        stack.callback(change_log.close)
        capture = ChangeCapture(
            change_log,
            publisher,
            ProducerMetrics(CollectorRegistry()),
            CaptureConfig(topic_prefix=prefix, batch_size=batch_size, fingerprint_key=KEY),
        )
        profiler = cProfile.Profile() if profile else None
        started = time.monotonic()
        if profiler:
            profiler.enable()
        capture.snapshot()
        if profiler:
            profiler.disable()
            profiler.dump_stats(str(profile))
        seconds = time.monotonic() - started
        snapshot = {
            "events": publisher.published,
            "seconds": round(seconds, 2),
            "events_per_s": round(publisher.published / seconds, 1),
            "batch_size": batch_size,
        }
        tails = [_tail(capture, publisher, url, rate, tail_seconds) for rate in tail_rate]
    result = {
        "benchmark": "capture",
        "store": store_kind,
        "client": client,
        "store_data": seeded,
        "snapshot": snapshot,
        **{f"streaming_{int(t['target_changes_per_s'])}_per_s": t for t in tails},
    }
    emit(result, as_json)
