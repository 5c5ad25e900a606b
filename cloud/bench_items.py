"""CPU per batch item of the cloud's direct path, in process: ``python -m cloud.bench_items``.

The sink benchmark's steady workload (user patches and access assignments on known users,
plus 20% catalogue upserts), in batches sent straight to
:meth:`cloud.direct.DirectDispatch.run_until_indirect`: no HTTP, no client, no Kafka. It
measures what a batch item costs the cloud beyond the request around it.

CPU time swings with the load of a shared machine; an instruction count does not. For that,
run it twice under callgrind with a different number of batches and divide the difference
by the difference in items (the set-up cancels out)::

    valgrind --tool=callgrind python -m cloud.bench_items --batches 1 --users 400
    valgrind --tool=callgrind python -m cloud.bench_items --batches 6 --users 400
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cloud.app import build_app
from cloud.models import BatchItem
from cloud.settings import DEFAULT_CLIENT_SECRET, CloudSettings

_ROLES = [f"Rolle-{i}" for i in range(5)]


def _items(batch: int, size: int, users: list[str], company: str) -> list[BatchItem]:
    items: list[BatchItem] = []
    body: dict[str, Any]
    for j in range(size):
        i = batch * size + j
        user = users[(i // 4) % len(users)]
        key = f"op-{batch}-{j}"
        if j % 5 == 4:
            path, body = f"/v1/services/business/roles/Ny-{i}", {"description": f"rolle {i}"}
            items.append(BatchItem(method="PUT", path=path, idempotency_key=key, body=body))
        elif i % 2:
            body = {"first_name": f"Navn {i}"}
            items.append(BatchItem(method="PATCH", path=f"/v1/users/{user}", idempotency_key=key, body=body))
        else:
            path = f"/v1/users/{user}/access/{company}"
            body = {"services": {"business": {"roles": [_ROLES[i % len(_ROLES)]]}}}
            items.append(BatchItem(method="PUT", path=path, idempotency_key=key, body=body))
    return items


def run(batches: int, size: int, n_users: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cloud-bench-items-") as folder:
        return _run_in(Path(folder), batches, size, n_users)


def _run_in(folder: Path, batches: int, size: int, n_users: int) -> dict[str, Any]:
    app = build_app(CloudSettings(db_path=folder / "cloud.db", secret_hash_iterations=1))
    direct = app.state.direct
    assert direct is not None, "direct dispatch is off"
    with TestClient(app) as client:
        token = client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "vudsync",
                "client_secret": DEFAULT_CLIENT_SECRET,
            },
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        for role in _ROLES:
            client.put(f"/v1/services/business/roles/{role}", json={"description": role}, headers=headers)
        company = client.post(
            "/v1/companies", json={"name": "Fjord AS", "organisation_number": "923609016"}, headers=headers
        ).json()["id"]
        users = [
            client.post("/v1/users", json={"email": f"bruker{i}@fjord.no"}, headers=headers).json()["id"]
            for i in range(n_users)
        ]
        parent = [(b"authorization", f"Bearer {token}".encode())]
        work = [_items(b, size, users, company) for b in range(batches)]
        statuses: dict[int, int] = {}
        cpu, wall = time.process_time(), time.perf_counter()
        for items in work:
            answers: list[dict[str, Any]] = []
            direct.run_until_indirect(parent, items, 0, answers)
            for answer in answers:
                statuses[answer["status"]] = statuses.get(answer["status"], 0) + 1
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = batches * size
    return {
        "items": n,
        "cpu_us_per_item": round(cpu / n * 1e6, 1),
        "wall_us_per_item": round(wall / n * 1e6, 1),
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cloud.bench_items", description=__doc__)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--size", type=int, default=200, help="items per batch (max 500)")
    parser.add_argument("--users", type=int, default=2000, help="users the items touch")
    args = parser.parse_args()
    print(json.dumps(run(args.batches, args.size, args.users)))


if __name__ == "__main__":
    main()
