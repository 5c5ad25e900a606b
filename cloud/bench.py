"""``python -m cloud.bench``: write throughput of the cloud API, one client, over HTTP.

Starts its own server (subprocess, temporary database), then times N single writes
(``POST /v1/users`` with an Idempotency-Key, one keep-alive connection) and N writes
as batches of ``--batch`` items. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

import httpx

from cloud.server import CloudServer


def _user(i: int, run: str) -> dict[str, str]:
    return {"email": f"bench-{run}-{i}@example.no", "username": f"u{i}"}


def run(n: int, batch: int, synchronous: str) -> dict[str, float | int | str]:
    cloud = CloudServer(extra_args=("--synchronous", synchronous, "--log-level", "warning"))
    with cloud, httpx.Client(base_url=cloud.url, headers=cloud.auth_headers(), timeout=60) as api:
        tag = uuid.uuid4().hex[:8]
        started = time.perf_counter()
        for i in range(n):
            response = api.post("/v1/users", json=_user(i, tag), headers={"Idempotency-Key": f"{tag}-{i}"})
            assert response.status_code == 201, response.text
        single = n / (time.perf_counter() - started)

        tag = uuid.uuid4().hex[:8]
        started = time.perf_counter()
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
    cloud.cleanup()
    return {
        "writes": n,
        "batch_size": batch,
        "synchronous": synchronous,
        "single_requests_per_second": round(single, 1),
        "batch_ops_per_second": round(batched, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cloud.bench", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="writes per mode")
    parser.add_argument("--batch", type=int, default=100, help="items per batch (max 500)")
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    args = parser.parse_args()
    print(json.dumps(run(args.n, args.batch, args.synchronous)))


if __name__ == "__main__":
    main()
