"""Day-one questions end to end, on real parts (store → producer → Kafka → planner → sink → cloud
API): a user's assignment waits for a company capture rejects; ``parked list`` shows it oldest
first, ``explain`` says why and agrees with the cloud, ``sync`` shows the wait and then the
release when the company is fixed on premise; a second ``sync`` applies nothing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from typing import Any

from kernel.settings import Settings
from tests.fixtures.cloud import CloudReader
from tests.pipeline import business_directory, component_env, components, gauge, vudsync_cli, wait_for


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def _parked(settings: Settings, bootstrap: str) -> list[dict[str, Any]]:
    done = vudsync_cli(settings, bootstrap, "parked", "list", "--json")
    assert done.returncode == 0, done.stderr
    return list(_json(done)["operations"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Lines:
    """A child's stdout, line by line, read on a thread (so the test waits with a deadline)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout
        self.thread = threading.Thread(
            target=lambda: self.lines.extend(iter(stdout.readline, "")), daemon=True
        )
        self.thread.start()

    def steps(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]


def test_an_assignment_parked_on_a_rejected_company_is_listed_explained_and_synced_when_fixed(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = pipeline_settings
    writer = business_directory(settings, kafka_bootstrap)
    # capture rejects the company (a three-letter country code): every assignment to it waits
    writer.upsert_companies(
        [{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016", "country": "NOR"}]
    )
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Holm")
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    connected = vudsync_cli(settings, kafka_bootstrap, "connect")
    assert connected.returncode == 0, connected.stderr

    # nothing runs yet: sync says so and sends nothing
    down = vudsync_cli(settings, kafka_bootstrap, "sync", "user", "u1", "--json")
    assert down.returncode == 1
    assert "the planner is not running" in down.stdout and "vudsync run planner" in down.stdout

    port = _free_port()
    with components(
        settings, kafka_bootstrap, "producer", "planner", "sink", metrics_ports={"planner": port}
    ) as procs:
        wait_for(procs, lambda: cloud.user("u1") is not None, 180, "u1 in the cloud")
        wait_for(procs, lambda: len(_parked(settings, kafka_bootstrap)) == 1, 120, "u1's assignment parked")
        writer.upsert_user(id="u2", username="ola", email="ola@fjord.no", first_name="Ola", last_name="Lie")
        writer.grant([("u2", "c1", "business", "role", "Regnskap")])
        wait_for(procs, lambda: len(_parked(settings, kafka_bootstrap)) == 2, 120, "u2's assignment parked")

        parked = _parked(settings, kafka_bootstrap)
        assert [(p["entity_id"], p["kind"], p["waiting_for"]) for p in parked] == [
            ("u1", "access.assign", ["company:c1"]),
            ("u2", "access.assign", ["company:c1"]),
        ], "oldest first"
        assert parked[0]["age_seconds"] >= parked[1]["age_seconds"]
        wait_for(
            procs,
            lambda: (gauge(port, "vudsync_parked_oldest_age_seconds") or 0) > 0,
            60,
            "the planner's oldest-parked gauge",
        )

        # explain: the wait, and the cloud's side agreeing with what the planner knows
        why = vudsync_cli(settings, kafka_bootstrap, "explain", "user", "kari@fjord.no", "--json")
        assert why.returncode == 1, why.stderr
        x = _json(why)
        cloud_u1 = cloud.user("u1")
        assert cloud_u1 is not None
        assert x["entity_id"] == "u1" and x["planner"]["cloud_id"] == cloud_u1["id"]
        assert x["cloud"]["object"]["id"] == cloud_u1["id"] and cloud.access(cloud_u1["id"]) == []
        assert [p["waiting_for"] for p in x["planner"]["parked"]] == [["company:c1"]]
        assert [(d["object_type"], d["key"], d["kind"]) for d in x["cloud"]["drift"]] == [
            ("access", "u1/c1", "missing")
        ]
        company = vudsync_cli(settings, kafka_bootstrap, "explain", "company", "923 609 016", "--json")
        assert company.returncode == 1 and "country" in _json(company)["directory"]["rejected"]
        assert _json(company)["waiting_for_it"]["total"] == 2, "both users' assignments wait for it"

        # sync: shows the wait, then the release once the company is fixed on premise
        proc = subprocess.Popen(
            [sys.executable, "-m", "vudsync", "sync", "user", "kari@fjord.no", "--json", "--timeout", "4m"],
            env=component_env(settings, kafka_bootstrap),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out = _Lines(proc)
            wait_for(
                procs,
                lambda: any(
                    s.get("stage") == "parked" and s.get("waiting_for") == ["company:c1"] for s in out.steps()
                ),
                120,
                "sync shows the wait",
            )
            assert [s.get("stage") for s in out.steps()][:2] == ["captured", "handled"]
            writer.update_company("c1", country="NO")
            assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
            out.thread.join(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        steps = out.steps()
        assert steps[-1]["outcome"] == "applied"
        assigned = [s for s in steps if s.get("stage") == "applied" and s.get("kind") == "access.assign"]
        assert assigned, steps
        released = [i for i, s in enumerate(steps) if s.get("operation_id") == assigned[0]["operation_id"]]
        assert [steps[i]["stage"] for i in released] == ["parked", "planned", "applied"], steps
        assert cloud.business_roles("u1") == [["Regnskap"]]

        agreed = vudsync_cli(settings, kafka_bootstrap, "explain", "user", "u1", "--json")
        assert agreed.returncode == 0, agreed.stdout
        assert _json(agreed)["cloud"]["in_sync"] is True and _json(agreed)["reasons"] == []

        # idempotent: a second sync finds it in sync and the cloud sees no write
        wait_for(procs, lambda: _parked(settings, kafka_bootstrap) == [], 120, "u2 released too")
        writes = len(cloud.audit())
        again = vudsync_cli(settings, kafka_bootstrap, "sync", "user", "u1", "--json")
        assert again.returncode == 0, again.stdout + again.stderr
        lines = [json.loads(line) for line in again.stdout.splitlines()]
        assert lines[-1]["outcome"] == "in_sync"
        assert not [s for s in lines if s.get("stage") in ("planned", "applied")], lines
        assert len(cloud.audit()) == writes
    writer.close()
