"""Configure: what one local KRaft node is told — its ports, its ``server.properties``, its
cluster id and the JVM's flags. No process is started here."""

from __future__ import annotations

import base64
import socket
import uuid
from pathlib import Path

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
