"""``vudsync bench verify``: ``vudsync verify --json`` at N users — time, CPU and peak memory.

The store is filled by ``vudsync seed`` (its users, companies, access, catalogues, instances);
the reference cloud is made to hold exactly the same, in bulk through ``POST /v1/batch`` (500
writes a request) from the directory as verify reads it — the fastest honest way to a
converged cloud of this size: the pipeline would take half an hour to get there
(docs/benchmarks.md, "Whole pipeline"), and verify does not see how the cloud was filled.
Then ``vudsync verify --json`` runs as an operator runs it, a child process: its wall time,
its CPU seconds (``wait4``: that child alone) and its own peak RSS (``VmHWM`` at its exit),
the cloud's CPU seconds while it answered (``/proc``), and what it reported. Nothing is
repaired; nothing touches Kafka.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
from pydantic import SecretStr

from cloud.bench import _cpu_seconds
from cloud.server import CloudServer
from devtools.bench import emit
from devtools.processes import component_env
from devtools.secrets import with_run_secrets
from kernel.settings import Settings
from vudsync.ops.directory_reader import read_directory
from vudsync.ops.drift import DirectoryState

BATCH = 500
NO_KAFKA = "127.0.0.1:9"  # verify without --repair never connects to Kafka


def _items(
    directory: DirectoryState, cloud_users: dict[str, str], cloud_companies: dict[str, str]
) -> Iterator[dict[str, Any]]:
    """The access writes, once users and companies exist (their cloud ids known)."""
    for uid, user in directory.users.items():
        for grant in user.access:
            services = {app.value: s.model_dump() for app, s in grant.services.items() if not s.is_empty()}
            if services:
                path = f"/v1/users/{cloud_users[uid]}/access/{cloud_companies[grant.company_id]}"
                yield {"method": "PUT", "path": path, "body": {"services": services}}


def _send(api: httpx.Client, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every item through ``POST /v1/batch``, ``BATCH`` at a time; their answers, in order."""
    answers: list[dict[str, Any]] = []
    for start in range(0, len(items), BATCH):
        response = api.post("/v1/batch", json={"requests": items[start : start + BATCH]})
        response.raise_for_status()
        chunk = response.json()["responses"]
        failed = [a for a in chunk if a["status"] >= 300]
        if failed:
            raise click.ClickException(f"the cloud refused a bulk write: {failed[0]}")
        answers += chunk
    return answers


def _post(path: str, external_id: str, **body: Any) -> dict[str, Any]:
    return {"method": "POST", "path": path, "body": {"external_id": external_id, **body}}


def fill_cloud(api: httpx.Client, directory: DirectoryState) -> dict[str, int]:
    """Make the cloud hold what the directory holds (the rules of ``vudsync.ops.drift``)."""
    catalogue = [
        {"method": "PUT", "path": f"/v1/services/{app}/{kind}/{name}", "body": {"description": text}}
        for (app, kind, name), text in directory.catalogue.items()
    ]
    instances = [
        {
            "method": "PUT",
            "path": f"/v1/application-instances/{app.value}",
            "body": {"uri": i.uri, "license_fingerprint": i.license_fingerprint},
        }
        for app, i in directory.instances.items()
    ]
    companies = list(directory.companies.values())
    number = "organisation_number"
    company_items = [
        _post(
            "/v1/companies",
            c.id,
            **c.model_dump(include={"name", "country", "status"}),
            **{number: c.normalised_organisation_number},
        )
        for c in companies
    ]
    users = list(directory.users.values())
    user_fields = {"email", "username", "first_name", "last_name", "language"}
    user_items = [_post("/v1/users", u.id, **u.model_dump(include=user_fields)) for u in users]
    _send(api, catalogue + instances)
    cloud_companies = {
        c.id: a["body"]["id"] for c, a in zip(companies, _send(api, company_items), strict=True)
    }
    cloud_users = {u.id: a["body"]["id"] for u, a in zip(users, _send(api, user_items), strict=True)}
    inactive = [
        {"method": "PATCH", "path": f"/v1/users/{cloud_users[u.id]}", "body": {"active": False}}
        for u in users
        if not u.active
    ]
    access = list(_items(directory, cloud_users, cloud_companies))
    _send(api, inactive + access)
    return {
        "catalogue": len(catalogue),
        "companies": len(companies),
        "users": len(users),
        "access": len(access),
    }


