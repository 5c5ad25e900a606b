"""Configure: what one local KRaft node is told — its ports, its ``server.properties``, its
cluster id and the JVM's flags. No process is started here."""

from __future__ import annotations

import base64
import socket
import uuid
from pathlib import Path

from kernel.kafka_security import Mechanism

#: JVM flags for a small machine: the heap is set separately (-Xms = -Xmx = heap).
#: ``TieredStopAtLevel=1``: the C1 compiler only. C2 kept compiling for minutes on the
#: machine the broker shares with the pipeline: 1.7 of the 2.5 CPU-seconds the broker used
#: while the sink bench applied 40,000 operations, even after 100,000 operations of warm-up.
#: With C1 alone the broker's CPU fell from 0.047-0.093 to 0.016-0.034 ms per sink operation
#: and from 22 / 711 / 44 to 10 / 315 / 7 µs per captured event (snapshot / streaming at
#: 1,000 changes/s / backlog), see docs/benchmarks.md. This broker serves development, tests,
#: the demo and the benchmarks; a production cluster is configured by its operators.
JVM_FLAGS: tuple[str, ...] = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)

#: the broker's log4j2 configuration (everything to stdout, which goes to broker.log)
LOG4J2_CONFIG = Path(__file__).resolve().parent / "log4j2.xml"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (bind port 0 and ask the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, url-safe base64 without padding, not starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def server_properties(port: int, controller_port: int, data_dir: Path) -> dict[str, str]:
    """The ``server.properties`` of one combined broker/controller node on 127.0.0.1."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "log.dirs": str(data_dir),
        # a single node: every internal topic has one replica
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # consumer groups (tests, Faust workers) start at once instead of waiting 3 s
        "group.initial.rebalance.delay.ms": "0",
        # Faust declares its own internal topics (works with false too, checked), and our
        # topics come from the catalogue (kernel.admin.ensure_topics). True keeps ad-hoc
        # producers simple; the price: a send racing ensure_topics gets default settings.
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        # small machine: few threads
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "4",
        "log.retention.hours": "168",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }


def write_properties(path: Path, properties: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# written by devtools.broker.LocalKafkaBroker; rewritten on every `up`\n"
    text += "".join(f"{key}={value}\n" for key, value in properties.items())
    path.write_text(text)


def read_properties(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


#: the SASL mechanism of the secured local cluster's client listener
CLUSTER_MECHANISM: Mechanism = "SCRAM-SHA-512"


SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


def cluster_node_properties(
    node_id: int,
    ports: list[tuple[int, int, int]],
    data_dir: Path,
    *,
    keystore: tuple[Path, str] | None = None,
) -> dict[str, str]:
    """``server.properties`` of node ``node_id`` (1-based) of a local cluster of ``len(ports)``
    combined broker/controller nodes; ``ports`` holds each node's (client, internal, controller).

    Three listeners per node, all on 127.0.0.1: CLIENT (PLAINTEXT, or SASL_SSL with SCRAM when a
    ``keystore`` (path, password) is given), INTERNAL (between brokers) and CONTROLLER (the KRaft
    quorum), both PLAINTEXT. Secured, the ``StandardAuthorizer`` denies what no ACL allows; the
    internal and controller listeners' unauthenticated principal (``User:ANONYMOUS``) is the
    super user the brokers need — tolerable only because they listen on 127.0.0.1 of a
    development machine (docs/operations.md says what a production cluster does instead).
    """
    client, internal, controller = ports[node_id - 1]
    nodes = len(ports)
    replicas, min_isr = str(min(nodes, 3)), str(2 if nodes >= 3 else 1)
    properties = server_properties(internal, controller, data_dir)
    del properties["controller.quorum.bootstrap.servers"]
    client_protocol = "SASL_SSL" if keystore else "PLAINTEXT"
    properties |= {
        "node.id": str(node_id),
        "listeners": f"CLIENT://127.0.0.1:{client},INTERNAL://127.0.0.1:{internal},"
        f"CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"CLIENT://127.0.0.1:{client},INTERNAL://127.0.0.1:{internal}",
        "listener.security.protocol.map": f"CLIENT:{client_protocol},INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "INTERNAL",
        "controller.quorum.voters": ",".join(
            f"{i}@127.0.0.1:{c}" for i, (_, _, c) in enumerate(ports, start=1)
        ),
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
    }
    if keystore:
        path, password = keystore
        mechanism = CLUSTER_MECHANISM.lower()
        properties |= {
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
            # topics come from `vudsync topics ensure`, as the ops principal
            "auto.create.topics.enable": "false",
            "sasl.enabled.mechanisms": CLUSTER_MECHANISM,
            "listener.name.client.sasl.enabled.mechanisms": CLUSTER_MECHANISM,
            f"listener.name.client.{mechanism}.sasl.jaas.config": SCRAM_LOGIN_MODULE,
            "listener.name.client.ssl.keystore.type": "PKCS12",
            "listener.name.client.ssl.keystore.location": str(path),
            "listener.name.client.ssl.keystore.password": password,
            "listener.name.client.ssl.key.password": password,
        }
    return properties
