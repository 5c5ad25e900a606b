"""``vudsync bench writeback``: how fast an administrator's grant in the cloud reaches Kafka.

The capture half of writeback (issue 16, cloud → directory); the planner and the directory
sink's half is measured store-side by their own bench.

1. A reference cloud (``CloudServer``), a broker (the settings', ``--bootstrap``, or one of the
   bench's own), a fresh SQLite store (the cursor's place) and ``vudsync run cloud-capture`` as
   a child process, as an operator starts it. ``--users`` linked users and one linked company
   are created through the integration's client, then capture's first full read finishes.
2. **Paced** (latency): an administrator (a second OAuth client) grants ``--paced`` roles, one
   user each, ``--rate`` grants per second. Latency of a grant = the moment a consumer of
   ``vud.cloud.changes`` receives the event holding it minus the moment the grant's request
   was *sent* (so the cloud's own write time counts against capture; the consumer's fetch wait
   is 50 ms at most).
3. **Burst** (throughput): ``--burst`` grants at once through ``POST /v1/batch``; grants/s =
   grants / (last event received - first batch sent); CPU seconds of the cloud-capture process
   per grant (``/proc``), beside the cloud's.

Idle, capture polls every ``VUDSYNC_WRITEBACK_POLL_INTERVAL`` (``--poll-interval``, default
1 s): a grant made just after a poll waits for the next, so the paced latency is about half the
interval plus the work. The load average is reported before and after (the machine is shared).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click
import httpx

from devtools.bench import bench_broker, bench_settings, emit, latency_figures, process_cpu_seconds

EXAMPLE = "vudsync bench writeback --users 3000 --paced 200 --rate 20 --burst 2000"
PORTAL = ("bench-portal-admin", "bench-portal-admin-secret")
ROLE = "Lønn"


def _say(message: str) -> None:
    click.echo(message, err=True)


class _Receiver:
    """Reads ``vud.cloud.changes`` from its beginning in a thread: the first time an event of
    each user holds ``ROLE``."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer

        self._consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=50,
        )
        self.seen: dict[str, float] = {}
        self.records = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from schemas.cloud_changes import CloudAccessChanged

        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=100).values():
                now = time.time()
                for record in records:
                    self.records += 1
                    event = CloudAccessChanged.model_validate_json(record.value)
                    if event.user_id not in self.seen and any(e.name == ROLE for e in event.entries):
                        self.seen[event.user_id] = now

    def wait_for(self, users: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(u in self.seen for u in users):
            if time.monotonic() > deadline:
                missing = sum(u not in self.seen for u in users)
                raise click.ClickException(f"{missing} grants not published within {timeout:.0f}s")
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


def _batches(api: httpx.Client, requests: list[dict[str, Any]]) -> None:
    for i in range(0, len(requests), 500):
        answer = api.post("/v1/batch", json={"requests": requests[i : i + 500]})
        answer.raise_for_status()
        failed = [r["status"] for r in answer.json()["responses"] if r["status"] >= 300]
        if failed:
            raise click.ClickException(f"the cloud refused {len(failed)} setup writes: {failed[:3]}")


def _cursor_saved(store: Path) -> bool:
    conn = sqlite3.connect(store, timeout=30)
    try:
        row = conn.execute("SELECT cursor FROM capture_checkpoint WHERE name = 'cloud-capture'").fetchone()
        return row is not None and row[0] is not None
    finally:
        conn.close()


def run_bench(
    users: int,
    paced: int,
    rate: float,
    burst: int,
    poll_interval: float,
    bootstrap: str | None,
    timeout: float,
) -> dict[str, Any]:
    from cloud.server import CloudServer
    from devtools.processes import ComponentProcess, component_env, wait_until
    from producers.service import open_store_migrations
    from schemas.topics import CLOUD_CHANGES
    from vudsync.topics import ensure_catalogue

    if paced + burst > users:
        raise click.BadParameter("--paced + --burst must not exceed --users (one grant per user)")
    load_before = [round(x, 2) for x in os.getloadavg()]
    home = Path(tempfile.mkdtemp(prefix="vudsync-bench-writeback-"))
    failed = True
    try:
        with bench_broker(bootstrap, home=home) as (broker, broker_pid):
            store = home / "directory.db"
            open_store_migrations(f"sqlite:///{store}")
            with CloudServer(db_path=home / "cloud.db", extra_args=("--log-level", "warning")) as cloud:
                settings = bench_settings(home, broker, f"sqlite:///{store}", cloud)
                ensure_catalogue(settings, broker)
                _say(f"creating {users:,} linked users and a company in the cloud")
                api = httpx.Client(base_url=cloud.url, headers=cloud.auth_headers(), timeout=60)
                api.put(f"/v1/services/business/roles/{ROLE}", json={"description": ROLE}).raise_for_status()
                company = api.post(
                    "/v1/companies",
                    json={"external_id": "c1", "name": "Bench AS", "organisation_number": "923609016"},
                ).json()["id"]
                _batches(
                    api,
                    [
                        {
                            "method": "POST",
                            "path": "/v1/users",
                            "body": {"external_id": f"u{n}", "email": f"u{n}@b.no"},
                        }
                        for n in range(users)
                    ],
                )
                cloud_ids: dict[str, str] = {}
                after: int | None = 0
                while after is not None:
                    page = api.get("/v1/users", params={"limit": 10_000, "after": after}).json()
                    cloud_ids.update({u["external_id"]: u["id"] for u in page["items"]})
                    after = page["next_after"]
                httpx.post(
                    f"{cloud.url}/admin/clients",
                    headers=cloud.admin_headers(),
                    json={"client_id": PORTAL[0], "client_secret": PORTAL[1], "is_customer_admin": True},
                ).raise_for_status()
                token = cloud.token(client_id=PORTAL[0], client_secret=PORTAL[1])
                portal = httpx.Client(
                    base_url=cloud.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
                )

                env = component_env(settings, broker, VUDSYNC_WRITEBACK_POLL_INTERVAL=str(poll_interval))
                capture = ComponentProcess(
                    "cloud-capture", ["run", "cloud-capture"], env=env, log_dir=home / "logs"
                )
                receiver = _Receiver(broker, settings.topic(CLOUD_CHANGES.name))
                capture.start()
                try:
                    started = time.monotonic()
                    wait_until(
                        lambda: capture.alive() and _cursor_saved(store), timeout, what="first full read"
                    )
                    full_read_s = time.monotonic() - started

                    def path(user: str) -> str:
                        return f"/v1/users/{cloud_ids[user]}/access/{company}/business/roles/{ROLE}"

                    _say(f"paced: {paced} grants at {rate}/s (poll interval {poll_interval}s)")
                    sent: dict[str, float] = {}
                    paced_users = [f"u{n}" for n in range(paced)]
                    t0 = time.monotonic()
                    for i, user in enumerate(paced_users):
                        delay = t0 + i / rate - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)  # pacing the load, not waiting for a result
                        sent[user] = time.time()
                        portal.put(path(user)).raise_for_status()
                    receiver.wait_for(paced_users, timeout)
                    latencies = [receiver.seen[u] - sent[u] for u in paced_users]

                    _say(f"burst: {burst} grants through POST /v1/batch")
                    burst_users = [f"u{n}" for n in range(paced, paced + burst)]
                    cpu_before = process_cpu_seconds(capture.pid or 0) or 0.0
                    cloud_cpu_before = process_cpu_seconds(cloud.pid) or 0.0
                    first_sent = time.time()
                    requests = [{"method": "PUT", "path": path(u)} for u in burst_users]
                    for i in range(0, len(requests), 500):
                        portal.post("/v1/batch", json={"requests": requests[i : i + 500]}).raise_for_status()
                    writes_done = time.time()
                    receiver.wait_for(burst_users, timeout)
                    last_seen = max(receiver.seen[u] for u in burst_users)
                    capture_cpu = (process_cpu_seconds(capture.pid or 0) or 0.0) - cpu_before
                    cloud_cpu = (process_cpu_seconds(cloud.pid) or 0.0) - cloud_cpu_before
                    burst_latencies = [receiver.seen[u] - first_sent for u in burst_users]
                finally:
                    capture.stop()
                    receiver.close()
                    portal.close()
                    api.close()
        failed = False
    finally:
        if failed:
            _say(f"failed: logs kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    elapsed = last_seen - first_sent
    return {
        "benchmark": "writeback capture",
        "command": f"vudsync bench writeback --users {users} --paced {paced} --rate {rate} --burst {burst} "
        f"--poll-interval {poll_interval}",
        "broker": "started by the bench" if broker_pid else "given (--bootstrap or the settings)",
        "first_full_read_s": round(full_read_s, 2),
        "paced": {"grants": paced, "rate_per_s": rate, **latency_figures(latencies)},
        "burst": {
            "grants": burst,
            "cloud_writes_s": round(writes_done - first_sent, 2),
            "all_published_s": round(elapsed, 2),
            "grants_per_s": round(burst / elapsed, 1) if elapsed > 0 else None,
            "from_first_write_p50_ms": round(1000 * sorted(burst_latencies)[len(burst_latencies) // 2], 1),
            "capture_cpu_ms_per_grant": round(1000 * capture_cpu / burst, 3),
            "cloud_cpu_ms_per_grant": round(1000 * cloud_cpu / burst, 3),
        },
        "events_received": receiver.records,
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
    }


@click.command("writeback", epilog=f"\b\nExample:\n    {EXAMPLE}")
@click.option("--users", type=click.IntRange(1), default=3000, show_default=True, help="linked cloud users")
@click.option(
    "--paced", type=click.IntRange(1), default=200, show_default=True, help="grants sent one by one"
)
@click.option(
    "--rate", type=click.FloatRange(0.1), default=20.0, show_default=True, help="paced grants per second"
)
@click.option("--burst", type=click.IntRange(1), default=2000, show_default=True, help="grants sent at once")
@click.option(
    "--poll-interval",
    type=click.FloatRange(0.01),
    default=1.0,
    show_default=True,
    help="capture's idle poll (s)",
)
@click.option(
    "--bootstrap", default=None, help="an existing broker (default: the settings', else the bench's own)"
)
@click.option("--timeout", type=float, default=300.0, show_default=True, help="give up a phase after (s)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def command(
    users: int,
    paced: int,
    rate: float,
    burst: int,
    poll_interval: float,
    bootstrap: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Writeback, capture half: an administrator's grants in the cloud → events on vud.cloud.changes
    (latency p50/p99 paced, grants/s in a burst)."""
    emit(run_bench(users, paced, rate, burst, poll_interval, bootstrap, timeout), as_json)