#: runs ``vudsync verify --json`` and, at exit, writes its own peak RSS (``VmHWM``) to stderr.
#: ``wait4``'s ``ru_maxrss`` cannot be used: Linux carries the parent's high-water mark over
#: ``fork``/``exec`` into the child's, and this process holds the whole directory it filled
#: the cloud from (it reported ~1,050 MB at 100,000 users where verify itself peaked lower)
_CHILD = """
import atexit, runpy, sys
def peak():
    status = open("/proc/self/status").read()
    sys.stderr.write("peak_rss_kb=" + status.split("VmHWM:")[1].split()[0] + "\\n")
atexit.register(peak)
sys.argv = ["vudsync", "verify", "--json"]
runpy.run_module("vudsync", run_name="__main__")
"""


def timed_verify(settings: Settings) -> dict[str, Any]:
    """``vudsync verify --json`` as a child process: wall, CPU (``wait4``), its own peak RSS
    (``VmHWM`` at exit), what it reported."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD], env=component_env(settings, NO_KAFKA), stdout=out, stderr=err
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        report = json.loads(out.read())["report"]
        err.seek(0)
        peak_kb = int(err.read().decode().rsplit("peak_rss_kb=", 1)[1].split()[0])
    return {
        "exit_status": child.returncode,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "drift": report["drift"],
        "checked": report["checked"],
    }


@click.command("verify")
@click.option("--users", type=int, default=100_000, show_default=True)
@click.option("--companies", type=int, default=1000, show_default=True)
@click.option("--access-per-user", type=float, default=3.0, show_default=True)
@click.option("--repeat", type=int, default=1, show_default=True, help="verify runs on the same data")
@click.option("--json", "as_json", is_flag=True)
def command(users: int, companies: int, access_per_user: float, repeat: int, as_json: bool) -> None:
    """Time ``vudsync verify --json`` against a store and a cloud of N users.

    \b
    Example:
      vudsync bench verify --users 100000 --companies 1000 --access-per-user 3 --json
    """
    with (
        tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp,
        CloudServer(db_path=Path(tmp) / "cloud.db") as cloud,
    ):
        store = f"sqlite:///{tmp}/directory.db"
        settings = with_run_secrets(
            Settings(
                home=Path(tmp) / "home",
                store_url=store,
                cloud_url=cloud.url,
                cloud_client_id=cloud.client_id,
                cloud_client_secret=SecretStr(cloud.client_secret),
            )
        )
        env = component_env(settings, NO_KAFKA)
        seed = [
            "seed",
            "--users",
            str(users),
            "--companies",
            str(companies),
            "--access-per-user",
            str(access_per_user),
        ]
        click.echo(f"seeding the store: {' '.join(seed)}", err=True)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vudsync", *seed], env=env, check=True, capture_output=True)
        seeded = time.perf_counter() - started
        click.echo("filling the cloud through POST /v1/batch", err=True)
        started = time.perf_counter()
        directory = read_directory(store, settings.require_secret("fingerprint_key").encode())
        with httpx.Client(base_url=cloud.url, headers=cloud.auth_headers(), timeout=300) as api:
            filled = fill_cloud(api, directory)
        del directory
        fill_seconds = time.perf_counter() - started
        runs = []
        for i in range(repeat):
            click.echo(f"vudsync verify --json (run {i + 1} of {repeat})", err=True)
            load = os.getloadavg()[0]
            cloud_cpu = _cpu_seconds(cloud.pid)
            run = timed_verify(settings)
            run["cloud_cpu_seconds"] = round(_cpu_seconds(cloud.pid) - cloud_cpu, 1)
            run["load_before"] = round(load, 2)
            runs.append(run)
    emit(
        {
            "users": users,
            "companies": companies,
            "access_per_user": access_per_user,
            "cloud_holds": filled,
            "seed_seconds": round(seeded, 1),
            "fill_seconds": round(fill_seconds, 1),
            "runs": runs,
        },
        as_json,
    )
