"""``vudsync bench writeback``: how fast an administrator's grants and revokes in the cloud reach
the directory store — the whole writeback path (issue 16, cloud → directory).

Every part runs as its own process, as an operator starts them: the broker (the settings',
``--bootstrap``, or one of the bench's own), the reference cloud API (``CloudServer``), and
``vudsync run producer | planner | sink | cloud-capture | directory-sink``
(:class:`devtools.processes.PipelineWorkers` with ``writeback``) on a fresh SQLite store, or the
empty PostgreSQL database ``--store-url`` names.

1. **Setup** (not measured): the store holds ``--users`` users with a Business role in one
   company and the role the administrator will grant; the pipeline syncs them to the cloud
   (the planner then knows them linked) and cloud-capture follows the feed.
2. **Paced grants** (latency): an administrator (a second OAuth client) grants ``--paced`` users
   the role, one request each, ``--rate`` per second.
3. **Burst of grants** (throughput): ``--burst`` more grants at once through ``POST /v1/batch``;
   grants applied per second = grants / (last store commit - first cloud commit); CPU seconds per
   grant of each process on the path (``/proc``), the producer's included (it captures the
   directory sink's writes, which the planner then recognises as its own).
4. **Revokes, one at a time** (latency): the administrator revokes the role of ``--revokes``
   paced users, each once the one before it is in the store.
5. **Burst of revokes** (throughput): the burst's users' grants revoked at once, as in 3.

Grants and revokes are reported apart because a revoke waits for a policy, not for the path:
every store revoke passes the accidental-delete gate, which holds a deletion until none has
reached it for ``planner_deletes_settle`` seconds (5 s by default) and grants the settled window
whole. So a revoke's latency is reported **as measured** and **minus the configured settle**
(the path's own share, plus up to one gate tick, 1 s); revokes one at a time keep each revoke
alone in its window (a paced stream of revokes would keep the window open: the first would wait
for the last). A burst of revokes waits for one settle. The bench lifts the gate's threshold to
the number of revokes it makes (a window over it is held whole for an operator: the bench
measures the path, not an approval); the settle stays at the settings' value.

Latency = the commit in the store (``directory_operations_applied.applied_at``) minus the commit
in the cloud (the feed item's time, carried as ``cloud_changed_at``), split into stages by what
the path records on the way: **capture** (cloud commit → the event's timestamp on
``vud.cloud.changes``, set when cloud-capture publishes it), **plan** (→ the operation's
``planned_at``), **gate** (→ the operation's timestamp on ``vud.directory.operations``: for a
revoke the gate's wait, for a grant only the send) and **apply** (→ the store's commit). Every
grant and revoke must be applied exactly once; a missing one fails the run.

Idle, cloud-capture polls every ``VUDSYNC_WRITEBACK_POLL_INTERVAL`` (``--poll-interval``, default
1 s, the component's default): a change made just after a poll waits for the next, so capture's
share is about half the interval plus the work. The load average is reported before and after
(the machine is shared).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import httpx

from devtools.bench import (
    bench_broker,
    bench_settings,
    bench_target,
    emit,
    latency_figures,
    percentile,
    process_cpu_seconds,
    topic_reader,
)

if TYPE_CHECKING:
    from devtools.processes import PipelineWorkers
    from devtools.seed.writer import DirectoryWriter
    from kernel.settings import Settings

EXAMPLE = "vudsync bench writeback --users 1000 --paced 200 --rate 10 --burst 500 --revokes 10"
PORTAL = ("bench-portal-admin", "bench-portal-admin-secret")
BASE, ROLE = "Regnskap", "Lønn"  # every user holds BASE on premise; the administrator grants ROLE
STAGES = ("capture", "plan", "gate", "apply")
#: the points of a change's path, in order (see the module docstring)
POINTS = ("cloud", "published", "planned", "sent", "applied")
#: CPU per grant of each; the producer's too: it captures the directory sink's write (the
#: change-log row of origin cloud) and the planner recognises it as its own (no echo)
MEASURED = ("cloud", "cloud-capture", "planner", "directory-sink", "producer")


def _say(message: str) -> None:
    click.echo(message, err=True)


def _seed(writer: DirectoryWriter, users: int) -> None:
    """``users`` users, each with ``BASE`` in company c1; both roles in the catalogue."""
    with writer.transaction():
        writer.upsert_catalogue("roles", [("business", r, r) for r in (BASE, ROLE)])
        writer.upsert_companies([{"id": "c1", "name": "Bench AS", "organisation_number": "923609016"}])
        writer.upsert_users(
            {"id": f"u{n}", "username": f"bruker{n}", "email": f"u{n}@b.no", "first_name": "Åse",
             "last_name": "Berg"}
            for n in range(users)
        )  # fmt: skip
        writer.grant([(f"u{n}", "c1", "business", "role", BASE) for n in range(users)])


def _rows(writer: DirectoryWriter, sql: str, *args: str) -> list[tuple[Any, ...]]:
    """A read of the store, on the writer's connection (autocommit: each read sees every commit)."""
    return [tuple(r) for r in writer.conn.execute(sql.replace("?", writer.placeholder), args).fetchall()]


