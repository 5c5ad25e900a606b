"""``vudsync bench sink``: sink throughput against the local cloud API, on real parts.

A run: a Kafka broker (``VUDSYNC_KAFKA_BOOTSTRAP``, else a temporary local one), the
reference cloud API in a subprocess (fresh SQLite database), a workload of N operations
written straight to ``vud.cloud.operations`` (built with the ``schemas`` models, so the
planner is not measured), then 1 or 2 ``vudsync run sink`` child processes. The figure is
the cloud's own: operations applied per second between the first and the last effect in
its audit. Every run also checks the audit: one effect per idempotency key, none missing,
per-aggregate order kept.

The workload (also used by the sink's e2e tests): users that exist in the cloud, each with
``ops_per_user`` operations on its aggregate (user upserts with a known cloud id and access
assignments, alternating, every version different), plus catalogue upserts, each its own
aggregate — all simple operations, the kind the batch endpoint carries.

With a broker the bench starts itself, a throwaway round (``--warm-up`` operations, its own
cloud and topics) runs first: a fresh JVM broker spends CPU compiling its hot paths and runs
them slower until it has, which is no property of the sink. The broker's CPU per operation
is reported when its pid is known (its own broker, or ``--broker-pid``).

``--workload initial`` measures an initial sync instead: users and companies the cloud does
not know yet (nine users to a company), each a multi-step operation (look up by external id
and by e-mail / organisation number, then create), batched in phases or applied alone.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx

from devtools.bench import bench_broker, bench_producer, bench_target, process_cpu_seconds
from devtools.broker.cluster import KafkaTarget, LocalKafkaCluster
from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.scrape import ScrapeFailed, scrape
from kernel.settings import Settings
from schemas.codec import encode
from schemas.directory import ApplicationType, EntityType, ServiceAccess
from schemas.operations import (
    AssignAccess,
    CloudOperation,
    UpsertCatalogueEntry,
    UpsertCompany,
    UpsertUser,
    operation_id_for,
)
from sinks.worker import SinkConfig
from sinks.writes import simple_write

ROLES = ("Regnskap", "Lønn", "Innkjøp", "Salg", "Revisor")

WARM_UP = 20_000
"""Operations of the throwaway round before the measured one, on a broker the bench started.
The broker runs C1-compiled code only (``devtools.broker.JVM_FLAGS``); its first 20,000
operations still cost it 0.040-0.044 ms of CPU each, the next 40,000 0.021-0.032. (With C2,
before, it was 0.05-0.09 even after 100,000: docs/benchmarks.md.)"""


@dataclass
class SinkWorkload:
    """Operations to feed, and what the cloud's audit must show afterwards."""

    tag: str
    operations: list[CloudOperation] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # idempotency key → aggregate
    order: dict[str, list[str]] = field(default_factory=dict)  # aggregate → keys, in feed order
    last_first_name: dict[str, str] = field(default_factory=dict)  # cloud user id → expected name

    def add(self, op: CloudOperation, key: str | None = None) -> None:
        """``key``: the idempotency key of the operation's one effect, when it is not a simple
        operation (a create: ``<operation id>:create``)."""
        if key is None:
            write = simple_write(op)
            assert write is not None, f"{op.kind} is not a simple operation: name its key"
            key = write.key
        self.operations.append(op)
        self.keys[key] = op.aggregate
        self.order.setdefault(op.aggregate, []).append(key)


def _planned(
    kind: str, entity: EntityType, entity_id: str, version: int, at: datetime, discriminator: str = ""
) -> dict[str, Any]:
    """The fields every planned operation carries, as the planner sets them: its id (of ``kind``),
    the entity's own aggregate, the source version, committed and planned ``at``."""
    return {
        "operation_id": operation_id_for(kind, entity_id, version, discriminator),
        "aggregate": f"{entity.value}:{entity_id}",
        "entity": entity,
        "entity_id": entity_id,
        "source_version": version,
        "source_committed_at": at,
        "planned_at": at,
    }


