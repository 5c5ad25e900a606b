"""``vudsync bench faust``: the floor of a Faust worker — what Faust + aiokafka cost per event
with a *trivial* agent, so that the planner worker's figure can be read against it.

The agent has the planner's I/O shape and does nothing else: per input record (bytes, ~500-byte
JSON values, never decoded) it sends ``--sends`` N records with ``await topic.send(...)`` (the
planner's path, ``processors/handlers.py``; N = 3 ≈ its 2.2 operations + results) and, with
``--table on``, writes the record to a Faust table (memory store: one changelog record per
write). With ``--take K`` (K > 1) it iterates ``stream.take_events(K, within=0.05)`` — the
``take()`` machinery, yielding events so that keys and partitions are at hand — and handles a
batch at a time: still one send per output record, but one table write per key per batch.

The app is built by :func:`processors.app.create_app` with the planner's settings (linger,
batch sizes, acks, commit cadence, buffer, memory store), and the worker is started the way
``vudsync run planner`` starts it (no spinner): the comparison with the planner is fair.

Per variant: fresh topics (``--partitions``, default 3); the input records are produced first,
then one worker is started (a child ``vudsync bench faust --worker-spec ...``). The worker
measures itself: at its first input record and once the last record is handled *and* its
producer flushed (every output and changelog record acknowledged), it reads its own
user + system CPU time from ``/proc/<pid>/stat`` and the clock — so start-up, group join and
the idle tail are not counted. The bench then checks the counts on the broker (outputs,
changelog records) and the broker timestamps of the first and last output.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from devtools.bench import bench_broker, bench_producer, emit, process_cpu_seconds

INPUT = "bench.floor.in"
OUTPUT = "bench.floor.out"
TAKE_WITHIN = 0.05  # seconds: take()'s timeout, as in the task


def _own_cpu_seconds() -> float:
    return process_cpu_seconds() or 0.0


# -- the input --------------------------------------------------------------------------------


def input_records(n: int, keys: int, seed: int = 5) -> list[tuple[bytes, bytes]]:
    """``n`` records of ~500-byte JSON, keys drawn from ``keys`` entities (repeats: updates)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = f"u{rng.randrange(keys):07d}"
        value = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "entity_id": key,
            "version": i,
            "op": "u",
            "entity": "user",
            "state": {
                "id": key,
                "username": f"bruker{i}",
                "email": f"bruker{i}@fjord.no",
                "first_name": "Kari",
                "last_name": "Nordmann",
                "language": "nb",
                "active": True,
                "access": [
                    {
                        "company_id": f"c{rng.randrange(500):04d}",
                        "services": {"business": {"roles": ["Regnskap", "Lønn"], "layout_groups": []}},
                    }
                ],
                "note": "x" * 120,
            },
        }
        out.append((key.encode(), json.dumps(value).encode()))
    return out


# -- the worker (child process) ---------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    sends: int
    table: bool
    take: int

    @property
    def name(self) -> str:
        return f"sends={self.sends} table={'on' if self.table else 'off'} take={self.take}"


@dataclass(frozen=True)
class WorkerSpec:
    variant: Variant
    bootstrap: str
    input: str
    output: str
    expected: int
    result: str


class _Meter:
    """The worker's own measure: from its first input record to its last output acknowledged."""

    def __init__(self, expected: int, result: Path) -> None:
        self.expected = expected
        self.result = result
        self.count = 0
        self.table_writes = 0
        self.batches = 0
        self._cpu0 = self._t0 = 0.0
        self._done = False

    def first(self) -> None:
        if self.count == 0 and not self._t0:
            self._cpu0, self._t0 = _own_cpu_seconds(), time.monotonic()

    async def handled(self, n: int, flush: Any) -> None:
        self.count += n
        self.batches += 1
        if self.count < self.expected or self._done:
            return
        self._done = True
        await flush()  # every output and changelog record acknowledged by the broker
        cpu, t = _own_cpu_seconds(), time.monotonic()
        report = {
            "events": self.count,
            "batches": self.batches,
            "table_writes": self.table_writes,
            "seconds": t - self._t0,
            "cpu_seconds": cpu - self._cpu0,
        }
        tmp = self.result.with_suffix(".tmp")
        tmp.write_text(json.dumps(report))
        tmp.replace(self.result)  # the bench sees the whole file or none


