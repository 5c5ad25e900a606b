"""A local KRaft cluster of several combined broker/controller nodes, optionally secured.

``vudsync kafka up --brokers 3 [--secure]``. Each node is a :class:`LocalKafkaBroker` of its own
folder (``<home>/kafka-cluster/node-<i>/kafka``: properties, data, log, record), formatted with
the same cluster id and static voters. Secured (``--secure``):

* the client listener is SASL_SSL: a CA and a broker certificate generated here
  (:mod:`devtools.broker.certs`), SCRAM-SHA-512 users created at format time, one per component
  (:mod:`devtools.broker.acls`), passwords in ``credentials.json`` (mode 0600);
* the ``StandardAuthorizer`` with the components' ACLs, created through the Admin API on the
  internal listener once the cluster answers.

``cluster.json`` keeps the layout (ports, cluster id) so that ``up`` after ``down`` restarts the
same formatted cluster: KRaft nodes remember their voters' endpoints.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourceType,
)
from pydantic import SecretStr

from devtools.broker.acls import COMPONENTS, component_acls, principal
from devtools.broker.configure import CLUSTER_MECHANISM, cluster_node_properties, free_port, new_cluster_id
from devtools.broker.fetch import locked
from devtools.broker.run import BrokerStartError, LocalKafkaBroker, read_state_file
from kernel import admin
from kernel.errors import ConfigurationError, PermanentError
from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterStatus:
    """What ``vudsync kafka up --brokers N`` prints."""

    running: bool
    brokers: int
    secure: bool
    bootstrap: str | None
    pids: list[int]
    ca_file: str | None
    credentials: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Node(LocalKafkaBroker):
    """One node: its properties come from the cluster, its storage is formatted with the
    cluster's id, static voters and (secured) SCRAM users."""

    def __init__(self, home: Path, properties: dict[str, str], format_args: list[str], **kwargs: Any) -> None:
        super().__init__(home, **kwargs)
        self.node_properties = properties
        self.node_format_args = format_args

    def _write_properties(self, port: int, controller_port: int) -> None:
        from devtools.broker.configure import write_properties

        write_properties(self.properties_path, self.node_properties)

    def _format_args(self) -> list[str]:
        return self.node_format_args