def prepare_initial_workload(n: int, *, tag: str | None = None) -> SinkWorkload:
    """``n`` users and companies the cloud does not know yet: each is created (one effect)."""
    tag = tag or uuid.uuid4().hex[:8]
    work = SinkWorkload(tag)
    now = datetime.now(UTC)
    for i in range(n):
        op: CloudOperation
        if i % 10 == 0:
            entity_id = f"{tag}-c{i}"
            op = UpsertCompany(
                **_planned("company.upsert", EntityType.COMPANY, entity_id, 1, now),
                name=f"Nordlys {i} AS",
                organisation_number=f"8{int(tag, 16) % 10**2:02d}{i:06d}",
                country="NO",
                status="active",
            )
        else:
            entity_id = f"{tag}-u{i}"
            op = UpsertUser(
                **_planned("user.upsert", EntityType.USER, entity_id, 1, now),
                username=f"ny{i}{tag}",
                email=f"ny.bruker{i}.{tag}@fjord.no",
                first_name="Solveig",
                last_name="Ærø",
                language="nb",
                active=True,
            )
        work.add(op, key=f"{op.operation_id}:create")
    return work


def _batch(api: httpx.Client, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for first in range(0, len(items), 500):
        response = api.post("/v1/batch", json={"requests": items[first : first + 500]}, timeout=300)
        response.raise_for_status()
        out.extend(response.json()["responses"])
    bad = [r for r in out if r["status"] >= 300]
    if bad:
        raise RuntimeError(f"workload set-up failed: {bad[:3]}")
    return out


def prepare_workload(
    api: httpx.Client, n: int, *, ops_per_user: int = 4, catalogue_share: float = 0.2, tag: str | None = None
) -> SinkWorkload:
    """Create the users, companies and roles the operations need (in the cloud, not timed),
    then build ``n`` operations. ``api`` is an authenticated client of the cloud."""
    tag = tag or uuid.uuid4().hex[:8]
    work = SinkWorkload(tag)
    n_catalogue = int(n * catalogue_share)
    n_users = max(1, (n - n_catalogue + ops_per_user - 1) // ops_per_user)
    _batch(
        api,
        [
            {
                "idempotency_key": f"setup-{tag}-role-{r}",
                "method": "PUT",
                "path": f"/v1/services/business/roles/{r}",
                "body": {"description": r},
            }
            for r in ROLES
        ],
    )
    companies = _batch(
        api,
        [
            {
                "idempotency_key": f"setup-{tag}-c{c}",
                "method": "POST",
                "path": "/v1/companies",
                "body": {
                    "external_id": f"{tag}-c{c}",
                    "name": f"Fjord {c} AS",
                    "organisation_number": f"9{int(tag, 16) % 10**6:06d}{c:02d}",
                },
            }
            for c in range(10)
        ],
    )
    company_ids = [r["body"]["id"] for r in companies]
    users = _batch(
        api,
        [
            {
                "idempotency_key": f"setup-{tag}-u{u}",
                "method": "POST",
                "path": "/v1/users",
                "body": {
                    "external_id": f"{tag}-u{u}",
                    "email": f"bruker{u}.{tag}@fjord.no",
                    "username": f"b{u}{tag}",
                    "first_name": "Åse",
                    "last_name": "Brækken",
                    "language": "nb",
                },
            }
            for u in range(n_users)
        ],
    )
    now = datetime.now(UTC)
    made = 0
    per_user: list[list[CloudOperation]] = []
    for u, answer in enumerate(users):
        cloud_user = answer["body"]["id"]
        entity_id = f"{tag}-u{u}"
        ops: list[CloudOperation] = []
        for version in range(1, ops_per_user + 1):
            if made >= n - n_catalogue:
                break
            if version % 2:
                name = f"Åse v{version}"
                ops.append(
                    UpsertUser(
                        **_planned("user.upsert", EntityType.USER, entity_id, version, now),
                        cloud_id=cloud_user,
                        username=f"b{u}{tag}",
                        email=f"bruker{u}.{tag}@fjord.no",
                        first_name=name,
                        last_name="Brækken",
                        language="nb",
                    )
                )
                work.last_first_name[cloud_user] = name
            else:
                company = company_ids[(u + version) % len(company_ids)]
                ops.append(
                    AssignAccess(
                        **_planned("access.assign", EntityType.USER, entity_id, version, now, company),
                        user_id=entity_id,
                        company_id=f"c{(u + version) % len(company_ids)}",
                        cloud_user_id=cloud_user,
                        cloud_company_id=company,
                        services={
                            ApplicationType.BUSINESS: ServiceAccess(
                                roles=(ROLES[(u + version) % len(ROLES)],)
                            )
                        },
                    )
                )
            made += 1
        per_user.append(ops)
    catalogue: list[CloudOperation] = []
    for i in range(n_catalogue):
        name = f"Rolle {tag} {i}"
        catalogue.append(
            UpsertCatalogueEntry(
                **_planned("catalogue.upsert", EntityType.ROLE, f"business:{name}", 1, now),
                application=ApplicationType.BUSINESS,
                catalogue="roles",
                name=name,
                description=f"Rolle nr. {i}",
            )
        )
    # interleave: version 1 of every user, then version 2 …, with catalogue entries between
    rounds = [[ops[v] for ops in per_user if v < len(ops)] for v in range(ops_per_user)]
    mixed = [op for r in rounds for op in r]
    step = max(1, len(mixed) // max(1, n_catalogue))
    out: list[CloudOperation] = []
    cat = iter(catalogue)
    for i, op in enumerate(mixed):
        out.append(op)
        if i % step == step - 1:
            out.extend(c for c in [next(cat, None)] if c is not None)
    out.extend(cat)
    for op in out:
        work.add(op)
    return work


def feed(
    bootstrap: str, topic: str, operations: Sequence[CloudOperation], *, security: KafkaSecurity = PLAINTEXT
) -> None:
    """Write the operations to ``topic``, keyed by aggregate (acks=all), and wait for the acks."""
    producer = bench_producer(bootstrap, security=security)
    try:
        futures = [producer.send(topic, key=op.aggregate.encode(), value=encode(op)) for op in operations]
        producer.flush(timeout=120)
        for future in futures:
            future.get(timeout=60)
    finally:
        producer.close(timeout=10)


@dataclass
class AuditCheck:
    """What the cloud's audit says about a workload."""

    effects: int = 0  # audit rows of this workload's keys
    missing: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)
    out_of_order: list[str] = field(default_factory=list)  # aggregates applied out of order
    first_at: datetime | None = None
    last_at: datetime | None = None

    @property
    def exactly_once(self) -> bool:
        return not (self.missing or self.duplicated or self.out_of_order)


class AuditReader:
    """Reads the cloud's audit incrementally (``after_seq``), keeping the rows of a workload."""

    def __init__(self, api: httpx.Client, work: SinkWorkload) -> None:
        self.api = api
        self.work = work
        self.after = 0
        self.rows: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)  # key → (seq, at)

    def poll(self) -> int:
        """Read what is new; returns how many of the workload's keys have an effect."""
        while True:
            response = self.api.get("/v1/audit", params={"after_seq": self.after, "limit": 1000})
            if response.status_code != 200:  # an injected fault: read again on the next poll
                return len(self.rows)
            page = response.json()
            for row in page["items"]:
                key = row.get("idempotency_key")
                if key in self.work.keys:
                    self.rows[key].append((row["seq"], row["at"]))
            if not page["items"]:
                return len(self.rows)
            self.after = page["next_after_seq"]

    def check(self) -> AuditCheck:
        self.poll()
        result = AuditCheck()
        result.effects = sum(len(v) for v in self.rows.values())
        result.missing = [k for k in self.work.keys if k not in self.rows]
        result.duplicated = {k: len(v) for k, v in self.rows.items() if len(v) > 1}
        for aggregate, keys in self.work.order.items():
            seqs = [self.rows[k][0][0] for k in keys if k in self.rows]
            if seqs != sorted(seqs):
                result.out_of_order.append(aggregate)
        stamps = [
            datetime.fromisoformat(at.replace("Z", "+00:00")) for v in self.rows.values() for _, at in v
        ]
        if stamps:
            result.first_at, result.last_at = min(stamps), max(stamps)
        return result


# -- the benchmark ---------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc (0 if gone)."""
    return process_cpu_seconds(pid) or 0.0


def _scrape(port: int) -> dict[str, float]:
    """Sum of each sink metric family over its labels."""
    try:
        samples = scrape(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except ScrapeFailed:
        return {}
    out: dict[str, float] = collections.defaultdict(float)
    for name, series in samples.items():
        if not name.startswith("vudsync_") or name.endswith(("_bucket", "_created")):
            continue
        out[name] += sum(value for _labels, value in series)
    return dict(out)


def _finished(ports: Sequence[int]) -> int:
    """Operations the sinks have finished (any outcome, a redelivered one twice), from their metrics."""
    return int(sum(_scrape(port).get("vudsync_sink_operations_total", 0.0) for port in ports))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _load() -> float:
    """The machine's 1-minute load average (other jobs share its cores)."""
    return float(os.getloadavg()[0])


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass(frozen=True)
class Round:
    """What one round applies, and how."""

    ops: int
    workers: int
    batch: bool
    faults: float
    concurrency: int
    batch_size: int
    timeout: float
    workload: str


def run_bench(
    *,
    ops: int,
    workers: int,
    batch: bool,
    faults: float,
    concurrency: int,
    batch_size: int,
    timeout: float,
    profile_dir: Path | None = None,
    workload: str = "steady",
    warm_up: int | None = None,
    broker_pid: int | None = None,
    secure_cluster: bool = False,
) -> dict[str, Any]:
    """One measured run, after a throwaway warm-up round (``warm_up`` operations; by default
    20,000 when the bench starts the broker itself, none on a given broker); returns the
    figures (see the module docstring). ``secure_cluster``: then the same on a local secured
    three-node cluster (SASL_SSL, SCRAM, ACLs, three replicas), back to back, its figures
    under ``secured_cluster``."""
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the sinks and servers are stopped
    signal.signal(signal.SIGTERM, _interrupt)
    load_before = _load()
    home = Path(tempfile.mkdtemp(prefix="vudsync-bench-sink-"))
    spec = Round(ops, workers, batch, faults, concurrency, batch_size, timeout, workload)
    # the secured cluster is always fresh JVMs: warmed up as asked, else as the bench's own broker
    cluster_warm_up = WARM_UP if warm_up is None else warm_up
    with bench_broker(home=home) as (bootstrap, own_pid):
        # a given cluster: the settings' (a local one of their home: each component its principal)
        target = bench_target(bootstrap, own_pid)
        given_pid = broker_pid or own_pid
        broker_pids = [given_pid] if given_pid else []
        if target.cluster is not None and not given_pid:
            broker_pids = target.cluster.status().pids
        if warm_up is None:
            warm_up = WARM_UP if own_pid else 0
        warmed, figures = _warm_and_measure(target, home, spec, warm_up, broker_pids, profile_dir)
    secured: dict[str, Any] = {}
    if secure_cluster:
        cluster_settings = Settings(home=home / "secured", topic_prefix="bench-")
        cluster = LocalKafkaCluster(cluster_settings, brokers=3, secure=True, bind_to_parent=True)
        click.echo("starting a secured three-node cluster (SASL_SSL, SCRAM, ACLs)", err=True)
        try:
            status = cluster.up(timeout=240)
            cluster_warmed, cluster_figures = _warm_and_measure(
                KafkaTarget(cluster.bootstrap(), cluster),
                home / "secured",
                spec,
                cluster_warm_up,
                status.pids,
                None,
            )
        finally:
            cluster.down(grace=10)
        secured = {"secured_cluster": {**cluster_figures, "broker_warm_up": cluster_warmed}}
    shutil.rmtree(home, ignore_errors=True)  # kept (logs) only when a round failed
    return {
        "benchmark": "sink",
        "command": "vudsync bench sink "
        + f"--workload {workload} --ops {ops} --workers {workers}"
        + f" {'--batch' if batch else '--no-batch'} --faults {faults}"
        + f" --concurrency {concurrency} --batch-size {batch_size} --warm-up {warm_up}"
        + (" --secure-cluster" if secure_cluster else ""),
        "broker": "started by the bench" if own_pid else "given (the settings' bootstrap)",
        "kafka": target.describe(),
        "broker_warm_up": warmed,
        **figures,
        **secured,
        "load_average_1m": {"before": load_before, "after": _load()},
        "profiles": str(profile_dir) if profile_dir else None,
    }


def _warm_and_measure(
    target: KafkaTarget,
    home: Path,
    spec: Round,
    warm_up: int,
    broker_pids: Sequence[int],
    profile_dir: Path | None,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """A throwaway round of ``warm_up`` operations (none for 0), then the measured one."""
    warmed: dict[str, Any] | None = None
    if warm_up > 0:
        # a fresh JVM broker runs its produce, fetch and commit paths interpreted until the
        # JIT has compiled them, taking CPU the cloud and the sink then lack on a small
        # machine. A running broker has long paid that; so the round measured comes second.
        click.echo(
            f"warming the broker up: a throwaway round of {warm_up:,} operations (--warm-up 0 skips it)",
            err=True,
        )
        started = time.monotonic()
        warm = _round(
            target,
            home / "warm-up",
            Round(
                ops=warm_up,
                workers=1,
                batch=True,
                faults=0.0,
                concurrency=4,
                batch_size=SinkConfig.batch_size,
                timeout=spec.timeout,
                workload="steady",
            ),
            broker_pids=broker_pids,
        )
        warmed = {
            "operations": warm_up,
            "seconds": round(time.monotonic() - started, 1),
            "ops_per_second": warm["ops_per_second"],
            "broker_cpu_ms_per_op": warm.get("broker_cpu_ms_per_op"),
        }
    click.echo(f"measuring: {spec.ops:,} operations, {spec.workers} sink worker(s)", err=True)
    figures = _round(target, home / "measured", spec, profile_dir=profile_dir, broker_pids=broker_pids)
    return warmed, figures


def _round(
    target: KafkaTarget,
    home: Path,
    spec: Round,
    *,
    profile_dir: Path | None = None,
    broker_pids: Sequence[int] = (),
) -> dict[str, Any]:
    """A cloud of its own, ``spec.ops`` operations on topics of their own, the sinks until
    every operation is applied, then the audit's check. On a secured cluster the bench feeds
    and creates topics as the ops principal, the sinks connect as the sink's, and the round's
    topic prefix gets the components' ACLs."""
    from cloud.server import CloudServer
    from devtools.processes import ComponentProcess, kafka_security_env
    from schemas.topics import OPERATIONS
    from vudsync.topics import ensure_catalogue

    ops, workers, batch, faults = spec.ops, spec.workers, spec.batch, spec.faults
    concurrency, batch_size, timeout = spec.concurrency, spec.batch_size, spec.timeout
    workload = spec.workload

    home.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench-{tag}-"
    with (
        CloudServer(
            db_path=home / "cloud.db", secret_hash_iterations=1000, extra_args=("--log-level", "warning")
        ) as cloud,
    ):
        bootstrap = target.bootstrap
        settings = Settings(
            home=home, kafka_bootstrap=bootstrap, topic_prefix=prefix, topic_partitions=6
        ).with_kafka_security(target.security("ops"))
        if target.cluster is not None and target.cluster.secure:
            target.cluster.grant(settings)
        ensure_catalogue(settings, bootstrap)
        api = httpx.Client(base_url=cloud.url, headers=cloud.auth_headers(), timeout=60)
        started = time.monotonic()
        work = (
            prepare_initial_workload(ops, tag=tag)
            if workload == "initial"
            else prepare_workload(api, ops, tag=tag)
        )
        feed(bootstrap, settings.topic(OPERATIONS.name), work.operations, security=settings.kafka_security())
        setup_seconds = time.monotonic() - started
        if faults:
            cloud.set_faults(
                error_rate=faults, rate_limit_rate=faults / 2, retry_after_seconds=1, latency_ms=[0, 20]
            )
        stats_before = cloud.stats()
        env = {
            "VUDSYNC_HOME": str(home),
            "VUDSYNC_KAFKA_BOOTSTRAP": bootstrap,
            "VUDSYNC_TOPIC_PREFIX": prefix,
            "VUDSYNC_TOPIC_PARTITIONS": "6",
            "VUDSYNC_CLOUD_URL": cloud.url,
            "VUDSYNC_CLOUD_CLIENT_ID": cloud.client_id,
            "VUDSYNC_CLOUD_CLIENT_SECRET": cloud.client_secret,
            "VUDSYNC_SINK_BATCH": "true" if batch else "false",
            "VUDSYNC_SINK_CONCURRENCY": str(concurrency),
            "VUDSYNC_SINK_BATCH_SIZE": str(batch_size),
            "VUDSYNC_CONFIG": "/nonexistent/vudsync.toml",
            **kafka_security_env(target.security("sink")),
        }
        ports = [_free_port() for _ in range(workers)]
        sinks = [
            ComponentProcess(
                f"sink-{i + 1}",
                ["-v", "run", "sink", "--worker-name", f"bench-{i + 1}", "--metrics-port", str(port)],
                env=env,
                log_dir=home / "logs",
            )
            for i, port in enumerate(ports)
        ]
        spies: list[subprocess.Popen[bytes]] = []
        reader = AuditReader(api, work)

        def cpu_now() -> dict[str, float]:
            # every node of a cluster: three replicas of each write
            broker = {"broker": sum(_cpu_seconds(pid) for pid in broker_pids)} if broker_pids else {}
            return {
                "cloud": _cpu_seconds(cloud.pid),
                **{s.name: _cpu_seconds(s.pid or 0) for s in sinks},
                **broker,
            }

        cpu_start = cpu_now()
        steady: tuple[int, dict[str, float]] | None = None  # (applied, cpu) once applying began
        try:
            t0 = time.monotonic()
            for sink in sinks:
                sink.start()
            if profile_dir is not None:
                spies = _profile(profile_dir, {"cloud": cloud.pid, **{s.name: s.pid or 0 for s in sinks}})
            deadline = t0 + timeout
            # progress from the sinks' own counters: reading the audit through the cloud while
            # it works took ~8% of the cloud's CPU. The counters may run ahead of the effects:
            # after a rebalance the new owner of a partition finishes again what the old one
            # had finished but not committed (already applied), so once they reach the
            # workload's size the cloud's audit has the last word.
            while (applied := _finished(ports)) < len(work.keys) or reader.poll() < len(work.keys):
                if steady is None and applied:
                    steady = (applied, cpu_now())  # start-up (imports, group join) excluded
                dead = [s for s in sinks if not s.alive()]
                if dead:
                    raise click.ClickException(f"{dead[0].name} died (logs in {home}):\n{dead[0].tail(30)}")
                if time.monotonic() > deadline:
                    raise click.ClickException(
                        f"not done in {timeout}s: {applied} operations finished by the sinks,"
                        f" {reader.poll()} of {len(work.keys)} with an effect in the cloud's"
                        f" audit (logs in {home})"
                    )
                time.sleep(0.25)
            wall = time.monotonic() - t0
            cpu_end = cpu_now()
            cpu = {k: v - cpu_start.get(k, 0.0) for k, v in cpu_end.items()}
            first_applied, cpu_first = steady or (0, cpu_start)
            cpu_basis = "applying (start-up excluded)"
            if len(work.keys) - first_applied < max(1, len(work.keys) // 10):
                # most of the round was applied before the first sample (a small round on a
                # quiet machine): too few operations and clock ticks after it to divide by
                first_applied, cpu_first = 0, cpu_start
                cpu_basis = "whole round (start-up included): most was applied before the first sample"
            steady_ops = max(1, len(work.keys) - first_applied)
            steady_cpu = {k: v - cpu_first.get(k, 0.0) for k, v in cpu_end.items()}
            metrics = [_scrape(p) for p in ports]
            stats = cloud.stats()
            if faults:  # a healthy cloud for reading the audit back
                cloud.set_faults()
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(timeout=60)
            for sink in sinks:
                sink.stop()
        check = reader.check()
        api.close()
    cloud.cleanup()
    window = (check.last_at - check.first_at).total_seconds() if check.first_at and check.last_at else 0.0
    retries = sum(m.get("vudsync_sink_retries_total", 0.0) for m in metrics)
    sink_cpu = sum(v for k, v in steady_cpu.items() if k not in ("cloud", "broker"))
    broker_figure = (
        {"broker_cpu_ms_per_op": round(1000 * steady_cpu["broker"] / steady_ops, 3)}
        if "broker" in steady_cpu
        else {}
    )
    return {
        "operations": len(work.operations),
        "workload": workload,
        "workers": workers,
        "batch": batch,
        "batch_size": batch_size if batch else 1,
        "concurrency": concurrency,
        "faults": {"error_rate": faults, "rate_limit_rate": faults / 2, "latency_ms": [0, 20]}
        if faults
        else {},
        "ops_per_second": round(len(work.operations) / window, 1) if window else None,
        "apply_window_seconds": round(window, 2),
        "wall_seconds_incl_startup": round(wall, 2),
        "setup_seconds": round(setup_seconds, 2),
        "exactly_once": check.exactly_once,
        "missing": len(check.missing),
        "duplicated": len(check.duplicated),
        "out_of_order_aggregates": len(check.out_of_order),
        "sink_retries": int(retries),
        "cloud_requests": stats.get("total_requests", 0) - stats_before.get("total_requests", 0),
        "cloud_faults_injected": stats.get("faults_injected"),
        "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
        # CPU per operation while applying (start-up excluded, unless ``cpu_basis`` says
        # otherwise), from /proc: load-independent
        "cpu_basis": cpu_basis,
        "cloud_cpu_ms_per_op": round(1000 * steady_cpu["cloud"] / steady_ops, 3),
        "sink_cpu_ms_per_op": round(1000 * sink_cpu / steady_ops, 3),
        **broker_figure,
    }


def _profile(folder: Path, pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """py-spy (if installed) records each process until SIGINT, as collapsed stacks."""
    import sys

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "50",
                "--format",
                "raw",
                "--output",
                str(folder / f"{name}.txt"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
        if pid
    ]


@click.command("sink")
@click.option("--ops", "n_ops", type=int, default=10_000, show_default=True, help="operations to apply")
@click.option("--workers", type=click.IntRange(1, 4), default=1, show_default=True, help="sink processes")
@click.option("--batch/--no-batch", default=True, show_default=True, help="use POST /v1/batch")
@click.option(
    "--faults",
    type=click.FloatRange(0, 0.6),
    default=0.0,
    show_default=True,
    help="5xx rate; half as many 429s (Retry-After 1 s) and 0-20 ms latency come with it",
)
@click.option("--concurrency", type=int, default=None, help="cloud calls in flight per worker")
@click.option("--batch-size", type=click.IntRange(1, 500), default=None, help="operations per batch")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="give up after (s)")
@click.option(
    "--profile",
    "profile_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="record py-spy profiles of the cloud and the sinks into this folder",
)
@click.option(
    "--workload",
    type=click.Choice(["steady", "initial"]),
    default="steady",
    show_default=True,
    help="steady: updates and assignments of known users; initial: new users and companies (multi-step)",
)
@click.option(
    "--warm-up",
    type=click.IntRange(0),
    default=None,
    help="operations of a throwaway round first, to warm a fresh broker's JIT"
    f" [default: {WARM_UP} with the bench's own broker, 0 with a given one]",
)
@click.option("--broker-pid", type=int, default=None, help="pid of a given broker, for its CPU per operation")
@click.option(
    "--secure-cluster",
    is_flag=True,
    help="then the same round on a local secured three-node cluster (SASL_SSL, SCRAM, ACLs, three"
    " replicas), back to back; its figures under secured_cluster",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def command(
    n_ops: int,
    workers: int,
    batch: bool,
    faults: float,
    concurrency: int | None,
    batch_size: int | None,
    timeout: float,
    profile_dir: Path | None,
    workload: str,
    warm_up: int | None,
    broker_pid: int | None,
    secure_cluster: bool,
    as_json: bool,
) -> None:
    """Sink throughput against the local cloud API (healthy or faulty; 1-2 workers; batch or not).

    \b
    Example: the single PLAINTEXT broker beside a secured three-node cluster, same run:
      vudsync bench sink --ops 20000 --secure-cluster --json
    """
    from devtools.bench import emit

    result = run_bench(
        ops=n_ops,
        workers=workers,
        batch=batch,
        faults=faults,
        concurrency=concurrency or (4 if batch else 8),
        batch_size=batch_size or SinkConfig.batch_size,
        timeout=timeout,
        profile_dir=profile_dir,
        workload=workload,
        warm_up=warm_up,
        broker_pid=broker_pid,
        secure_cluster=secure_cluster,
    )
    emit(result, as_json)
