"""``vudsync demo``: the whole pipeline on the embedded default, in one command.

Starts (or reuses) the local Kafka broker, the reference cloud API, the producer, a planner
worker and a sink worker, and the writeback's cloud-capture and directory sink; seeds a sample
directory; makes live changes; shows the backlog draining; has an administrator grant a role
in the cloud and waits for it in the directory store (the two-way pipeline); prints a summary.
Everything it started is stopped on exit, Ctrl-C or SIGTERM, unless ``--keep-running``.
"""

from __future__ import annotations

import random
import signal
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloud.server import CloudServer
from devtools.bench import applied_latencies
from devtools.broker import LocalKafkaBroker
from devtools.broker.cluster import KafkaTarget
from devtools.processes import PipelineWorkers, settled
from devtools.secrets import with_run_secrets
from devtools.seed.data import CATALOGUE, FIRST_NAMES, sample_directory, write_sample
from devtools.seed.writer import SqliteDirectoryWriter
from kernel.errors import VudsyncError
from kernel.scrape import total
from kernel.settings import Settings
from schemas.topics import RESULTS
from vudsync.topics import ensure_catalogue


@dataclass
class DemoOptions:
    users: int = 300
    companies: int = 20
    changes: int = 60
    timeout: float = 600.0
    keep_running: bool = False


@dataclass
class DemoReport:
    captured: float = 0
    planned: float = 0
    applied: float = 0
    already_applied: float = 0
    stale_or_redelivered: float = 0
    dead_lettered: float = 0
    parked_now: float = 0
    users_in_store: int = 0
    users_in_cloud: int = 0
    latencies: list[float] = field(default_factory=list)
    # the live changes' share of ``latencies``: the initial sync's operations queue behind the
    # whole snapshot, so their latency says how long the backlog took, not how fresh sync is
    live_latencies: list[float] = field(default_factory=list)
    metrics_urls: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0
    cloud_grant: CloudGrant | None = None

    def percentile(self, q: float, live: bool = False) -> float | None:
        values = self.live_latencies if live else self.latencies
        if not values:
            return None
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "captured": int(self.captured),
            "planned": int(self.planned),
            "applied": int(self.applied),
            "duplicates_avoided": int(self.already_applied + self.stale_or_redelivered),
            "dead_lettered": int(self.dead_lettered),
            "parked": int(self.parked_now),
            "users_in_store": self.users_in_store,
            "users_in_cloud": self.users_in_cloud,
            "end_to_end_p50_seconds": self.percentile(50),
            "end_to_end_p99_seconds": self.percentile(99),
            "live_changes_applied": len(self.live_latencies),
            "live_end_to_end_p50_seconds": self.percentile(50, live=True),
            "live_end_to_end_p99_seconds": self.percentile(99, live=True),
            "elapsed_seconds": round(self.elapsed, 1),
            "metrics": self.metrics_urls,
            "cloud_grant": self.cloud_grant.as_dict() if self.cloud_grant else None,
        }


@dataclass(frozen=True)
class CloudGrant:
    """What an administrator's grant in the cloud did: the writeback (cloud → directory)."""

    user: str  # on-premise user id and user name
    company: str  # on-premise company id and name
    role: str  # the Business role granted
    seconds: float  # from the cloud's request to the row in the directory store
    store_origin: str  # the store row's origin (cloud: the writeback wrote it)
    change_log_rows: int  # change-log rows of the user since the grant (one: the writeback's)
    cloud_writes: int  # writes of vudsync's own client in the cloud caused by it (none: no echo)

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "company": self.company,
            "role": self.role,
            "to_store_seconds": round(self.seconds, 2),
            "store_origin": self.store_origin,
            "change_log_rows": self.change_log_rows,
            "cloud_writes_by_vudsync": self.cloud_writes,
        }


class _Interrupted(Exception):
    pass


def _on_term(_signum: int, _frame: FrameType | None) -> None:
    raise _Interrupted


