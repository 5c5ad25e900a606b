"""Writeback on the secured three-node cluster (SASL_SSL, SCRAM, ACLs): an administrator's grant
in the cloud reaches the directory store through cloud-capture → planner → directory sink, each
component connecting as its own principal with the least privilege ``devtools.broker.acls``
grants it — and neither while the five components start nor from then until the directory sink
has committed do the brokers deny anything to anyone.

"Denied nothing" is read where the brokers say it: their authorizer logs every denied request
(``kafka.authorizer.logger`` at INFO, ``devtools/broker/log4j2.xml``). A forbidden write made on
purpose afterwards shows the check sees denials at all. A component's start checks only the
topics it uses (``vudsync.topics.COMPONENT_TOPICS``), by describing them, and asks to create
only a missing one — none here: the operator's ``connect`` created the catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.broker import free_port
from devtools.broker.cluster import KafkaTarget, LocalKafkaCluster
from devtools.processes import wait_until
from kernel.errors import KafkaAccessDenied
from kernel.publishing.kafka_python import KafkaRecordPublisher
from kernel.settings import Settings
from schemas.directory import EntityType
from schemas.topics import DIRECTORY_TOPICS
from sinks.directory_service import directory_sink_group
from tests.fixtures.cloud import CloudReader
from tests.pipeline import business_directory, components, lag_by_group, metrics_of, vudsync_cli, wait_for

COMPONENTS = ("producer", "planner", "sink", "cloud-capture", "directory-sink")


def _broker_logs(cluster: LocalKafkaCluster) -> list[Path]:
    return sorted(cluster.dir.glob("node-*/kafka/broker.log"))


def _sizes(cluster: LocalKafkaCluster) -> dict[Path, int]:
    return {log: log.stat().st_size for log in _broker_logs(cluster)}


def _denials(
    cluster: LocalKafkaCluster, since: dict[Path, int], until: dict[Path, int] | None = None
) -> list[str]:
    """The authorizer's denials the nodes logged between the sizes ``since`` and ``until``."""
    lines: list[str] = []
    for log in _broker_logs(cluster):
        with log.open("rb") as f:
            f.seek(since.get(log, 0))
            end = None if until is None else until[log] - since.get(log, 0)
            text = (f.read() if end is None else f.read(end)).decode(errors="replace")
        lines += [line for line in text.splitlines() if " is Denied " in line]
    return lines


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kafka_target", ["secured"], indirect=True)
def test_a_cloud_grant_reaches_the_store_with_each_component_as_its_own_principal_and_nothing_denied(
    pipeline_settings: Settings, kafka_target: KafkaTarget, cloud: CloudReader
) -> None:
    s, bootstrap, cluster = pipeline_settings, kafka_target.bootstrap, kafka_target.cluster
    assert cluster is not None and cluster.secure
    writer = business_directory(s, bootstrap, roles=("Regnskap", "Lønn"))
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923609016"}])
    writer.upsert_user(id="u1", username="kari", email="kari@fjord.no", first_name="Kari", last_name="Holm")
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    connected = vudsync_cli(s, bootstrap, "connect")
    assert connected.returncode == 0, connected.stderr
    assert len(_broker_logs(cluster)) == cluster.brokers
    ports = {name: free_port() for name in COMPONENTS}

    started = _sizes(cluster)  # before any component starts
    with components(s, bootstrap, *COMPONENTS, metrics_ports=ports, security=kafka_target.security) as procs:
        wait_for(procs, lambda: cloud.origins("u1") == {"Regnskap": "directory"}, 240, "u1 in the cloud")
        wait_for(procs, lambda: all(metrics_of(port) for port in ports.values()), 120, "every component up")
        since = _sizes(cluster)  # every component's start is behind us
        user, company = cloud.user("u1"), cloud.company("c1")
        assert user is not None and company is not None
        before = writer.change_log_position()
        portal = cloud.portal()
        try:
            path = f"/v1/users/{user['id']}/access/{company['id']}/business/roles/Lønn"
            portal.put(path).raise_for_status()
        finally:
            portal.close()
        wait_for(
            procs,
            lambda: ("c1", "business", "role", "Lønn", "cloud") in writer.access_rows("u1"),
            180,
            "the administrator's grant in the store",
        )
        assert writer.change_log_origins("u1", before) == ["cloud"]  # one write, the writeback's
        group = directory_sink_group(s)
        wait_for(
            procs, lambda: lag_by_group(s, bootstrap).get(group) == 0, 120, "the directory sink's commit"
        )
        status = vudsync_cli(s, bootstrap, "status", "--json")
        until = _sizes(cluster)
    writer.close()

    # the directory sink read vud.directory.operations in its own group, as its own principal
    members = {c["name"]: c["detail"] for c in json.loads(status.stdout)["components"]}
    assert "vudsync-directory-sink-" in members["directory-sink"], members
    for name in COMPONENTS:  # each component was given one principal's credentials, and used them
        assert procs[name].env["VUDSYNC_KAFKA_USERNAME"] == f"vudsync-{name}", name
    # nothing denied while each component started (its topic check, its consumer group, Faust's
    # topics), nor afterwards
    assert _denials(cluster, started, since) == []
    assert _denials(cluster, since, until) == []

    # the check sees a denial when there is one: cloud-capture may write vud.cloud.changes only
    marker = _sizes(cluster)
    publisher = KafkaRecordPublisher(bootstrap, security=cluster.security("cloud-capture"))
    try:
        with pytest.raises(KafkaAccessDenied):
            publisher.publish(s.topic(DIRECTORY_TOPICS[EntityType.USER].name), "u1", b"{}")
            publisher.flush(60)
    finally:
        publisher.close()
    wait_until(lambda: _denials(cluster, marker), 30, what="the forbidden write in the authorizer's log")
    assert any("User:vudsync-cloud-capture" in line for line in _denials(cluster, marker))