class LocalKafkaCluster:
    """``brokers`` local nodes for one vudsync home; ``secure`` adds TLS, SCRAM and ACLs."""

    def __init__(
        self,
        settings: Settings,
        *,
        brokers: int = 3,
        secure: bool = False,
        heap: str = "320m",
        bind_to_parent: bool = False,
    ) -> None:
        self.settings = settings
        self.brokers = brokers
        self.secure = secure
        self.heap = heap
        self.bind_to_parent = bind_to_parent
        self.dir = settings.home.resolve() / "kafka-cluster"
        self.layout_path = self.dir / "cluster.json"
        self.credentials_path = self.dir / "credentials.json"
        self.tls_dir = self.dir / "tls"

    @classmethod
    def found(cls, settings: Settings) -> LocalKafkaCluster | None:
        """The cluster ``vudsync kafka up --brokers N [--secure]`` made in ``settings``' home, as
        it was made (brokers, secured or not); None when there is none."""
        probe = cls(settings)
        layout = probe._layout()
        if layout is None:
            return None
        return cls(settings, brokers=int(layout["brokers"]), secure=bool(layout["secure"]))

    # -- what clients need ---------------------------------------------------------------

    def _layout(self) -> dict[str, Any] | None:
        return read_state_file(self.layout_path)

    def bootstrap(self) -> str:
        layout = self._require_layout()
        return ",".join(f"127.0.0.1:{client}" for client, _, _ in layout["ports"])

    def internal_bootstrap(self) -> str:
        layout = self._require_layout()
        return ",".join(f"127.0.0.1:{internal}" for _, internal, _ in layout["ports"])

    def _require_layout(self) -> dict[str, Any]:
        layout = self._layout()
        if layout is None:
            raise BrokerStartError(f"no cluster in {self.dir}", hint="`vudsync kafka up --brokers 3`")
        return layout

    def passwords(self) -> dict[str, str]:
        """Each component's SCRAM password (secured clusters), from ``credentials.json``."""
        return dict(json.loads(self.credentials_path.read_text()))

    def security(self, component: str) -> KafkaSecurity:
        """How ``component`` (producer, planner, sink, cloud-capture, ops) connects to this cluster."""
        if not self.secure:
            return KafkaSecurity()
        passwords = self.passwords()
        if component not in passwords:  # formatted before the component had a user
            raise ConfigurationError(
                f"the secured cluster in {self.dir} has no user for {component}",
                hint=f"`vudsync kafka down --brokers {self.brokers}`, delete {self.dir}, then up again",
            )
        return KafkaSecurity(
            security_protocol="SASL_SSL",
            sasl_mechanism=CLUSTER_MECHANISM,
            username=principal(component),
            password=SecretStr(passwords[component]),
            ca_file=self.tls_dir / "ca.pem",
        )

    # -- life-cycle ----------------------------------------------------------------------

    def _nodes(self, layout: dict[str, Any]) -> list[_Node]:
        ports = [(int(c), int(i), int(k)) for c, i, k in layout["ports"]]
        keystore = None
        format_args = ["--cluster-id", layout["cluster_id"]]
        if layout["secure"]:
            from devtools.broker.certs import write_broker_tls

            if not (self.tls_dir / "broker.p12").is_file() or "keystore_password" not in layout:
                tls = write_broker_tls(self.tls_dir)
                layout["keystore_password"] = tls.keystore_password
            keystore = (self.tls_dir / "broker.p12", str(layout["keystore_password"]))
            for component, password in self._ensure_passwords().items():
                format_args += [
                    "--add-scram",
                    f"{CLUSTER_MECHANISM}=[name={principal(component)},password={password}]",
                ]
        nodes = []
        for node_id in range(1, self.brokers + 1):
            home = self.dir / f"node-{node_id}"
            properties = cluster_node_properties(node_id, ports, home / "kafka" / "data", keystore=keystore)
            nodes.append(
                _Node(
                    home,
                    properties,
                    format_args,
                    version=self.settings.kafka_version,
                    heap=self.heap,
                    bind_to_parent=self.bind_to_parent,
                )
            )
        return nodes

    def _ensure_passwords(self) -> dict[str, str]:
        if self.credentials_path.is_file():
            return self.passwords()
        passwords = {component: secrets.token_urlsafe(18) for component in COMPONENTS}
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.credentials_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(passwords, out)
        return passwords

    def up(self, *, timeout: float = 180.0) -> ClusterStatus:
        """Start every node (or find them running), wait until the cluster answers with all its
        brokers, and (secured) create the components' ACLs. Idempotent."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with locked(self.dir / ".lock"):
            layout = self._layout()
            if layout is None or layout.get("brokers") != self.brokers or layout.get("secure") != self.secure:
                if layout is not None and any((self.dir / "node-1" / "kafka" / "data").glob("*")):
                    raise BrokerStartError(
                        f"{self.dir} holds a cluster of another shape",
                        hint=f"`vudsync kafka down --brokers N` then delete {self.dir}",
                    )
                layout = {
                    "brokers": self.brokers,
                    "secure": self.secure,
                    "cluster_id": new_cluster_id(),
                    "ports": self._free_ports(),
                }
            nodes = self._nodes(layout)
            # the keystore's password is in it: readable by this user only
            self.layout_path.touch(mode=0o600)
            self.layout_path.write_text(json.dumps(layout, indent=2))
            java, libs = nodes[0].java_and_jars()
            deadline = time.monotonic() + timeout
            try:
                for node, (_, internal, controller) in zip(nodes, layout["ports"], strict=True):
                    if not node.status().running:
                        node.launch(java, libs, internal, controller)
                for node in nodes:
                    node.wait_ready(max(deadline - time.monotonic(), 1.0))
                self._wait_for_brokers(deadline)
                if self.secure:
                    self.grant(self.settings)
            except BaseException:
                for node in nodes:
                    node.down(grace=10.0)
                raise
        return self.status()

    def _free_ports(self) -> list[list[int]]:
        ports: set[int] = set()
        while len(ports) < 3 * self.brokers:
            ports.add(free_port())
        chosen = sorted(ports)
        return [chosen[i : i + 3] for i in range(0, len(chosen), 3)]

    def _wait_for_brokers(self, deadline: float) -> None:
        while True:
            cluster = admin.wait_for_broker(self.internal_bootstrap(), max(deadline - time.monotonic(), 1.0))
            if len(cluster.get("brokers") or []) >= self.brokers:
                return
            if time.monotonic() > deadline:
                raise BrokerStartError(f"the cluster in {self.dir} has not all {self.brokers} brokers yet")
            time.sleep(0.2)

    def grant(self, settings: Settings) -> None:
        """Create the components' ACLs for ``settings``' topic prefix and groups, through the
        internal listener (its principal is a super user). ``up`` grants them for the cluster's
        own settings; a test with a topic prefix of its own grants them for it. Idempotent."""
        acls = [
            ACL(
                principal=f"User:{grant.principal}",
                host="*",
                operation=ACLOperation[operation],
                permission_type=ACLPermissionType.ALLOW,
                resource_pattern=ResourcePattern(
                    ResourceType[grant.resource], grant.name, ACLResourcePatternType[grant.pattern]
                ),
            )
            for grant in component_acls(settings)
            for operation in grant.operations
        ]
        with admin.admin_client(self.internal_bootstrap()) as client:
            result = client.create_acls(acls)
        if result.get("failed"):
            raise PermanentError(f"creating ACLs failed: {result['failed'][:3]}")
        log.info("created %d ACLs", len(acls))

    # -- one node: a broker lost mid-stream ------------------------------------------------

    def _node(self, node_id: int) -> tuple[_Node, list[int]]:
        layout = self._require_layout()
        if not 1 <= node_id <= len(layout["ports"]):
            raise BrokerStartError(f"the cluster in {self.dir} has no node {node_id}")
        return self._nodes(layout)[node_id - 1], [int(p) for p in layout["ports"][node_id - 1]]

    def kill_node(self, node_id: int) -> bool:
        """SIGKILL node ``node_id`` (1-based, its broker id): no controlled shutdown, its
        partitions lose their leader until the controller elects another. True if it ran."""
        node, _ = self._node(node_id)
        with locked(self.dir / ".lock"):
            return node.kill()

    def start_node(self, node_id: int, *, timeout: float = 120.0) -> None:
        """Start node ``node_id`` again (same ports, same data) and wait until it answers; it
        catches up as a follower and rejoins the in-sync replicas by itself."""
        node, (_, internal, controller) = self._node(node_id)
        with locked(self.dir / ".lock"):
            if not node.status().running:
                java, libs = node.java_and_jars()
                node.launch(java, libs, internal, controller)
            node.wait_ready(timeout)

    def down(self, *, grace: float = 20.0) -> bool:
        """Stop every node of this home's cluster; True if any ran. Data and layout stay."""
        layout = self._layout()
        if layout is None:
            return False
        with locked(self.dir / ".lock"), ThreadPoolExecutor(self.brokers) as pool:
            # all at once: the last node alone would wait for a quorum to shut down cleanly
            stopped = list(pool.map(lambda node: node.down(grace=grace), self._nodes(layout)))
        return any(stopped)

    def status(self) -> ClusterStatus:
        layout = self._layout()
        nodes = self._nodes(layout) if layout else []
        states = [node.status() for node in nodes]
        running = bool(states) and all(s.running for s in states)
        return ClusterStatus(
            running=running,
            brokers=self.brokers,
            secure=self.secure,
            bootstrap=self.bootstrap() if running else None,
            pids=[s.pid for s in states if s.pid is not None],
            ca_file=str(self.tls_dir / "ca.pem") if self.secure else None,
            credentials=str(self.credentials_path) if self.secure else None,
        )