class Demo:
    def __init__(self, settings: Settings, options: DemoOptions, console: Console) -> None:
        self.base = with_run_secrets(settings)  # random secrets for this run, unless set
        self.options = options
        self.console = console
        self.workers: PipelineWorkers | None = None
        self.cloud: CloudServer | None = None
        self.broker: LocalKafkaBroker | None = None
        self.started_broker = False

    # -- lifecycle ----------------------------------------------------------------------

    def run(self) -> DemoReport:
        previous = signal.signal(signal.SIGTERM, _on_term)
        started = time.monotonic()
        try:
            report = self._run()
            report.elapsed = time.monotonic() - started
            return report
        except (KeyboardInterrupt, _Interrupted):
            self.console.print("[yellow]interrupted: stopping what the demo started[/]")
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
            if not self.options.keep_running:
                self.stop()

    def stop(self) -> None:
        if self.workers is not None:
            self.workers.stop()
        if self.cloud is not None:
            self.cloud.stop()
        if self.started_broker and self.broker is not None:
            self.broker.down()

    def _run(self) -> DemoReport:
        con = self.console
        run_id = uuid.uuid4().hex[:8]
        home = self.base.home / "demo"
        home.mkdir(parents=True, exist_ok=True)
        for stale in (
            "directory.db",
            "directory.db-wal",
            "directory.db-shm",
            "cloud.db",
            "cloud.db-wal",
            "cloud.db-shm",
        ):
            (home / stale).unlink(missing_ok=True)
        bootstrap = self._broker()
        # a given cluster: as the settings connect (a local secured one of the home: each
        # component its principal, the run's topics granted their ACLs)
        target = KafkaTarget.from_settings(self.base, bootstrap) if self.base.kafka_bootstrap else None
        with con.status("starting the reference cloud API"):
            self.cloud = CloudServer(
                db_path=home / "cloud.db",
                client_id=self.base.cloud_client_id,
                client_secret=self.base.require_secret("cloud_client_secret"),
                admin_token=self.base.require_secret("cloud_admin_token"),
            ).start()
        settings = self.base.model_copy(
            update={
                "home": home,
                "topic_prefix": f"demo-{run_id}-",
                "store_url": f"sqlite:///{home / 'directory.db'}",
                "cloud_url": self.cloud.url,
                "cloud_client_secret": SecretStr(self.cloud.client_secret),
            }
        )
        if target is not None:
            if target.cluster is not None and target.cluster.secure:
                target.cluster.grant(settings)
            settings = settings.with_kafka_security(target.security("ops"))
            con.print(f"Kafka: {bootstrap}, {target.describe()}")
        ensure_catalogue(settings, bootstrap)
        writer = SqliteDirectoryWriter(home / "directory.db")
        sample = sample_directory(self.options.users, self.options.companies)
        with con.status(
            f"seeding {len(sample.users)} users, {len(sample.companies)} companies, "
            f"{len(sample.access)} access rows"
        ):
            write_sample(writer, sample)
        with con.status("connecting to the cloud (customer administrator check, registry, catalogues)"):
            from vudsync.commands.connect import run_connect

            run_connect(settings, bootstrap, snapshot=False)  # the producer snapshots, with its metrics
        self.workers = PipelineWorkers(
            settings, bootstrap, settings.home / "logs", target.security if target else None, writeback=True
        ).start()
        con.print(
            f"pipeline up: broker {bootstrap}, cloud {self.cloud.url}, "
            f"producer/planner/sink/cloud-capture/directory-sink pids {list(self.workers.pids.values())}"
        )
        self._drain("initial sync (snapshot)")
        live_since = time.time()
        self._live_changes(writer, sample.users)
        self._drain("live changes")
        grant = self._cloud_grant(writer)
        writer.close()
        report = self._report(settings, bootstrap, self._store_users(home), live_since)
        report.cloud_grant = grant
        return report

    def _broker(self) -> str:
        if self.base.kafka_bootstrap:
            return self.base.kafka_bootstrap
        self.broker = LocalKafkaBroker.from_settings(self.base)
        already = self.broker.status().running
        with self.console.status("starting the local Kafka broker" if not already else "reusing the broker"):
            status = self.broker.up()
        self.started_broker = not already
        if not status.bootstrap:
            raise VudsyncError(
                "the local broker did not report its address", hint="see `vudsync kafka status`"
            )
        return status.bootstrap

    # -- progress -----------------------------------------------------------------------

    def _drain(self, label: str) -> None:
        """Wait, with a progress bar, until every planned operation is handled and nothing moves."""
        deadline = time.monotonic() + self.options.timeout
        stable_since: float | None = None
        last: tuple[float, ...] = ()
        seen = "nothing yet"
        with Progress(
            TextColumn(f"[bold]{label}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("operations applied"),
            TimeElapsedColumn(),
            console=self.console,
        ) as bar:
            task = bar.add_task(label, total=None)
            while time.monotonic() < deadline:
                assert self.workers is not None
                self.workers.check_alive()
                p = self.workers.progress()
                bar.update(task, total=max(p["planned"], 1), completed=p["handled"])
                seen = (
                    f"captured {p['captured']:.0f}, planned {p['planned']:.0f}, handled {p['handled']:.0f}, "
                    f"parked {p['parked']:.0f}, capture lag {p['capture_lag_seconds']:.1f}s"
                )
                now = (p["captured"], p["planned"], p["handled"])
                if settled(p) and now == last:
                    stable_since = stable_since or time.monotonic()
                    if time.monotonic() - stable_since >= 3.0:
                        return
                else:
                    stable_since = None
                last = now
                time.sleep(0.5)
        raise VudsyncError(
            f"{label}: the backlog did not drain within {self.options.timeout:.0f}s ({seen})",
            hint=f"look at the logs in {self.base.home / 'demo' / 'logs'}",
        )

    def _live_changes(self, writer: SqliteDirectoryWriter, users: list[dict[str, Any]]) -> None:
        rng = random.Random(11)
        n = self.options.changes
        renamed = rng.sample(users, min(len(users), n // 2))
        removed = rng.sample([u for u in users if u not in renamed], min(len(users) - len(renamed), n // 6))
        with self.console.status(f"making {n} live changes in the directory store"):
            for user in renamed:
                writer.update_user(user["id"], first_name=rng.choice(FIRST_NAMES))
            for user in removed:
                writer.delete_user(user["id"])
            for i in range(n - len(renamed) - len(removed)):
                writer.upsert_user(
                    id=f"n{i:05d}",
                    username=f"ny.bruker.{i}",
                    email=f"ny.bruker.{i}@fjord.no",
                    first_name="Solveig",
                    last_name="Ærø",
                )

    def _cloud_grant(self, writer: SqliteDirectoryWriter) -> CloudGrant:
        """An administrator grants a Business role in the cloud (its portal: another OAuth client
        than vudsync's) to a user of the directory; wait until the directory store holds it, then
        until the pipeline is quiet again, and count what vudsync wrote in the cloud since (an
        echo of the writeback would be such a write)."""
        assert self.cloud is not None and self.workers is not None
        row = writer.conn.execute(
            "SELECT u.id, u.username, c.id, c.name FROM access a JOIN users u ON u.id = a.user_id "
            "JOIN companies c ON c.id = a.company_id WHERE a.application = 'business' "
            "ORDER BY u.id, c.id LIMIT 1"
        ).fetchone()
        if row is None:
            raise VudsyncError("no user with Business access in the sample", hint="seed more users")
        uid, username, cid, company_name = (str(v) for v in row)
        held = {r[3] for r in writer.access_rows(uid) if r[0] == cid and r[1:3] == ("business", "role")}
        role = next(r for r in CATALOGUE["business"]["roles"] if r not in held)
        entry = ("business", "role", role)
        api = httpx.Client(base_url=self.cloud.url, headers=self.cloud.auth_headers(), timeout=30)
        portal = self.cloud.portal(f"demo-portal-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex)
        try:
            user = api.get("/v1/users", params={"external_id": uid}).json()["items"][0]
            company = api.get("/v1/companies", params={"external_id": cid}).json()["items"][0]
            with self.console.status(
                f"an administrator grants {role} to {username} in {company_name} in the cloud"
            ):
                before, audit_seq = writer.change_log_position(), _audit(api)[-1]["seq"]
                sent = time.monotonic()
                portal.put(
                    f"/v1/users/{user['id']}/access/{company['id']}/business/roles/{role}"
                ).raise_for_status()
                deadline = sent + self.options.timeout
                while (origin := _origin(writer, uid, cid, entry)) is None:
                    self.workers.check_alive()
                    if time.monotonic() > deadline:
                        raise VudsyncError(
                            f"the administrator's grant of {role} did not reach the directory store "
                            f"within {self.options.timeout:.0f}s",
                            hint=f"see the cloud-capture and directory-sink logs in {self.workers.log_dir}",
                        )
                    time.sleep(0.05)
                seconds = time.monotonic() - sent
            self._drain("writeback settles")  # an echo would be captured, planned and applied by now
            # an echo would be a write of vudsync's own client to this user (its access): the
            # live phase's held deletions of other users may still settle meanwhile, and count not
            ours = [
                a
                for a in _audit(api, audit_seq)
                if a["client_id"] == self.cloud.client_id and str(a["resource_id"]).startswith(user["id"])
            ]
        finally:
            portal.close()
            api.close()
        return CloudGrant(
            user=f"{uid} ({username})",
            company=f"{cid} ({company_name})",
            role=role,
            seconds=seconds,
            store_origin=origin,
            change_log_rows=len(writer.change_log_origins(uid, before)),
            cloud_writes=len(ours),
        )

    # -- summary ------------------------------------------------------------------------

    @staticmethod
    def _store_users(home: Path) -> int:
        w = SqliteDirectoryWriter(home / "directory.db")
        try:
            return int(w.conn.execute("SELECT COUNT(*) FROM users").fetchone()[0])
        finally:
            w.close()

    def _report(self, settings: Settings, bootstrap: str, sample_users: int, live_since: float) -> DemoReport:
        assert self.workers is not None
        m = self.workers.scrape()
        report = DemoReport(
            captured=total(m["producer"], "vudsync_source_changes_captured_total"),
            planned=total(m["planner"], "vudsync_operations_planned_total"),
            applied=total(m["sink"], "vudsync_sink_operations_total", outcome="applied"),
            already_applied=total(m["sink"], "vudsync_sink_operations_total", outcome="already_applied"),
            stale_or_redelivered=total(m["planner"], "vudsync_planner_events_total", outcome="stale")
            + total(m["planner"], "vudsync_planner_events_total", outcome="redelivered"),
            dead_lettered=total(m["sink"], "vudsync_sink_operations_total", outcome="dead_lettered"),
            parked_now=total(m["planner"], "vudsync_parked_operations"),
            users_in_store=sample_users,
            metrics_urls=self.workers.metrics_urls,
        )
        latencies = applied_latencies(
            bootstrap, settings.topic(RESULTS.name), security=settings.kafka_security()
        )
        report.latencies = sorted(seconds for _, seconds in latencies)
        report.live_latencies = sorted(seconds for committed, seconds in latencies if committed >= live_since)
        assert self.cloud is not None
        with httpx.Client(base_url=self.cloud.url, headers=self.cloud.auth_headers(), timeout=10) as client:
            response = client.get("/v1/users", params={"limit": 10_000})
            response.raise_for_status()
            items = response.json()["items"]
        report.users_in_cloud = sum(1 for u in items if u.get("active"))
        return report


def _origin(writer: SqliteDirectoryWriter, uid: str, cid: str, entry: tuple[str, str, str]) -> str | None:
    """The origin of the user's access row ``entry`` in company ``cid``; None while not held."""
    return next((r[4] for r in writer.access_rows(uid) if r[0] == cid and r[1:4] == entry), None)


def _audit(api: httpx.Client, after_seq: int = 0) -> list[dict[str, Any]]:
    """The cloud's audit rows after ``after_seq`` (``GET /v1/audit``, every page)."""
    rows: list[dict[str, Any]] = []
    while True:
        page = api.get("/v1/audit", params={"after_seq": after_seq, "limit": 1000})
        page.raise_for_status()
        items = page.json()["items"]
        if not items:
            return rows
        rows.extend(items)
        after_seq = page.json()["next_after_seq"]


def render(report: DemoReport, console: Console) -> None:
    table = Table(title="vudsync demo — summary", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    d = report.as_dict()
    rows = [
        ("changes captured", d["captured"]),
        ("operations planned", d["planned"]),
        ("operations applied", d["applied"]),
        ("duplicates avoided", d["duplicates_avoided"]),
        ("dead-lettered", d["dead_lettered"]),
        ("parked (waiting)", d["parked"]),
        ("active users: store / cloud", f"{d['users_in_store']} / {d['users_in_cloud']}"),
        (
            "end-to-end p50 / p99, all (incl. snapshot backlog)",
            f"{_secs(d['end_to_end_p50_seconds'])} / {_secs(d['end_to_end_p99_seconds'])}",
        ),
        (
            f"end-to-end p50 / p99, live changes ({d['live_changes_applied']} ops)",
            f"{_secs(d['live_end_to_end_p50_seconds'])} / {_secs(d['live_end_to_end_p99_seconds'])}",
        ),
        ("elapsed", f"{d['elapsed_seconds']} s"),
    ]
    grant = report.cloud_grant
    if grant is not None:  # the writeback: cloud → directory
        rows += [
            (
                f"cloud grant by an administrator: {grant.role} to {grant.user} in {grant.company}",
                f"in the store after {grant.seconds * 1000:.0f} ms",
            ),
            (
                "  store row origin / change-log rows / vudsync writes in the cloud (echo)",
                f"{grant.store_origin} / {grant.change_log_rows} / {grant.cloud_writes}",
            ),
        ]
    for what, value in rows:
        table.add_row(what, str(value))
    console.print(table)
    for name, url in report.metrics_urls.items():
        console.print(f"metrics of the {name}: {url}")


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f} ms"
