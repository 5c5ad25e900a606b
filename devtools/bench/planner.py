"""``vudsync bench planner``: planning throughput, in process and as a Faust worker on a broker.

1. **In process** (no I/O): ``--events`` directory events as the producer writes them (JSON),
   a realistic mix — new users with access to one or two companies, updates of names and
   access, companies, a few removals — planned with their previous state and every cloud
   identity known. Two figures:

   - ``plan``: :func:`processors.planner.plan` alone, events decoded beforehand;
   - ``reconcile``: what a worker does per event minus Faust — decode the bytes, read the
     previous state from the table (a dict), plan, build the table value, encode the
     operations.

2. **Faust worker** (``--faust``, needs a broker: ``VUDSYNC_KAFKA_BOOTSTRAP``, the local broker,
   or one started for the bench): the events are written to fresh topics first (not timed),
   then one ``vudsync run planner`` worker is started; events/s = events planned / time from
   its first operation to its last (the timestamps the broker gave the operation records), so
   start-up and rebalancing do not count.

In-process figures are given per wall-clock second and per CPU second of this process: the
machine is shared, and the CPU figure is the one other people's load distorts least. The share
of ``reconcile``'s wall-clock time spent in the garbage collector is measured too (the table,
a Python object graph of every entity, is what full collections walk); ``--gc-threshold``
runs the in-process part with other thresholds (``gc.set_threshold``), to measure what a
worker setting them would gain — the default figures run with Python's defaults.

Targets (issue 4): ≥ 50,000 events/s in process; ≥ 10,000 events/s per Faust worker.
"""

from __future__ import annotations

import cProfile
import gc
import json
import os
import pstats
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from devtools.bench import bench_broker, bench_producer, emit, process_cpu_seconds

APPS = ("business", "reporting")
ROLES = ("Regnskap", "Lønn", "Innkjøp", "Salg")


# -- the events ---------------------------------------------------------------------------


def _source(seq: int) -> dict[str, Any]:
    at = datetime(2026, 11, 27, tzinfo=UTC) + timedelta(milliseconds=seq)
    return {
        "store": "sqlite",
        "db": "bench.db",
        "seq": seq,
        "snapshot": False,
        "committed_at": at.isoformat(),
    }


def _access(rng: random.Random, companies: int) -> list[dict[str, Any]]:
    chosen = sorted(rng.sample(range(companies), rng.choice((1, 1, 2))))
    return [
        {
            "company_id": f"c{c:04d}",
            "services": {
                rng.choice(APPS): {
                    "roles": sorted(rng.sample(ROLES, rng.randint(1, 2))),
                    "layout_groups": [],
                    "modules": [],
                }
            },
        }
        for c in chosen
    ]