def _granted(writer: DirectoryWriter) -> int:
    """Rows of ``ROLE`` the directory sink wrote (origin cloud)."""
    return int(_rows(writer, "SELECT COUNT(*) FROM access WHERE origin = 'cloud' AND name = ?", ROLE)[0][0])


def _wait(what: str, condition: Callable[[], bool], alive: Callable[[], None], timeout: float) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` s or when a worker dies."""
    from devtools.processes import wait_until

    def reached() -> bool:
        alive()
        return condition()

    try:
        wait_until(reached, timeout, interval=0.2, what=what)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None


def _cloud_ids(api: httpx.Client) -> dict[str, str]:
    """External id → cloud id of every cloud user."""
    ids: dict[str, str] = {}
    after: int | None = 0
    while after is not None:
        page = api.get("/v1/users", params={"limit": 10_000, "after": after}).json()
        ids.update({u["external_id"]: u["id"] for u in page["items"] if u.get("external_id")})
        after = page["next_after"]
    return ids


def _timestamps(
    broker: str, settings: Settings, writer: DirectoryWriter
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per user granted ``ROLE``, and per user whose ``ROLE`` was revoked: the Unix times of the
    change at each point of :data:`POINTS` — ``cloud`` (committed in the cloud), ``published``
    (on ``vud.cloud.changes``), ``planned``, ``sent`` (on ``vud.directory.operations``: after the
    gate for a revoke), ``applied`` (committed in the store). A change that did not get that far
    lacks the key."""
    from schemas.cloud_changes import CloudAccessChanged
    from schemas.codec import decode_cloud_change
    from schemas.directory_operations import (
        DIRECTORY_OPERATION_ADAPTER,
        GrantDirectoryAccess,
        RevokeDirectoryAccess,
    )
    from schemas.topics import CLOUD_CHANGES, DIRECTORY_OPERATIONS

    published: dict[tuple[str, int], float] = {}
    security = settings.kafka_security()
    reader = topic_reader(broker, settings.topic(CLOUD_CHANGES.name), security=security)
    try:
        for record in reader:
            event = decode_cloud_change(record.value)
            if not isinstance(event, CloudAccessChanged):
                continue  # a full read's end-of-read marker: no change of its own
            published.setdefault((event.user_id, event.feed_seq), record.timestamp / 1000)
    finally:
        reader.close()
    applied = dict(_rows(writer, "SELECT operation_id, applied_at FROM directory_operations_applied"))
    grants: dict[str, dict[str, float]] = {}
    revokes: dict[str, dict[str, float]] = {}
    reader = topic_reader(broker, settings.topic(DIRECTORY_OPERATIONS.name), security=security)
    try:
        for record in reader:
            op = DIRECTORY_OPERATION_ADAPTER.validate_json(record.value)
            if isinstance(op, GrantDirectoryAccess):
                out = grants
            elif isinstance(op, RevokeDirectoryAccess):
                out = revokes
            else:
                continue
            if op.name != ROLE or op.user_id in out:
                continue
            times = {
                "cloud": op.cloud_changed_at.timestamp(),
                "planned": op.planned_at.timestamp(),
                "sent": record.timestamp / 1000,
            }
            if (op.user_id, op.feed_seq) in published:
                times["published"] = published[(op.user_id, op.feed_seq)]
            if op.operation_id in applied:
                times["applied"] = float(applied[op.operation_id])
            out[op.user_id] = times
    finally:
        reader.close()
    return grants, revokes


def stage_figures(times: Iterable[dict[str, float]], *, minus: float | None = None) -> dict[str, Any]:
    """End-to-end latency (cloud commit → store commit) and each stage's p50/p99 in ms, and the
    stage with the largest median share ("dominant"). ``minus``: also the latency less that
    many seconds (a revoke's configured settle), as ``minus_settle``. Pure."""
    rows = [t for t in times if set(POINTS) <= set(t)]
    between = zip(STAGES, POINTS[:-1], POINTS[1:], strict=True)
    spans = {stage: [t[b] - t[a] for t in rows] for stage, a, b in between}
    stages = {
        name: {"p50_ms": round(1000 * percentile(v, 0.5), 1), "p99_ms": round(1000 * percentile(v, 0.99), 1)}
        for name, v in spans.items()
    }
    latencies = [t["applied"] - t["cloud"] for t in rows]
    figures: dict[str, Any] = {"count": len(rows), **latency_figures(latencies)}
    if minus is not None:
        figures["minus_settle"] = latency_figures([x - minus for x in latencies])
    return {
        **figures,
        "stages": stages,
        "dominant_stage": max(STAGES, key=lambda s: stages[s]["p50_ms"]) if rows else None,
    }


def _quiet(workers: PipelineWorkers) -> Callable[[], bool]:
    """A condition: the pipeline settled (:func:`devtools.processes.settled`) and its counters,
    cloud-capture's included, unchanged over the last 15 calls (3 s at :func:`_wait`'s pace)."""
    from devtools.processes import settled

    last: list[tuple[float, ...]] = []

    def quiet() -> bool:
        p = workers.progress()
        now = (p["captured"], p["planned"], p["handled"], p["cloud_changes_published"])
        last[:] = [*last[-14:], now] if settled(p) else []
        return len(last) == 15 and len(set(last)) == 1

    return quiet


class _Administrator:
    """An administrator granting (``PUT``) or revoking (``DELETE``) ``ROLE`` in company c1 of users
    ``u<n>`` through the portal."""

    def __init__(self, api: httpx.Client, portal: httpx.Client, users: int) -> None:
        self.portal = portal
        self.ids = _cloud_ids(api)
        if len(self.ids) < users:
            raise click.ClickException(f"only {len(self.ids)} of {users} users reached the cloud")
        self.company = api.get("/v1/companies", params={"external_id": "c1"}).json()["items"][0]["id"]

    def path(self, n: int) -> str:
        return f"/v1/users/{self.ids[f'u{n}']}/access/{self.company}/business/roles/{ROLE}"

    def paced(self, users: range, rate: float) -> None:
        """One grant per request, ``rate`` per second."""
        t0 = time.monotonic()
        for i, n in enumerate(users):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the load, not waiting for a result
            self.portal.put(self.path(n)).raise_for_status()

    def revoke(self, n: int) -> None:
        self.portal.delete(self.path(n)).raise_for_status()

    def burst(self, users: range, method: str = "PUT") -> None:
        """Every grant (or revoke: ``DELETE``) at once, 500 per ``POST /v1/batch``."""
        requests = [{"method": method, "path": self.path(n)} for n in users]
        for i in range(0, len(requests), 500):
            answer = self.portal.post("/v1/batch", json={"requests": requests[i : i + 500]})
            answer.raise_for_status()
            refused = [r["status"] for r in answer.json()["responses"] if r["status"] >= 300]
            if refused:
                raise click.ClickException(f"the cloud refused {len(refused)} of the batch: {refused[:3]}")


def run_bench(
    users: int,
    paced: int,
    rate: float,
    burst: int,
    revokes: int,
    poll_interval: float,
    bootstrap: str | None,
    timeout: float,
    store_url: str | None = None,
) -> dict[str, Any]:
    from cloud.server import CloudServer
    from devtools.processes import PipelineWorkers
    from devtools.seed.writer import open_writer
    from vudsync.commands.connect import run_connect
    from vudsync.topics import ensure_catalogue

    if paced + burst > users:
        raise click.BadParameter("--paced + --burst must not exceed --users (one grant per user)")
    if revokes > paced:
        raise click.BadParameter("--revokes must not exceed --paced (it revokes paced grants)")
    load_before = [round(x, 2) for x in os.getloadavg()]
    home = Path(tempfile.mkdtemp(prefix="vudsync-bench-writeback-"))
    url = store_url or f"sqlite:///{home / 'directory.db'}"
    store = open_writer(url)  # migrates the store
    failed = True
    try:
        with bench_broker(bootstrap, home=home) as (broker, broker_pid):
            _say(f"seeding {users:,} users with a Business role in one company ({url.split(':')[0]})")
            _seed(store, users)
            with CloudServer(db_path=home / "cloud.db", extra_args=("--log-level", "warning")) as cloud:
                settings = bench_settings(home, broker, url, cloud)
                target = bench_target(broker, broker_pid)
                if target.cluster is not None and target.cluster.secure:
                    target.cluster.grant(settings)
                settings = settings.with_kafka_security(target.security("ops"))
                settle = settings.planner_deletes_settle
                ensure_catalogue(settings, broker)
                run_connect(settings, broker, snapshot=False)
                workers = PipelineWorkers(
                    settings,
                    broker,
                    home / "logs",
                    target.security,
                    writeback=True,
                    VUDSYNC_WRITEBACK_POLL_INTERVAL=str(poll_interval),
                    # every revoke the bench makes passes; the settle is the settings' own
                    VUDSYNC_PLANNER_DELETES_THRESHOLD=str(revokes + burst),
                    VUDSYNC_PLANNER_DELETES_SETTLE=str(settle),
                )
                api = httpx.Client(base_url=cloud.url, headers=cloud.auth_headers(), timeout=60)
                portal = cloud.portal(*PORTAL, timeout=60)
                try:
                    _say(f"initial sync of the store to the cloud, five workers (logs in {home / 'logs'})")
                    started = time.monotonic()
                    workers.start()
                    _wait("the initial sync", _quiet(workers), workers.check_alive, timeout)
                    setup_s = time.monotonic() - started
                    admin = _Administrator(api, portal, users)
                    _say(f"paced: {paced} grants at {rate}/s (poll interval {poll_interval}s)")
                    admin.paced(range(paced), rate)
                    _wait("every paced grant in the store", lambda: _granted(store) >= paced,
                          workers.check_alive, timeout)  # fmt: skip
                    _say(f"burst: {burst} grants through POST /v1/batch")
                    pids = {**workers.pids, "cloud": cloud.pid}
                    cpu_before = {n: process_cpu_seconds(pids[n]) or 0.0 for n in MEASURED}
                    admin.burst(range(paced, paced + burst))
                    _wait("every burst grant in the store", lambda: _granted(store) >= paced + burst,
                          workers.check_alive, timeout)  # fmt: skip
                    cpu = {n: (process_cpu_seconds(pids[n]) or 0.0) - cpu_before[n] for n in MEASURED}
                    _say(f"revokes: {revokes} one at a time (each waits the gate's {settle:g} s settle)")
                    for n in range(revokes):
                        admin.revoke(n)
                        held = paced + burst - n - 1
                        _wait(
                            f"revoke {n + 1} in the store",
                            lambda: _granted(store) <= held,  # noqa: B023
                            workers.check_alive,
                            timeout,
                        )  # called at once: held is this n's
                    _say(f"burst: {burst} revokes through POST /v1/batch")
                    cpu_before = {n: process_cpu_seconds(pids[n]) or 0.0 for n in MEASURED}
                    admin.burst(range(paced, paced + burst), "DELETE")
                    _wait("every burst revoke in the store", lambda: _granted(store) <= paced - revokes,
                          workers.check_alive, timeout)  # fmt: skip
                    revoke_cpu = {n: (process_cpu_seconds(pids[n]) or 0.0) - cpu_before[n] for n in MEASURED}
                    applied_once = int(
                        _rows(store, "SELECT COUNT(*) FROM directory_operations_applied")[0][0]
                    )
                finally:
                    workers.stop()
                    portal.close()
                    api.close()
                granted, revoked = _timestamps(broker, settings, store)
        failed = False
    finally:
        store.close()
        if failed:
            _say(f"failed: logs kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    _require("grants", granted, range(paced + burst))
    _require("revokes", revoked, [*range(revokes), *range(paced, paced + burst)])
    return {
        "benchmark": "writeback (whole path: cloud → cloud-capture → planner → directory sink → store)",
        "command": f"vudsync bench writeback --users {users} --paced {paced} --rate {rate} --burst {burst} "
        f"--revokes {revokes} --poll-interval {poll_interval}",
        "broker": "started by the bench" if broker_pid else "given (--bootstrap or the settings)",
        "kafka": target.describe(),
        "store": "postgresql" if store_url else "sqlite",
        "poll_interval_s": poll_interval,
        "setup_s": round(setup_s, 1),
        "grants": {
            "paced": {"rate_per_s": rate, **stage_figures(granted[f"u{n}"] for n in range(paced))},
            "burst": _burst_figures([granted[f"u{n}"] for n in range(paced, paced + burst)], cpu),
        },
        "revokes": {
            "gate": {
                "settle_s": settle,
                "threshold": revokes + burst,
                "note": "latency as measured, and minus_settle: less the configured settle (the "
                "gate's policy wait); the gate stage is that wait as it happened",
            },
            "one_at_a_time": stage_figures((revoked[f"u{n}"] for n in range(revokes)), minus=settle),
            "burst": _burst_figures(
                [revoked[f"u{n}"] for n in range(paced, paced + burst)], revoke_cpu, minus=settle
            ),
        },
        "store_writes": {
            "directory_operations_applied": applied_once,
            "grants": paced + burst,
            "revokes": revokes + burst,
        },
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
    }


def _require(what: str, times: dict[str, dict[str, float]], users: Iterable[int]) -> None:
    """Fail the run unless every one of ``users``' changes reached the store."""
    missing = [f"u{n}" for n in users if "applied" not in times.get(f"u{n}", {})]
    if missing:
        raise click.ClickException(f"{len(missing)} {what} not applied to the store: {missing[:5]}")


def _burst_figures(
    times: list[dict[str, float]], cpu: dict[str, float], *, minus: float | None = None
) -> dict[str, Any]:
    """A burst's latency and stages, how long until all were applied (first cloud commit → last
    store commit), changes applied per second, CPU ms per change; ``minus``: the same less a
    settle (a burst of revokes waits for one)."""
    elapsed = max(t["applied"] for t in times) - min(t["cloud"] for t in times)

    def rate(seconds: float) -> float | None:
        return round(len(times) / seconds, 1) if seconds > 0 else None

    figures = {
        **stage_figures(times, minus=minus),
        "all_applied_s": round(elapsed, 2),
        "applied_per_s": rate(elapsed),
        "cpu_ms_per_change": {n: round(1000 * c / len(times), 3) for n, c in cpu.items()},
    }
    if minus is not None:
        figures["all_applied_minus_settle_s"] = round(elapsed - minus, 2)
        figures["applied_per_s_minus_settle"] = rate(elapsed - minus)
    return figures


@click.command("writeback", epilog=f"\b\nExample:\n    {EXAMPLE}")
@click.option("--users", type=click.IntRange(1), default=1000, show_default=True, help="users on premise")
@click.option(
    "--paced", type=click.IntRange(1), default=200, show_default=True, help="grants sent one by one"
)
@click.option(
    "--rate", type=click.FloatRange(0.1), default=10.0, show_default=True, help="paced grants per second"
)
@click.option(
    "--burst", type=click.IntRange(1), default=500, show_default=True, help="grants at once, later revoked"
)
@click.option(
    "--revokes", type=click.IntRange(1), default=10, show_default=True, help="paced grants revoked one by one"
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(0.01),
    default=1.0,
    show_default=True,
    help="cloud-capture's idle poll of the feed (s; its default is 1)",
)
@click.option(
    "--bootstrap", default=None, help="an existing broker (default: the settings', else the bench's own)"
)
@click.option("--timeout", type=float, default=600.0, show_default=True, help="give up a phase after (s)")
@click.option("--store-url", default=None, help="an empty PostgreSQL store (default: a temporary SQLite one)")
@click.option("--json", "as_json", is_flag=True, help="print JSON (progress goes to stderr)")
def command(as_json: bool, **options: Any) -> None:
    """Writeback, the whole path: an administrator's grants and revokes in the cloud → the
    directory store, every part a process of its own (latency p50/p99 by stage; changes applied/s
    in a burst; CPU per change of each part). Revokes wait the accidental-delete gate's settle:
    their latency is given as measured and minus the configured settle."""
    emit(run_bench(**options), as_json)  # the options are run_bench's parameters, by name
