"""Two rules end to end, on real parts (store → producer → Kafka → planner → sink → cloud API):
an application instance that does not match the cloud blocks its access until it is fixed, and
mass deletions are held until an operator approves (or rejects) them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import Any

import httpx

from devtools.processes import wait_until
from devtools.seed.writer import SqliteDirectoryWriter
from kernel.settings import Settings
from schemas.fingerprint import license_fingerprint
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import OPERATIONS, RESULTS
from tests.fixtures.cloud import CloudReader
from tests.kafka_read import read_all
from tests.pipeline import alive_or_fail, component_env, components, gauge
from vudsync.topics import ensure_catalogue

URI = "https://vb.fjord.local"


def _vudsync(settings: Settings, bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "vudsync", *args],
        env=component_env(settings, bootstrap),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def _writer(settings: Settings) -> SqliteDirectoryWriter:
    return SqliteDirectoryWriter(settings.resolved_store_url().removeprefix("sqlite:///"))


def _results(settings: Settings, bootstrap: str, until: Any, timeout: float = 120) -> list[OperationResult]:
    records = read_all(
        bootstrap,
        settings.topic(RESULTS.name),
        timeout=timeout,
        until=lambda rs: until([OperationResult.model_validate_json(r.value) for r in rs]),
    )
    return [OperationResult.model_validate_json(r.value) for r in records]


def _roles(cloud: CloudReader, uid: str) -> list[list[str]]:
    user = cloud.user(uid)
    if user is None:
        return []
    return [a["services"].get("business", {}).get("roles", []) for a in cloud.access(user["id"])]


def test_a_mismatching_instance_blocks_its_access_until_it_is_fixed(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = pipeline_settings
    ensure_catalogue(settings, kafka_bootstrap)
    key = settings.fingerprint_key.get_secret_value().encode()
    httpx.put(
        f"{cloud.server.url}/v1/application-instances/business",
        headers=cloud.server.auth_headers(),
        json={"uri": URI, "license_fingerprint": license_fingerprint("VB-CLOUD-KEY", key)},
    ).raise_for_status()
    writer = _writer(settings)
    writer.add_application_instance("business", URI, "VB-OTHER-KEY")
    writer.upsert_catalogue("roles", [("business", "Regnskap", "Regnskap")])
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Holm")
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    _vudsync(settings, kafka_bootstrap, "connect")

    with components(settings, kafka_bootstrap, "producer", "planner", "sink") as procs:
        results = _results(
            settings,
            kafka_bootstrap,
            lambda rs: (
                any(r.kind == "journal.instance_mismatch" for r in rs)
                and any(r.kind == "access.assign" and r.outcome is ResultOutcome.BLOCKED for r in rs)
            ),
        )
        wait_until(
            lambda: alive_or_fail(procs) and cloud.user("u1") is not None and cloud.company("c1") is not None,
            180,
            what="u1 and c1 in the cloud (they are applied independently)",
        )
        (mismatch,) = {r.operation_id: r for r in results if r.kind == "journal.instance_mismatch"}.values()
        assert mismatch.outcome is ResultOutcome.BLOCKED and mismatch.entity_id == "business"
        assert "license key" in mismatch.details["message"] and "uri" not in mismatch.details["message"]
        everything = "".join(r.model_dump_json() for r in results)
        assert "VB-OTHER-KEY" not in everything and "VB-CLOUD-KEY" not in everything
        assert license_fingerprint("VB-OTHER-KEY", key) not in mismatch.model_dump_json()
        assert _roles(cloud, "u1") == [], "held while it differs"

        writer.set_application_instance("business", URI, "VB-CLOUD-KEY")  # the operator fixes the key
        wait_until(
            lambda: alive_or_fail(procs) and _roles(cloud, "u1") == [["Regnskap"]],
            120,
            what="the held assignment released once the instance matches",
        )
    writer.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _held(port: int) -> float | None:
    return gauge(port, "vudsync_held_deletions")


def test_mass_deletions_are_held_until_approved_or_rejected(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = pipeline_settings
    ensure_catalogue(settings, kafka_bootstrap)
    writer = _writer(settings)
    users = [f"u{i:02d}" for i in range(11)]
    writer.upsert_users(
        {"id": u, "username": u, "email": f"{u}@fjord.no", "first_name": "Åse", "last_name": "Lie"}
        for u in users
    )
    _vudsync(settings, kafka_bootstrap, "connect")
    port = _free_port()
    env = {"VUDSYNC_PLANNER_DELETES_THRESHOLD": "3", "VUDSYNC_PLANNER_SESSION_TIMEOUT": "10"}

    def active(u: str) -> bool:
        user = cloud.user(u)
        return user is not None and bool(user["active"])

    with components(
        settings, kafka_bootstrap, "producer", "planner", "sink", metrics_ports={"planner": port}, **env
    ) as procs:
        try:
            wait_until(
                lambda: alive_or_fail(procs) and all(active(u) for u in users), 120, what="users synced"
            )
        except TimeoutError as exc:
            ops = read_all(kafka_bootstrap, settings.topic(OPERATIONS.name), timeout=10)
            results = read_all(kafka_bootstrap, settings.topic(RESULTS.name), timeout=10)
            raise AssertionError(
                f"{exc}: {[u for u in users if not active(u)]} missing; {len(ops)} operations, "
                f"results {[r.value[:120] for r in results][:5]}"
            ) from None
        first = users[:6]
        for u in first:
            writer.delete_user(u)
        wait_until(
            lambda: alive_or_fail(procs) and sum(not active(u) for u in first) == 3 and _held(port) == 3,
            120,
            what="three deletions applied, three held",
        )
        held = _vudsync(settings, kafka_bootstrap, "deletes", "list")
        assert "3 held" in held.stdout
        assert sum(not active(u) for u in first) == 3, "nothing more goes while the gate holds"

        _vudsync(settings, kafka_bootstrap, "deletes", "approve", "--yes", "--operator", "ops@fjord.no")
        wait_until(
            lambda: alive_or_fail(procs) and not any(active(u) for u in first) and _held(port) == 0,
            120,
            what="every held deletion applied after approval",
        )
        # the journal settles once the sink's results are published (just after the cloud changed)
        try:
            wait_until(
                lambda: "0 held" in _vudsync(settings, kafka_bootstrap, "deletes", "list").stdout,
                60,
                interval=1,
                what="`vudsync deletes list` empty",
            )
        except TimeoutError as exc:
            held = json.loads(_vudsync(settings, kafka_bootstrap, "deletes", "list", "--json").stdout)
            ids = {h["operation_id"] for h in held}
            records = read_all(kafka_bootstrap, settings.topic(RESULTS.name), timeout=10)
            trail = [
                (r.partition, r.offset, r.value[:200])
                for r in records
                if any(i.encode() in r.value for i in ids)
            ]
            raise AssertionError(f"{exc}: {trail}") from None

        second = users[6:]  # a new window: 3 go, 2 are held, then rejected
        for u in second:
            writer.delete_user(u)
        wait_until(
            lambda: alive_or_fail(procs) and _held(port) == 2,
            120,
            what="two deletions held again",
        )
        _vudsync(settings, kafka_bootstrap, "deletes", "reject", "--yes", "--operator", "ops@fjord.no")
        rejected = _results(
            settings,
            kafka_bootstrap,
            lambda rs: sum(r.outcome is ResultOutcome.REJECTED for r in rs) >= 2,
        )
        wait_until(
            lambda: alive_or_fail(procs) and _held(port) == 0,
            60,
            what="the gate open again",
        )
    kept = {r.entity_id for r in rejected if r.outcome is ResultOutcome.REJECTED}
    assert len(kept) == 2 and all(active(u) for u in kept), "rejected deletions never reach the cloud"
    assert sum(not active(u) for u in second) == 3
    writer.close()
