"""``vudsync verify`` at 100,000 users: the mistake it prevents is the old single page of
10,000 — every user past it was reported "missing" (and repaired). The store is seeded with
the seed tooling, the cloud in bulk through ``POST /v1/batch``; how long verify takes at
this size is measured in docs/benchmarks.md, not asserted here."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from pydantic import SecretStr

from cloud.server import CloudServer
from devtools.secrets import with_run_secrets
from devtools.seed.data import make_company, make_user
from devtools.seed.writer import open_writer
from kernel.settings import Settings
from vudsync.ops.verify_runner import verify_once

USERS = 100_000
COMPANIES = 200
BATCH = 500


def _batches(items: list[dict[str, object]], path: str) -> Iterator[dict[str, object]]:
    for start in range(0, len(items), BATCH):
        yield {
            "requests": [
                {"method": "POST", "path": path, "body": item} for item in items[start : start + BATCH]
            ]
        }


def test_verify_at_100000_users_reports_no_drift_on_a_converged_cloud(
    tmp_path: Path, cloud_server: CloudServer
) -> None:
    rng = random.Random(3)
    companies = [make_company(rng, i + 1) for i in range(COMPANIES)]
    users = [make_user(rng, i + 1, ["fjord.no", "vik.no"]) for i in range(USERS)]
    store = tmp_path / "directory.db"
    writer = open_writer(f"sqlite:///{store}")
    with writer.transaction():
        writer.upsert_companies(companies)
        writer.upsert_users(users)
    writer.close()

    cloud_companies = [
        {
            "external_id": c["id"],
            "name": c["name"],
            "organisation_number": c["organisation_number"].replace(" ", ""),
            "country": c["country"],
        }
        for c in companies
    ]
    cloud_users = [
        {
            "external_id": u["id"],
            "email": u["email"],
            "username": u["username"],
            "first_name": u["first_name"],
            "last_name": u["last_name"],
            "language": u["language"],
        }
        for u in users
    ]
    with httpx.Client(base_url=cloud_server.url, headers=cloud_server.auth_headers(), timeout=120) as api:
        for body in [*_batches(cloud_companies, "/v1/companies"), *_batches(cloud_users, "/v1/users")]:
            answer = api.post("/v1/batch", json=body)
            answer.raise_for_status()
            assert all(r["status"] == 201 for r in answer.json()["responses"])

    settings = with_run_secrets(  # a random fingerprint key for this run
        Settings(
            home=tmp_path / "home",
            store_url=f"sqlite:///{store}",
            cloud_url=cloud_server.url,
            cloud_client_id=cloud_server.client_id,
            cloud_client_secret=SecretStr(cloud_server.client_secret),
        )
    )
    started = time.monotonic()
    verification = verify_once(settings)
    print(f"verify at {USERS} users: {time.monotonic() - started:.1f} s")
    report = verification.report
    assert report.checked["user"] == (USERS, USERS)
    assert report.checked["company"] == (COMPANIES, COMPANIES)
    assert report.clean, report.drifts[:5]