def directory_events(n: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """``(key, event JSON)``: ~8 % companies, ~60 % new users, ~30 % updates, ~2 % removals."""
    rng = random.Random(seed)
    companies = max(10, n // 100)
    users: dict[str, dict[str, Any]] = {}
    out: list[tuple[str, bytes]] = []
    seq = 0
    for c in range(companies):
        seq += 1
        company = {"id": f"c{c:04d}", "name": f"Firma {c} AS", "organisation_number": f"9{c:08d}"}
        out.append((company["id"], _event("company", company, seq, "r")))
    while len(out) < n:
        seq += 1
        roll = rng.random()
        if users and roll < 0.30:
            uid = rng.choice(list(users))
            state = dict(users[uid])
            if rng.random() < 0.5:
                state["first_name"] = rng.choice(("Kari", "Åse", "Ørjan", "Håkon"))
            else:
                state["access"] = _access(rng, companies)
            users[uid] = state
            out.append((uid, _event("user", state, seq, "u")))
        elif users and roll < 0.32:
            uid = rng.choice(list(users))
            out.append((uid, _event("user", users.pop(uid), seq, "d")))
        else:
            uid = f"u{seq:07d}"
            users[uid] = {
                "id": uid,
                "username": f"bruker{seq}",
                "email": f"bruker{seq}@fjord.no",
                "first_name": "Kari",
                "last_name": "Nordmann",
                "language": "nb",
                "active": True,
                "access": _access(rng, companies),
            }
            out.append((uid, _event("user", users[uid], seq, "c")))
    return out[:n]


def _event(entity: str, state: dict[str, Any], seq: int, op: str) -> bytes:
    from schemas.directory import EntityType
    from schemas.events import Op, event_id_for

    return json.dumps(
        {
            "event_id": event_id_for(EntityType(entity), state["id"], seq, Op(op)),
            "entity_id": state["id"],
            "version": seq,
            "op": op,
            "ts": datetime(2026, 11, 27, tzinfo=UTC).isoformat(),
            "source": _source(seq),
            "entity": entity,
            "state": state,
        }
    ).encode()


def known_table(events: list[tuple[str, bytes]], partitions: int = 1) -> dict[str, Any]:
    """A planner table in which ``vudsync connect`` has run, the cloud knows every user, company
    and catalogue entry, and every application matches: operations go at once, none is parked."""
    table: dict[str, Any] = {}
    for p in range(partitions):
        table[f"k|{p}|connect:installation"] = {"present": True, "at": 0.0}
        for app in ("business", "document_center", "reporting"):
            table[f"k|{p}|registry:{app}"] = {"present": False, "uri": None, "fp": None, "at": 0.0}
            for role in ROLES:
                table[f"k|{p}|catalogue:{app}:roles:{role}"] = {"present": True, "at": 0.0}
        for key, raw in events:
            kind = "company" if b'"entity": "company"' in raw else "user"
            table[f"k|{p}|{kind}:{key}"] = f"cloud-{key}"
    return table


# -- in process ---------------------------------------------------------------------------


@contextmanager
def _gc_timed(totals: dict[str, Any]) -> Iterator[None]:
    """Add the seconds spent in garbage collections, and their count per generation, to ``totals``."""
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            totals["seconds"] += time.perf_counter() - started[0]
            totals["collections"][info["generation"]] += 1

    gc.callbacks.append(callback)
    try:
        yield
    finally:
        gc.callbacks.remove(callback)


def bench_in_process(events: list[tuple[str, bytes]], profile: Path | None) -> dict[str, Any]:
    from processors.engine import Coords, Reconciler
    from processors.model import PlannerSettings
    from processors.planner import plan
    from schemas.codec import decode_event, encode

    settings = PlannerSettings(deletes_threshold=10**9)
    now = datetime.now(UTC)

    # reconcile: decode → table → plan → table value → encode, as the worker does per event
    table = known_table(events)
    reconciler = Reconciler(table, settings, 1, lambda: now)
    operations = 0
    profiler = cProfile.Profile() if profile else None
    collected: dict[str, Any] = {"seconds": 0.0, "collections": [0, 0, 0]}
    cpu_started = time.process_time()
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    with _gc_timed(collected):
        for offset, (_, raw) in enumerate(events):
            fx = reconciler.on_directory_event(decode_event(raw), Coords("users", 0, offset), offset)
            for send in fx.sends:
                encode(send.value)
            for k, v in fx.writes.items():
                if v is None:
                    table.pop(k, None)
                else:
                    table[k] = v
            operations += len(fx.sends)
    if profiler:
        profiler.disable()
        profiler.dump_stats(str(profile))
    reconcile_s = time.perf_counter() - started
    reconcile_cpu = time.process_time() - cpu_started

    # plan alone: decoded events, previous state at hand
    decoded = [decode_event(raw) for _, raw in events]
    ids = reconciler.identities(0)
    previous: dict[str, Any] = {}
    cpu_started = time.process_time()
    started = time.perf_counter()
    for ev in decoded:
        key = f"{ev.entity.value}:{ev.entity_id}"
        result = plan(previous.get(key), ev, ids, settings, now=now)
        if result.view is not None:
            previous[key] = result.view
    plan_s = time.perf_counter() - started
    plan_cpu = time.process_time() - cpu_started
    return {
        "events": len(events),
        "operations": operations,
        "reconcile_events_per_s": round(len(events) / reconcile_s),
        "reconcile_events_per_cpu_s": round(len(events) / reconcile_cpu),
        "plan_events_per_s": round(len(events) / plan_s),
        "plan_events_per_cpu_s": round(len(events) / plan_cpu),
        "reconcile_us_per_event": round(reconcile_s / len(events) * 1e6, 1),
        "reconcile_gc_share": round(collected["seconds"] / reconcile_s, 3),
        "reconcile_gc_collections": collected["collections"],
        "gc_threshold": list(gc.get_threshold()),
        "target_events_per_s": 50_000,
    }


# -- a Faust worker on a broker ----------------------------------------------------------------


def bench_faust(events: list[tuple[str, bytes]], partitions: int, timeout: float) -> dict[str, Any]:
    from kafka import KafkaConsumer, TopicPartition

    from devtools.processes import ComponentProcess
    from kernel.settings import load_settings
    from processors.app import app_id
    from processors.topics import ensure_planner_topics
    from schemas.directory import EntityType
    from schemas.results import FactKind, PlannerFact
    from schemas.topics import DIRECTORY_TOPICS, OPERATIONS, PLANNER_FACTS
    from vudsync.topics import ensure_catalogue

    with ExitStack() as stack:
        bootstrap, _ = stack.enter_context(bench_broker())
        home = Path(tempfile.mkdtemp(prefix="vudsync-bench-planner-"))
        stack.callback(shutil.rmtree, home, True)
        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        settings = load_settings(
            home=home, topic_prefix=prefix, topic_partitions=partitions, kafka_bootstrap=bootstrap
        )
        ensure_catalogue(settings, bootstrap)
        ensure_planner_topics(settings, bootstrap)
        producer = bench_producer(bootstrap)
        # what `vudsync connect` and the results would have taught: everything is known
        facts = [
            PlannerFact(
                kind=FactKind.REGISTRY,
                subject=app,
                present=False,
                observed_at=datetime.now(UTC),
                source="connect",
            )
            for app in ("business", "document_center", "reporting")
        ] + [
            PlannerFact(
                kind=FactKind.CATALOGUE,
                subject=f"{app}:roles:{role}",
                observed_at=datetime.now(UTC),
                source="connect",
            )
            for app in APPS
            for role in ROLES
        ]
        for key, raw in events:
            kind = FactKind.COMPANY if b'"entity": "company"' in raw else FactKind.USER
            facts.append(
                PlannerFact(
                    kind=kind,
                    subject=key,
                    cloud_id=f"cloud-{key}",
                    observed_at=datetime.now(UTC),
                    source="connect",
                )
            )
        facts.append(  # connect succeeded: last, as connect says it
            PlannerFact(
                kind=FactKind.CONNECT, subject="installation", observed_at=datetime.now(UTC), source="connect"
            )
        )
        facts_topic = settings.topic(PLANNER_FACTS.name)
        for fact in {f.key: f for f in facts}.values():
            for p in range(partitions):
                producer.send(
                    facts_topic, key=fact.key.encode(), value=fact.model_dump_json().encode(), partition=p
                )
        producer.flush()
        env = {
            "VUDSYNC_HOME": str(home),
            "VUDSYNC_KAFKA_BOOTSTRAP": bootstrap,
            "VUDSYNC_TOPIC_PREFIX": prefix,
            "VUDSYNC_TOPIC_PARTITIONS": str(partitions),
            "VUDSYNC_PLANNER_DELETES_THRESHOLD": str(10**9),
            "VUDSYNC_CONFIG": "/nonexistent/vudsync.toml",
        }
        worker = ComponentProcess("planner-bench", ["run", "planner"], env=env, log_dir=home / "logs").start()
        stack.callback(worker.stop)
        # the worker learns the facts first (not timed): the figure is the steady-state path of
        # directory events, every prerequisite known
        facts_started = time.monotonic()
        fact_count = len({f.key for f in facts}) * partitions
        while _committed(bootstrap, app_id(settings), facts_topic) < fact_count:
            if not worker.alive():
                raise click.ClickException(f"the planner worker died:\n{worker.tail(30)}")
            if time.monotonic() - facts_started > timeout:
                raise click.ClickException("the planner did not learn the facts in time")
            time.sleep(0.5)
        facts_seconds = time.monotonic() - facts_started
        cpu_before = _cpu_seconds(worker.pid)
        topic_of = {
            "company": settings.topic(DIRECTORY_TOPICS[EntityType.COMPANY].name),
            "user": settings.topic(DIRECTORY_TOPICS[EntityType.USER].name),
        }
        for key, raw in events:
            producer.send(
                topic_of["company" if b'"entity": "company"' in raw else "user"], key=key.encode(), value=raw
            )
        producer.flush()
        producer.close()
        ops_topic = settings.topic(OPERATIONS.name)
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
        stack.callback(consumer.close)
        tps = [TopicPartition(ops_topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        expected = _expected_operations(events)
        first = last = None
        count = 0
        deadline = time.monotonic() + timeout
        while count < expected and time.monotonic() < deadline:
            if not worker.alive():
                raise click.ClickException(f"the planner worker died:\n{worker.tail(30)}")
            for records in consumer.poll(timeout_ms=500, max_records=10_000).values():
                for r in records:
                    first = r.timestamp if first is None else min(first, r.timestamp)
                    last = r.timestamp if last is None else max(last, r.timestamp)
                    count += 1
        if count < expected or first is None or last is None:
            raise click.ClickException(f"{count} of {expected} operations within {timeout:.0f}s")
        # the worker's CPU time from the first directory event produced to its last operation
        # read (includes the short idle tail): load-independent, unlike the wall-clock rate
        worker_cpu = _cpu_seconds(worker.pid) - cpu_before
        seconds = max((last - first) / 1000, 1e-3)
        return {
            "events": len(events),
            "operations": count,
            "partitions": partitions,
            "facts_learned_first": fact_count,
            "facts_seconds_incl_startup": round(facts_seconds, 1),
            "seconds_first_to_last_operation": round(seconds, 2),
            "faust_events_per_s_per_worker": round(len(events) / seconds),
            "faust_worker_cpu_s": round(worker_cpu, 2),
            "faust_events_per_worker_cpu_s": round(len(events) / max(worker_cpu, 1e-3)),
            "faust_worker_cpu_us_per_event": round(worker_cpu / len(events) * 1e6, 1),
            "target_events_per_s_per_worker": 10_000,
        }


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process ``pid`` (Linux ``/proc``; 0 elsewhere)."""
    return (process_cpu_seconds(pid) if pid is not None else None) or 0.0


def _committed(bootstrap: str, group: str, topic: str) -> int:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    except KafkaError:
        return 0
    finally:
        admin.close()
    return sum(max(o.offset, 0) for tp, o in offsets.items() if tp.topic == topic)


def _expected_operations(events: list[tuple[str, bytes]]) -> int:
    """How many operations planning ``events`` in order yields (in process, same rules)."""
    from processors.engine import Coords, Reconciler
    from processors.model import PlannerSettings
    from schemas.codec import decode_event

    table = known_table(events)
    reconciler = Reconciler(table, PlannerSettings(deletes_threshold=10**9), 1, lambda: datetime.now(UTC))
    count = 0
    for offset, (_, raw) in enumerate(events):
        fx = reconciler.on_directory_event(decode_event(raw), Coords("t", 0, offset), offset)
        table.update(fx.writes)
        count += len(fx.operations())
    return count


@click.command()
@click.option("--events", "n", type=int, default=100_000, show_default=True, help="directory events")
@click.option(
    "--faust/--no-faust", default=True, show_default=True, help="also run a Faust worker on a broker"
)
@click.option("--faust-events", type=int, default=None, help="events for the Faust run (default: --events)")
@click.option(
    "--partitions", type=int, default=6, show_default=True, help="partitions of the Faust run's topics"
)
@click.option("--timeout", type=float, default=600.0, show_default=True)
@click.option("--profile", type=click.Path(path_type=Path), default=None, help="cProfile the in-process run")
@click.option(
    "--gc-threshold",
    default=None,
    metavar="G0,G1,G2",
    help="run the in-process part with these garbage-collector thresholds (default: Python's)",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def command(
    n: int,
    faust: bool,
    faust_events: int | None,
    partitions: int,
    timeout: float,
    profile: Path | None,
    gc_threshold: str | None,
    as_json: bool,
) -> None:
    """Planner throughput: in process (target ≥ 50,000 events/s) and per Faust worker (≥ 10,000)."""
    events = directory_events(n)
    thresholds = gc.get_threshold()
    if gc_threshold:
        try:
            gc.set_threshold(*(int(g) for g in gc_threshold.split(",")))
        except (TypeError, ValueError) as exc:
            raise click.BadParameter(f"{gc_threshold!r}: {exc}", param_hint="--gc-threshold") from None
    try:
        result: dict[str, Any] = {"in_process": bench_in_process(events, profile)}
    finally:
        gc.set_threshold(*thresholds)
    if profile:
        stats = pstats.Stats(str(profile))
        stats.sort_stats("tottime").print_stats(15)
    if faust:
        result["faust"] = bench_faust(directory_events(faust_events or n, seed=11), partitions, timeout)
    result["load_average"] = os.getloadavg()
    emit(result, as_json)
