"""Every client library against the secured three-node cluster: the right credentials and ACLs
work, a wrong password and a forbidden topic fail at once with KafkaAccessDenied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError
from kafka.admin import ConfigResource, ConfigResourceType
from pydantic import SecretStr

from devtools.broker.cluster import LocalKafkaCluster
from devtools.processes import wait_until
from kernel.admin import admin_client, cluster_size, list_topics, missing_topics, replicas_of, wait_for_broker
from kernel.errors import KafkaAccessDenied
from kernel.kafka_security import KafkaSecurity
from kernel.publishing.confluent import ConfluentRecordPublisher
from kernel.publishing.kafka_python import KafkaRecordPublisher
from kernel.settings import Settings
from schemas.topics import ALL_TOPICS, OPERATIONS, OPERATIONS_DLQ, RESULTS
from tests.pipeline import vudsync_cli
from vudsync.ops.kafka_reader import read_ranges
from vudsync.topics import COMPONENT_TOPICS, ensure_catalogue, ensure_component_topics

pytestmark = pytest.mark.integration


def _settings(cluster: LocalKafkaCluster, component: str, home: Path, prefix: str) -> Settings:
    security = cluster.security(component)
    return Settings(
        home=home,
        topic_prefix=prefix,
        **{f"kafka_{field}": value for field, value in security.model_dump().items()},
    )


@pytest.fixture(scope="module")
def catalogue(secure_cluster: LocalKafkaCluster, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The catalogue's topics under the session's prefix (the one the ACLs name), created by the
    ops principal."""
    prefix = secure_cluster.settings.topic_prefix
    settings = _settings(secure_cluster, "ops", tmp_path_factory.mktemp("ops"), prefix)
    ensure_catalogue(settings, secure_cluster.bootstrap())
    return settings


def _wrong_password(cluster: LocalKafkaCluster, component: str) -> KafkaSecurity:
    return cluster.security(component).model_copy(update={"password": SecretStr("not-the-password")})


def test_topics_get_three_replicas_and_two_in_sync(
    secure_cluster: LocalKafkaCluster, catalogue: Settings
) -> None:
    topic = catalogue.topic(RESULTS.name)
    with admin_client(secure_cluster.bootstrap(), security=catalogue.kafka_security()) as client:
        (described,) = client.describe_topics([topic])
        configs = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    assert {len(p["replica_nodes"]) for p in described["partitions"]} == {3}
    assert configs["topic"][topic]["min.insync.replicas"]["value"] == "2"


def test_each_component_finds_its_topics_by_describing_them_and_the_planner_its_replication(
    secure_cluster: LocalKafkaCluster, catalogue: Settings, tmp_path: Path
) -> None:
    """A component's start (``vudsync run``) describes the topics it uses and creates none that
    exist; the planner sizes its changelog from a topic it reads, not from the cluster's
    description (which its ACLs do not grant)."""
    bootstrap = secure_cluster.bootstrap()
    for component in COMPONENT_TOPICS:
        settings = _settings(secure_cluster, component, tmp_path / component, catalogue.topic_prefix)
        assert ensure_component_topics(settings, bootstrap, component) == [], component
    planner = _settings(secure_cluster, "planner", tmp_path / "planner", catalogue.topic_prefix)
    assert replicas_of(bootstrap, planner.topic(RESULTS.name), security=planner.kafka_security()) == 3
    # a topic it may not describe is as good as missing (the planner then asks the cluster)
    assert (
        replicas_of(bootstrap, planner.topic(OPERATIONS_DLQ.name), security=planner.kafka_security()) is None
    )
    assert missing_topics(
        bootstrap, [planner.topic(OPERATIONS_DLQ.name)], security=planner.kafka_security()
    ) == [planner.topic(OPERATIONS_DLQ.name)]


def test_the_producer_writes_directory_topics_only(
    secure_cluster: LocalKafkaCluster, tmp_path: Path, catalogue: Settings
) -> None:
    security = secure_cluster.security("producer")
    allowed = ConfluentRecordPublisher(secure_cluster.bootstrap(), security=security)
    allowed.publish(catalogue.topic("vud.directory.companies"), "c1", b"{}")
    assert allowed.flush(60) == 1
    allowed.close()

    forbidden = ConfluentRecordPublisher(secure_cluster.bootstrap(), security=security)
    forbidden.publish(catalogue.topic(OPERATIONS.name), "user:u1", b"{}")
    with pytest.raises(KafkaAccessDenied, match=r"[Aa]uthorization failed"):
        forbidden.flush(60)


def test_the_sink_may_not_write_directory_topics(
    secure_cluster: LocalKafkaCluster, catalogue: Settings
) -> None:
    publisher = KafkaRecordPublisher(secure_cluster.bootstrap(), security=secure_cluster.security("sink"))
    try:
        publisher.publish(catalogue.topic(RESULTS.name), "u1", b"{}")
        assert publisher.flush(60) == 1
        with pytest.raises(KafkaAccessDenied, match="TopicAuthorizationFailed"):
            publisher.publish(catalogue.topic("vud.directory.users"), "u1", b"{}")
            publisher.flush(60)
    finally:
        publisher.close()


async def test_the_planner_writes_operations_but_not_directory_topics(
    secure_cluster: LocalKafkaCluster, catalogue: Settings
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=secure_cluster.bootstrap(), **secure_cluster.security("planner").for_aiokafka()
    )
    await producer.start()
    try:
        await producer.send_and_wait(catalogue.topic(OPERATIONS.name), b"{}", key=b"user:u1")
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(catalogue.topic("vud.directory.users"), b"{}", key=b"u1")
    finally:
        await producer.stop()


