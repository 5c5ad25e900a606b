"""Benchmarks behind ``vudsync bench``: one module per area, each exposing ``command``.

Speed and memory targets live here and in docs/benchmarks.md, never in timed test assertions.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel.kafka_security import PLAINTEXT, KafkaSecurity

if TYPE_CHECKING:
    from cloud.server import CloudServer
    from devtools.broker.cluster import KafkaTarget
    from kernel.settings import Settings

AREAS = (
    "capture",
    "planner",
    "sink",
    "journal",
    "faust",
    "pipeline",
    "writeback",
    "verify",
    "directory_sink",
)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    try:
        mem_kb = int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
    except (OSError, StopIteration):
        mem_kb = 0
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "commit": commit,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def cpu_seconds_from_stat(stat: str, clock_ticks: int) -> float:
    """User + system CPU seconds from the text of ``/proc/<pid>/stat``.

    The second field (the command name) is in parentheses and may hold spaces or ``)``: the
    fields are counted from the *last* ``)``. ``utime`` and ``stime`` are fields 14 and 15 of
    proc(5), the 12th and 13th after the name. Raises ValueError on a malformed line.
    """
    _, sep, tail = stat.rpartition(")")
    fields = tail.split()
    if not sep or len(fields) < 13:
        raise ValueError(f"not a /proc/<pid>/stat line: {stat[:80]!r}")
    return (int(fields[11]) + int(fields[12])) / clock_ticks


def process_cpu_seconds(pid: int | str = "self") -> float | None:
    """User + system CPU seconds process ``pid`` has used so far (Linux ``/proc``); None when
    it is gone or there is no ``/proc``."""
    try:
        return cpu_seconds_from_stat(Path(f"/proc/{pid}/stat").read_text(), os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError):
        return None


@contextmanager
def bench_broker(bootstrap: str | None = None, home: Path | None = None) -> Iterator[tuple[str, int | None]]:
    """``(bootstrap, pid if the bench started the broker)``: ``bootstrap`` when given, else the
    settings' broker, else a local broker of the bench's own, stopped by its pid at the end.
    That one lives in ``home``/kafka-home when a home is given (the caller keeps or removes
    it), else in a temporary folder removed afterwards."""
    if bootstrap:
        yield bootstrap, None
        return
    from devtools.broker import LocalKafkaBroker
    from kernel.settings import load_settings

    configured = load_settings().kafka_bootstrap
    if configured:
        yield configured, None
        return
    broker_home = home / "kafka-home" if home else Path(tempfile.mkdtemp(prefix="vudsync-bench-kafka-"))
    try:
        broker = LocalKafkaBroker.from_settings(
            load_settings(home=broker_home, kafka_port=0), bind_to_parent=True
        )
        status = broker.up(timeout=180)
        try:
            yield status.bootstrap or "", status.pid
        finally:
            broker.down()
    finally:
        if home is None:
            shutil.rmtree(broker_home, ignore_errors=True)


def bench_settings(home: Path, broker: str, store_url: str, cloud: CloudServer) -> Settings:
    """A bench run's settings: its own home, topics (a fresh prefix), store and cloud, with the
    run's generated secrets."""
    import uuid

    from pydantic import SecretStr

    from devtools.secrets import with_run_secrets
    from kernel.settings import Settings

    return with_run_secrets(
        Settings(
            home=home,
            kafka_bootstrap=broker,
            topic_prefix=f"bench-{uuid.uuid4().hex[:8]}-",
            store_url=store_url,
            cloud_url=cloud.url,
            cloud_client_id=cloud.client_id,
            cloud_client_secret=SecretStr(cloud.client_secret),
        )
    )


def bench_target(bootstrap: str, own_pid: int | None) -> KafkaTarget:
    """Where a bench's components connect: its own broker (``own_pid``) PLAINTEXT; a given one
    as the settings say (:meth:`KafkaTarget.from_settings`: the home's secured cluster gives each
    component its principal)."""
    from devtools.broker.cluster import KafkaTarget
    from kernel.settings import load_settings

    return KafkaTarget(bootstrap) if own_pid else KafkaTarget.from_settings(load_settings(), bootstrap)


def emit(result: dict[str, Any], as_json: bool) -> None:
    """Print one benchmark result: JSON for scripts, else an aligned table."""
    import click

    result = {**result, "machine": machine()}
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    for key, value in result.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k, v in value.items():
                click.echo(f"  {k:<28} {v}")
        else:
            click.echo(f"{key:<30} {value}")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, nearest rank; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_figures(latencies: list[float]) -> dict[str, Any]:
    """p50, p99, max and mean of latencies in seconds, as milliseconds."""
    return {
        "latency_p50_ms": round(1000 * percentile(latencies, 0.50), 1),
        "latency_p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "latency_max_ms": round(1000 * max(latencies, default=float("nan")), 1),
        "latency_mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
    }


def bench_producer(bootstrap: str, *, security: KafkaSecurity = PLAINTEXT) -> Any:
    """A kafka-python producer of a bench's input: acks=all, idempotent, batched (20 ms linger,
    512 KiB batches). The caller flushes and closes it."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        **security.for_kafka_python(),
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        enable_idempotence=True,
    )


def topic_reader(
    bootstrap: str, topic: str, idle_ms: int = 1500, *, security: KafkaSecurity = PLAINTEXT
) -> Any:
    """A kafka-python consumer of ``topic`` from its beginning, in no group, that stops
    iterating after ``idle_ms`` without a record. The caller closes it."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        **security.for_kafka_python(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=idle_ms,
    )


def applied_latencies(
    bootstrap: str, topic: str, *, security: KafkaSecurity = PLAINTEXT
) -> list[tuple[float, float]]:
    """(committed in the store as a Unix time, end-to-end seconds from that commit to applied in
    the cloud) of every applied operation on the results topic ``topic`` (``vud.cloud.results``)."""
    from devtools.bench.latency import applied_operations

    return [(a.committed, a.seconds) for a in applied_operations(bootstrap, topic, security=security)]