def run_worker(spec: WorkerSpec) -> None:
    """Run the trivial agent until SIGTERM (started by the bench as a child process)."""
    import faust

    from kernel.settings import load_settings
    from processors.app import create_app

    settings = load_settings()
    app = create_app(settings, spec.bootstrap)
    source = app.topic(spec.input, key_serializer="raw", value_serializer="raw")
    out = app.topic(spec.output, key_serializer="raw", value_serializer="raw")
    table = (
        app.Table(
            "state",
            key_type=bytes,  # bytes: the "raw" codec, no JSON
            value_type=bytes,
            partitions=settings.topic_partitions,
        )
        if spec.variant.table
        else None
    )
    meter = _Meter(spec.expected, Path(spec.result))
    sends = range(spec.variant.sends)
    take = spec.variant.take

    async def flush() -> None:
        await app.producer.flush()

    @app.agent(source, name="floor", concurrency=1)
    async def floor(stream: faust.StreamT[Any]) -> None:
        if take <= 1:
            async for event in stream.events():
                meter.first()
                msg = event.message
                for _ in sends:
                    await out.send(key=msg.key, value=msg.value, partition=msg.partition)
                if table is not None:
                    table[msg.key] = msg.value
                    meter.table_writes += 1
                await meter.handled(1, flush)
            return
        # take_events: take() yielding the events (keys, partitions); StreamT does not declare it
        async for events in stream.take_events(take, within=TAKE_WITHIN):  # type: ignore[attr-defined]
            meter.first()
            for event in events:
                msg = event.message
                for _ in sends:
                    await out.send(key=msg.key, value=msg.value, partition=msg.partition)
            if table is not None:
                latest = {e.message.key: e for e in events}  # one write per key per batch
                for key, event in latest.items():
                    # a table write takes its changelog partition from the current event, which
                    # take() leaves to its background reader: name the event being written
                    stream._set_current_event(event)  # type: ignore[attr-defined]
                    table[key] = event.message.value
                meter.table_writes += len(latest)
            await meter.handled(len(events), flush)

    worker = faust.Worker(app, loglevel="warning", quiet=True)
    worker.spinner = None  # as run_planner: the spinner sets the root logger to DEBUG
    worker.execute_from_commandline()


# -- the bench (parent) -----------------------------------------------------------------------


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        consumer.close()


