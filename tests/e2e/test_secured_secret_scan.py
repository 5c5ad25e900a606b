"""Secret scan over a run on the secured three-node cluster: after users flow producer → planner
→ sink → cloud, and an administrator's grant in the cloud flows back cloud-capture → planner →
directory sink → store, each component with its own SCRAM principal and at debug level, none
of the run's secrets — the SASL password of every principal (producer, planner, sink,
cloud-capture, directory sink, ops), the cloud's client secret and admin token, the portal
administrator's client secret, the fingerprint key, the brokers' keystore password — appears
in any topic of the run (the catalogue's, the writeback's ``vud.cloud.changes`` and
``vud.directory.operations``, and the planner's changelog), any component's log, any
``/metrics`` endpoint, or ``vudsync status --json``.

(``tests/integration/test_secret_scan.py`` scans a capture run on the PLAINTEXT broker for the
store's license keys as well.)"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from devtools.broker import free_port
from devtools.broker.cluster import KafkaTarget
from devtools.seed.writer import open_writer
from kernel.admin import admin_client
from kernel.settings import SECRET_FIELDS, Settings
from processors.app import app_id
from schemas.topics import CLOUD_CHANGES, DIRECTORY_OPERATIONS
from tests.capture_check import read_topics
from tests.fixtures.cloud import CloudReader
from tests.pipeline import components, vudsync_cli, wait_for
from vudsync.topics import ensure_catalogue

COMPONENTS = ("producer", "planner", "sink", "cloud-capture", "directory-sink")
# its own client id: the session's cloud keeps clients, and "portal-admin" has another secret
PORTAL = ("portal-admin-of-the-scan", "portal-admin-secret-of-the-scan")


def _flatten(record: object) -> bytes:
    key = getattr(record, "key", None) or b""
    value = getattr(record, "value", None) or b""
    headers = b"".join(k.encode() + (v or b"") for k, v in getattr(record, "headers", None) or ())
    return key + b"\0" + value + b"\0" + headers


@pytest.mark.parametrize("kafka_target", ["secured"], indirect=True)
def test_no_secret_of_the_secured_run_in_topics_logs_metrics_or_status(
    pipeline_settings: Settings, kafka_target: KafkaTarget, cloud: CloudReader
) -> None:
    s, bootstrap, cluster = pipeline_settings, kafka_target.bootstrap, kafka_target.cluster
    assert cluster is not None
    ensure_catalogue(s, bootstrap)
    writer = open_writer(s.resolved_store_url())
    writer.upsert_catalogue("roles", [("business", r, r) for r in ("Regnskap", "Lønn")])
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_users(
        {"id": f"u{i}", "username": f"bruker{i}", "email": f"bruker{i}@fjord.no", "first_name": "Åse",
         "last_name": "Brækken"}
        for i in range(5)
    )  # fmt: skip
    writer.grant([("u0", "c1", "business", "role", "Regnskap")])
    connected = vudsync_cli(s, bootstrap, "connect")  # nothing is sent before it
    assert connected.returncode == 0, connected.stderr
    ports = {name: free_port() for name in COMPONENTS}
    with components(
        s, bootstrap, *COMPONENTS, metrics_ports=ports, security=kafka_target.security, debug=True
    ) as procs:
        wait_for(
            procs,
            lambda: (
                cloud.origins("u0") == {"Regnskap": "directory"}
                and all(cloud.user(f"u{i}") for i in range(5))
            ),
            180,
            "the users, the company and u0's access in the cloud",
            interval=1,
        )
        # the writeback's material: an administrator's grant in the cloud, back in the store
        portal = cloud.portal(*PORTAL)
        user, company = cloud.user("u0"), cloud.company("c1")
        assert user is not None and company is not None
        portal.put(f"/v1/users/{user['id']}/access/{company['id']}/business/roles/Lønn").raise_for_status()
        portal.close()
        wait_for(
            procs,
            lambda: ("c1", "business", "role", "Lønn", "cloud") in writer.access_rows("u0"),
            180,
            "the administrator's grant in the store",
            interval=1,
        )
        urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()}
        metrics = {name: httpx.get(url, timeout=10).text for name, url in urls.items()}
        scraped = ",".join(f"{name}={url}" for name, url in urls.items())
        status = vudsync_cli(s, bootstrap, "status", "--json", VUDSYNC_STATUS_METRICS=scraped)
    writer.close()

    with admin_client(bootstrap, security=s.kafka_security()) as client:
        topics = [t for t in client.list_topics() if t.startswith(s.topic_prefix)]
    # the planner's own topics (its changelog) are readable by the planner only
    own = [t for t in topics if t.startswith(app_id(s))]
    records = {
        **read_topics(bootstrap, [t for t in topics if t not in own], security=s.kafka_security()),
        **read_topics(bootstrap, own, security=kafka_target.security("planner")),
    }
    blob = b"\n".join(_flatten(r) for rs in records.values() for r in rs)
    logs = {log.name: log.read_text(errors="replace") for log in sorted(Path(s.home, "logs").glob("*.log"))}
    layout = json.loads(cluster.layout_path.read_text())
    secrets = {
        **{f"SASL password of {component}": password for component, password in cluster.passwords().items()},
        **{name: s.require_secret(name) for name in SECRET_FIELDS},
        "the brokers' keystore password": str(layout["keystore_password"]),
        "the portal administrator's client secret": PORTAL[1],
    }
    for what, secret in secrets.items():
        assert secret.encode() not in blob, f"{what} reached a topic"
        for name, log in logs.items():
            assert secret not in log, f"{what} reached {name}"
        for name, text in metrics.items():
            assert secret not in text, f"{what} reached the {name}'s /metrics"
        assert secret not in status.stdout + status.stderr, f"{what} reached status --json"

    # the scan looked at real material: every topic with records, the changelog among them,
    # debug logs of every component that authenticated, each component's metrics, a status
    assert f"{s.topic_prefix}vudsync-planner-state-changelog" in topics
    assert sum(map(len, records.values())) > 20
    for writeback in (CLOUD_CHANGES, DIRECTORY_OPERATIONS):  # what the writeback published
        assert records[s.topic(writeback.name)], writeback.name
    assert set(logs) == {f"{name}.log" for name in COMPONENTS}
    for name, log in logs.items():
        assert " DEBUG " in log, name
    # kafka-python's admin (the catalogue check at start): whom it logged in as
    for name in ("planner", "sink", "cloud-capture", "directory-sink"):
        assert f"Authenticated as vudsync-{name}" in logs[f"{name}.log"]
    assert all("vudsync_" in text for text in metrics.values())
    report = json.loads(status.stdout)
    assert {c["name"] for c in report["components"]} >= set(COMPONENTS), report