def _assert_says_what_to_do(error: KafkaAccessDenied, principal: str) -> None:
    """The refusal names the principal and the setting to check, never the password."""
    assert principal in str(error)
    assert error.hint is not None and "VUDSYNC_KAFKA_PASSWORD" in error.hint
    assert "not-the-password" not in f"{error} {error.hint}"


# kafka-python 3.0.12 alone would retry the refusal until its deadline and say "no broker
# answered" (kernel.kafka_credentials says why): the credentials are checked with aiokafka first.
def test_a_wrong_password_fails_the_admin_client_at_once(secure_cluster: LocalKafkaCluster) -> None:
    security = _wrong_password(secure_cluster, "ops")
    with pytest.raises(KafkaAccessDenied) as caught:
        wait_for_broker(secure_cluster.bootstrap(), 60, security=security)
    _assert_says_what_to_do(caught.value, str(security.username))


def test_a_wrong_password_fails_the_ops_reader_and_the_kafka_python_publisher(
    secure_cluster: LocalKafkaCluster, catalogue: Settings
) -> None:
    security = _wrong_password(secure_cluster, "ops")
    with pytest.raises(KafkaAccessDenied) as caught:
        list(
            read_ranges(
                secure_cluster.bootstrap(), {(catalogue.topic(RESULTS.name), 0): (0, 1)}, security=security
            )
        )
    _assert_says_what_to_do(caught.value, str(security.username))
    security = _wrong_password(secure_cluster, "sink")
    with pytest.raises(KafkaAccessDenied) as caught:
        KafkaRecordPublisher(secure_cluster.bootstrap(), security=security)
    _assert_says_what_to_do(caught.value, str(security.username))


def test_an_ops_command_with_a_wrong_password_says_what_to_do(
    secure_cluster: LocalKafkaCluster, catalogue: Settings
) -> None:
    """``vudsync topics ensure`` as an operator runs it: an error and a hint, not a time-out."""
    done = vudsync_cli(
        catalogue, secure_cluster.bootstrap(), "topics", "ensure", VUDSYNC_KAFKA_PASSWORD="not-the-password"
    )
    assert done.returncode == 2, done.stderr
    assert "refused the credentials of 'vudsync-ops'" in done.stderr
    assert "hint: check VUDSYNC_KAFKA_PASSWORD" in done.stderr
    assert "not-the-password" not in done.stdout + done.stderr


def test_a_wrong_password_fails_the_librdkafka_producer(
    secure_cluster: LocalKafkaCluster, catalogue: Settings
) -> None:
    publisher = ConfluentRecordPublisher(
        secure_cluster.bootstrap(), security=_wrong_password(secure_cluster, "producer")
    )
    publisher.publish(catalogue.topic("vud.directory.companies"), "c1", b"{}")
    with pytest.raises(KafkaAccessDenied, match=r"[Aa]uthentication") as caught:
        publisher.flush(60)
    assert "not-the-password" not in str(caught.value)


def test_a_replication_factor_the_cluster_cannot_place_is_refused_with_what_to_do(
    secure_cluster: LocalKafkaCluster, tmp_path: Path
) -> None:
    settings = _settings(secure_cluster, "ops", tmp_path, f"{secure_cluster.settings.topic_prefix}vud.rf4-")
    done = vudsync_cli(
        settings, secure_cluster.bootstrap(), "topics", "ensure", VUDSYNC_TOPIC_REPLICATION="4"
    )
    assert done.returncode == 2, done.stderr
    assert "replication factor of 4" in done.stderr
    assert "hint: new topics need 4 replicas" in done.stderr
    assert "VUDSYNC_TOPIC_REPLICATION" in done.stderr
    assert not [
        t
        for t in list_topics(secure_cluster.bootstrap(), security=settings.kafka_security())
        if t.startswith(settings.topic_prefix)
    ]


# last in the module: it stops a node of the session's cluster (and starts it again)
def test_topics_created_while_a_broker_is_down_get_three_replicas(
    secure_cluster: LocalKafkaCluster, tmp_path: Path
) -> None:
    """The cluster's configured size decides, not its live brokers: `vudsync topics ensure`
    while node 3 is down (fenced by the controller) creates every topic with three replicas and
    ``min.insync.replicas=2``, and says that the broker is missing."""
    settings = _settings(secure_cluster, "ops", tmp_path, f"{secure_cluster.settings.topic_prefix}vud.rf-")
    security = settings.kafka_security()
    bootstrap = secure_cluster.bootstrap()
    assert cluster_size(bootstrap, security=security).combined_voters == (1, 2, 3)
    secure_cluster.kill_node(3)
    try:
        wait_until(
            lambda: cluster_size(bootstrap, security=security).fenced == (3,), 90, what="node 3 fenced"
        )
        done = vudsync_cli(settings, bootstrap, "topics", "ensure", "--json")
        assert done.returncode == 0, done.stderr
        assert "Kafka brokers [3] of [1, 2, 3] are not live" in done.stderr
        created = json.loads(done.stdout)["created"]
        assert len(created) == len(ALL_TOPICS)
        with admin_client(bootstrap, security=security) as client:
            described = client.describe_topics(created)
            configs = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in created])
        assert {len(p["replica_nodes"]) for topic in described for p in topic["partitions"]} == {3}
        assert {configs["topic"][t]["min.insync.replicas"]["value"] for t in created} == {"2"}
    finally:
        secure_cluster.start_node(3)
        wait_until(lambda: cluster_size(bootstrap, security=security).missing == (), 120, what="node 3 back")