@dataclass(frozen=True)
class KafkaTarget:
    """Where a pipeline (tests, benchmarks) connects: a single PLAINTEXT broker, a local
    secured ``cluster``, where each component has its own principal, or a given cluster where
    every component connects as one ``shared`` principal."""

    bootstrap: str
    cluster: LocalKafkaCluster | None = None
    shared: KafkaSecurity = PLAINTEXT

    def security(self, component: str) -> KafkaSecurity:
        """How ``component`` (producer, planner, sink, ops) connects."""
        return self.cluster.security(component) if self.cluster else self.shared

    def describe(self) -> str:
        """One line for a report: which kind of cluster, never a secret."""
        if self.cluster is not None:
            secured = "secured (SASL_SSL, SCRAM, ACLs)" if self.cluster.secure else "PLAINTEXT"
            return f"local {self.cluster.brokers}-node cluster, {secured}, one principal per component"
        return f"{self.shared.security_protocol}, every component as {self.shared.username or 'anonymous'}"

    @classmethod
    def from_settings(cls, settings: Settings, bootstrap: str) -> KafkaTarget:
        """Where ``settings`` connect at ``bootstrap``: the local cluster of their home when
        ``bootstrap`` is its (``vudsync kafka up --brokers 3 --secure``: each component with its
        own principal from ``credentials.json``, the CA of ``tls/``), else ``bootstrap`` with
        the settings' own ``VUDSYNC_KAFKA_*`` security for every component."""
        cluster = LocalKafkaCluster.found(settings)
        if cluster is not None and cluster.status().bootstrap == bootstrap:
            return cls(bootstrap, cluster)
        return cls(bootstrap, shared=settings.kafka_security())
