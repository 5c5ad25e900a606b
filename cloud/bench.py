"""``python -m cloud.bench``: write throughput of the cloud API, one client, over HTTP.

Starts its own server (subprocess, temporary database), then times N single writes
(``POST /v1/users`` with an Idempotency-Key, one keep-alive connection) and N writes
as batches of ``--batch`` items. Prints one JSON line, with the machine's core count and
load average: the client runs on the same cores as the server, so the rates depend on
what else runs. The server's CPU time per operation (from ``/proc``, Linux) depends much
less on that: compare those across runs on a busy machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
import uuid
from pathlib import Path

import httpx

from cloud.server import CloudServer


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (0 where ``/proc`` is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _user(i: int, run: str) -> dict[str, str]:
    return {"email": f"bench-{run}-{i}@example.no", "username": f"u{i}"}


def run(
    n: int, batch: int, synchronous: str, loop: str = "auto", http: str = "auto", direct: bool = True
) -> dict[str, float | int | str | bool]:
    load_before = os.getloadavg()[0]
    args = ("--synchronous", synchronous, "--log-level", "warning", "--loop", loop, "--http", http)
    cloud = CloudServer(extra_args=args if direct else (*args, "--no-direct"))
    with cloud, httpx.Client(base_url=cloud.url, headers=cloud.auth_headers(), timeout=60) as api:
        tag = uuid.uuid4().hex[:8]
        cpu, started = _cpu_seconds(cloud.pid), time.perf_counter()
        for i in range(n):
            response = api.post("/v1/users", json=_user(i, tag), headers={"Idempotency-Key": f"{tag}-{i}"})
            assert response.status_code == 201, response.text
        single = n / (time.perf_counter() - started)
        single_cpu = (_cpu_seconds(cloud.pid) - cpu) / n

        tag = uuid.uuid4().hex[:8]
        cpu, started = _cpu_seconds(cloud.pid), time.perf_counter()
        for first in range(0, n, batch):
            items = [
                {
                    "idempotency_key": f"{tag}-{i}",
                    "method": "POST",
                    "path": "/v1/users",
                    "body": _user(i, tag),
                }
                for i in range(first, min(n, first + batch))
            ]
            response = api.post("/v1/batch", json={"requests": items})
            assert response.status_code == 200, response.text
            assert all(r["status"] == 201 for r in response.json()["responses"])
        batched = n / (time.perf_counter() - started)
        batch_cpu = (_cpu_seconds(cloud.pid) - cpu) / n
    cloud.cleanup()
    return {
        "writes": n,
        "batch_size": batch,
        "synchronous": synchronous,
        "loop": loop,
        "http": http,
        "direct": direct,
        "single_requests_per_second": round(single, 1),
        "batch_ops_per_second": round(batched, 1),
        "server_cpu_us_per_single_request": round(single_cpu * 1e6),
        "server_cpu_us_per_batch_op": round(batch_cpu * 1e6),
        "cpus": os.cpu_count() or 0,
        "load_average": f"{load_before:.2f} → {os.getloadavg()[0]:.2f}",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cloud.bench", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="writes per mode")
    parser.add_argument("--batch", type=int, default=100, help="items per batch (max 500)")
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto")
    parser.add_argument("--no-direct", dest="direct", action="store_false", help="the server's --no-direct")
    args = parser.parse_args()
    result = run(args.n, args.batch, args.synchronous, args.loop, args.http, args.direct)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