def _output_span(bootstrap: str, topic: str, partitions: int) -> float | None:
    """Seconds between the broker timestamps of the first and the last output record."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = consumer.end_offsets(tps)
        stamps: list[int] = []
        for tp in tps:
            for offset in {0, ends[tp] - 1} if ends[tp] else ():
                consumer.assign([tp])
                consumer.seek(tp, offset)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    records = consumer.poll(timeout_ms=500, max_records=1).get(tp)
                    if records:
                        stamps.append(records[0].timestamp)
                        break
        return (max(stamps) - min(stamps)) / 1000 if stamps else None
    finally:
        consumer.close()


def bench_variant(
    bootstrap: str, variant: Variant, records: list[tuple[bytes, bytes]], partitions: int, timeout: float
) -> dict[str, Any]:
    from devtools.processes import ComponentProcess
    from kernel.admin import TopicSpec, delete_topics, ensure_topics
    from kernel.settings import load_settings
    from processors.app import app_id

    with ExitStack() as stack:
        home = Path(tempfile.mkdtemp(prefix="vudsync-bench-faust-"))
        stack.callback(shutil.rmtree, home, True)
        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        settings = load_settings(
            home=home, topic_prefix=prefix, topic_partitions=partitions, kafka_bootstrap=bootstrap
        )
        source, sink = settings.topic(INPUT), settings.topic(OUTPUT)
        changelog = f"{app_id(settings)}-state-changelog"
        ensure_topics(bootstrap, [TopicSpec(source, partitions), TopicSpec(sink, partitions)])
        stack.callback(delete_topics, bootstrap, [source, sink, changelog])
        producer = bench_producer(bootstrap)
        for key, value in records:
            producer.send(source, key=key, value=value)
        producer.flush()
        producer.close()

        result = home / "result.json"
        spec = WorkerSpec(variant, bootstrap, source, sink, len(records), str(result))
        env = {
            "VUDSYNC_HOME": str(home),
            "VUDSYNC_KAFKA_BOOTSTRAP": bootstrap,
            "VUDSYNC_TOPIC_PREFIX": prefix,
            "VUDSYNC_TOPIC_PARTITIONS": str(partitions),
            "VUDSYNC_CONFIG": "/nonexistent/vudsync.toml",
        }
        worker = ComponentProcess(
            "faust-floor",
            ["bench", "faust", "--worker-spec", json.dumps(asdict(spec))],
            env=env,
            log_dir=home,
        ).start()
        stack.callback(worker.stop)
        started = time.monotonic()
        while not result.exists():
            if not worker.alive():
                raise click.ClickException(f"the worker died ({variant.name}):\n{worker.tail(30)}")
            if time.monotonic() - started > timeout:
                raise click.ClickException(
                    f"{variant.name}: not done within {timeout:.0f}s\n{worker.tail(30)}"
                )
            time.sleep(0.2)
        load = os.getloadavg()
        own = json.loads(result.read_text())
        worker.stop()
        outputs = _end_offsets(bootstrap, sink, partitions)
        changelog_records = _end_offsets(bootstrap, changelog, partitions) if variant.table else 0
        if outputs != len(records) * variant.sends or changelog_records != own["table_writes"]:
            raise click.ClickException(
                f"{variant.name}: {outputs} outputs (want {len(records) * variant.sends}), "
                f"{changelog_records} changelog records (want {own['table_writes']})"
            )
        span = _output_span(bootstrap, sink, partitions) if variant.sends else None
        events = own["events"]
        return {
            "variant": variant.name,
            **asdict(variant),
            "events": events,
            "outputs": outputs,
            "changelog_records": changelog_records,
            "batches": own["batches"],
            "seconds": round(own["seconds"], 2),
            "events_per_s": round(events / own["seconds"]),
            "events_per_s_broker_timestamps": round(events / span) if span else None,
            "worker_cpu_s": round(own["cpu_seconds"], 2),
            "events_per_worker_cpu_s": round(events / max(own["cpu_seconds"], 1e-3)),
            "worker_cpu_us_per_event": round(own["cpu_seconds"] / events * 1e6, 1),
            "load_average": load,
        }


def _variants(sends: tuple[int, ...], tables: tuple[str, ...], takes: tuple[int, ...]) -> list[Variant]:
    return [Variant(s, t == "on", k) for k in takes for t in tables for s in sends]


@click.command()
@click.option("--events", "n", type=int, default=20_000, show_default=True, help="input records per variant")
@click.option("--keys", type=int, default=None, help="distinct keys (default: 70 % of --events)")
@click.option("--sends", type=int, multiple=True, help="output records per input  [default: 0, 3]")
@click.option(
    "--table",
    "tables",
    type=click.Choice(["off", "on"]),
    multiple=True,
    help="one table write per event (per key per batch with --take)  [default: off, on]",
)
@click.option(
    "--take", "takes", type=int, multiple=True, help="take(K) batches; 1 = per event  [default: 1, 100]"
)
@click.option("--rounds", type=int, default=1, show_default=True, help="run every variant this many times")
@click.option("--partitions", type=int, default=3, show_default=True)
@click.option("--timeout", type=float, default=600.0, show_default=True, help="per variant")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--worker-spec", default=None, hidden=True, help="(internal) run as the bench's worker")
def command(
    n: int,
    keys: int | None,
    sends: tuple[int, ...],
    tables: tuple[str, ...],
    takes: tuple[int, ...],
    rounds: int,
    partitions: int,
    timeout: float,
    as_json: bool,
    worker_spec: str | None,
) -> None:
    """Faust's own floor: a trivial agent of the planner's I/O shape, per variant."""
    if worker_spec:
        raw = json.loads(worker_spec)
        run_worker(WorkerSpec(**{**raw, "variant": Variant(**raw["variant"])}))
        return
    variants = _variants(sends or (0, 3), tables or ("off", "on"), takes or (1, 100))
    records = input_records(n, keys or max(1, n * 7 // 10))
    runs: list[dict[str, Any]] = []
    with ExitStack() as stack:
        bootstrap, _ = stack.enter_context(bench_broker())
        for _ in range(rounds):
            for variant in variants:
                runs.append(bench_variant(bootstrap, variant, records, partitions, timeout))
                if not as_json:
                    r = runs[-1]
                    click.echo(
                        f"{r['variant']:<28} {r['events_per_s']:>7} events/s  "
                        f"{r['worker_cpu_us_per_event']:>7} µs CPU/event",
                        err=True,
                    )
    result = {
        "events_per_variant": n,
        "value_bytes": round(sum(len(v) for _, v in records) / len(records)),
        "partitions": partitions,
        "runs": runs,
        "load_average": os.getloadavg(),
        "planner_worker_cpu_us_per_event_for_comparison": "≈ 1,100 (docs/benchmarks.md, Planner)",
        "target_events_per_s_per_worker": 10_000,
    }
    emit(result, as_json)
