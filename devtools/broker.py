"""A real single-node Apache Kafka broker (KRaft, broker+controller) run by vudsync as a child process.

Jars come from Maven Central through the checked-in ``pom.xml`` (:meth:`LocalKafkaBroker.fetch`)
into a cache shared by every home: ``<cache root>/<version>/libs`` where the cache root is
``$VUDSYNC_KAFKA_CACHE`` or ``~/.cache/vudsync/kafka``. Everything else lives under
``<home>/kafka``::

    server.properties   written by up(); its ports are reused on the next up()
    data/               KRaft metadata + topic logs (formatted once)
    broker.log          the JVM's stdout/stderr (log4j2 -> stdout)
    broker.json         pid, ports, bootstrap of the running broker; removed by down()
    .lock               serialises up()/down() of this home across processes

Contracts: ``up()`` is idempotent (a recorded broker whose pid is alive and whose port
answers is returned, none is started); ``down()`` signals exactly the recorded pid (after
checking /proc that it is our broker for this home), SIGTERM then SIGKILL, and returns only
when that process is gone.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kernel import admin
from kernel.errors import ConfigurationError, RetryableError, VudsyncError
from kernel.settings import Settings

log = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent
_DEFAULT_POM = _PACKAGE_DIR.parent / "pom.xml"
_LOG4J2_CONFIG = _PACKAGE_DIR / "log4j2.xml"
_MIN_JAVA = 17  # Kafka 4.x brokers need Java 17+
_START_ATTEMPTS = 3
_MARKER = "COMPLETE"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

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


class BrokerStartError(VudsyncError):
    """The local broker process exited or did not answer before its deadline."""


class FetchError(RetryableError):
    """Maven could not fetch the broker's jars (network, or a version Maven Central lacks)."""


@dataclass(frozen=True)
class BrokerStatus:
    """What ``vudsync kafka status`` shows."""

    running: bool
    ready: bool
    pid: int | None
    bootstrap: str | None
    version: str
    home: str
    log_path: str
    started_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_cache_root() -> Path:
    """``$VUDSYNC_KAFKA_CACHE`` or ``~/.cache/vudsync/kafka``: jar caches shared by every home."""
    configured = os.environ.get("VUDSYNC_KAFKA_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache/vudsync/kafka"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (bind port 0 and ask the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, url-safe base64 without padding, not starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _proc_state(pid: int) -> str | None:
    """The /proc state letter of ``pid`` (``R``, ``S``, ``Z``…), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def _thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _tail(path: Path, lines: int = 25) -> str:
    """The last lines of the broker log written since vudsync's last step marker."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no broker log)"
    text = text[text.rfind("\n=== vudsync:") + 1 :]
    # the config dumps are long and tab-indented: the interesting lines are the others
    wanted = [line for line in text.splitlines() if line and not line.startswith("\t")]
    return "\n".join(wanted[-lines:])


def _require(program: str, hint: str) -> str:
    found = shutil.which(program)
    if not found:
        raise ConfigurationError(f"`{program}` is not on PATH", hint=hint)
    return found


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


class LocalKafkaBroker:
    """One local KRaft broker for one vudsync home."""

    def __init__(
        self,
        home: Path,
        *,
        version: str,
        port: int = 0,
        heap: str = "512m",
        cache_root: Path | None = None,
        pom: Path | None = None,
        java: str = "java",
        mvn: str = "mvn",
        bind_to_parent: bool = False,
    ) -> None:
        """``bind_to_parent``: the broker gets SIGTERM when the thread that started it dies
        (Linux ``PR_SET_PDEATHSIG``) — for test sessions; the CLI's broker outlives the CLI."""
        self.home = Path(home).resolve()
        self.version = version
        self.port = port
        self.heap = heap
        self.cache_dir = (cache_root or default_cache_root()).resolve() / version
        self.pom = pom or _DEFAULT_POM
        self.java = java
        self.mvn = mvn
        self.bind_to_parent = bind_to_parent
        self.dir = self.home / "kafka"
        self.data_dir = self.dir / "data"
        self.properties_path = self.dir / "server.properties"
        self.log_path = self.dir / "broker.log"
        self.record_path = self.dir / "broker.json"
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> LocalKafkaBroker:
        kwargs: dict[str, Any] = {
            "version": settings.kafka_version,
            "port": settings.kafka_port,
            "heap": settings.kafka_heap,
        }
        kwargs.update(overrides)
        return cls(settings.home, **kwargs)

    # -- jars -------------------------------------------------------------------------

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / "libs"

    def is_fetched(self) -> bool:
        return (self.cache_dir / _MARKER).is_file() and any(
            self.libs_dir.glob(f"kafka_2.13-{self.version}.jar")
        )

    def fetch(self, *, force: bool = False) -> Path:
        """Copy the broker's run-time jars from Maven Central into the cache; return the libs folder.

        Skipped when the cache's marker says a previous fetch completed. Safe to run from several
        processes at once (a file lock; the jars land in a temporary folder renamed at the end).
        """
        if self.is_fetched() and not force:
            return self.libs_dir
        mvn = _require(
            self.mvn, "install Apache Maven (Debian: `apt-get install maven`) and a Java 17+ JDK"
        )
        if not self.pom.is_file():
            raise ConfigurationError(
                f"no pom.xml at {self.pom}",
                hint="run from a vudsync checkout, or pass the pom's path explicitly",
            )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.cache_dir / ".lock"):
            if self.is_fetched() and not force:
                return self.libs_dir
            staging = self.cache_dir / f"libs.tmp-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            command = [
                mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(self.pom),
                "dependency:copy-dependencies",
                f"-Dkafka.version={self.version}", "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ]
            started = time.monotonic()
            log.info("fetching Kafka %s jars: %s", self.version, " ".join(command))
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            (self.cache_dir / "fetch.log").write_text(result.stdout + result.stderr)
            if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
                shutil.rmtree(staging, ignore_errors=True)
                raise self._fetch_failure(result)
            shutil.rmtree(self.libs_dir, ignore_errors=True)
            staging.rename(self.libs_dir)
            jars = sorted(p.name for p in self.libs_dir.glob("*.jar"))
            (self.cache_dir / _MARKER).write_text(
                json.dumps({"version": self.version, "jars": jars, "fetched_at": time.time()})
            )
            log.info("fetched %d jars in %.1f s", len(jars), time.monotonic() - started)
        return self.libs_dir

    def _fetch_failure(self, result: subprocess.CompletedProcess[str]) -> VudsyncError:
        output = _ANSI.sub("", result.stdout + result.stderr)
        message = f"maven could not fetch Kafka {self.version} (exit {result.returncode})"
        if "Could not find artifact" in output or "was not found in" in output:
            return ConfigurationError(
                f"{message}: Maven Central has no Kafka {self.version}",
                hint="set VUDSYNC_KAFKA_VERSION to a released 4.x version",
            )
        errors = [line for line in output.splitlines() if line.startswith("[ERROR] ")]
        return FetchError(
            message + ":\n" + "\n".join(errors[:5] or output.splitlines()[-10:]),
            hint="check that this machine reaches Maven Central; "
            f"full output in {self.cache_dir / 'fetch.log'}",
        )

    # -- state ------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str | None:
        """``127.0.0.1:<port>`` of the running broker, or None when none is recorded."""
        record = self._read_record()
        return str(record["bootstrap"]) if record else None

    def _read_record(self) -> dict[str, Any] | None:
        try:
            record: dict[str, Any] = json.loads(self.record_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return record

    def _gone(self, pid: int) -> bool:
        """``pid`` has exited. Our own child is reaped here (else it stays a zombie in /proc).

        A JVM's main thread can turn zombie while its other threads still shut down, so for
        a process that is not our child a zombie counts as gone only once it has no threads left.
        """
        child = self._children.get(pid)
        if child is not None:
            if child.poll() is None:
                return False
            del self._children[pid]
            return True
        state = _proc_state(pid)
        if state is None:
            return True
        if state in ("Z", "X"):
            return _thread_count(pid) <= 1
        return False

    def _is_our_broker(self, pid: int) -> bool:
        """``pid`` runs, and is kafka.Kafka with this home's server.properties (not a reused pid)."""
        if pid in self._children:  # our own child: its pid cannot be reused before we reap it
            return not self._gone(pid)
        if self._gone(pid):
            return False
        argv = _cmdline(pid)
        return "kafka.Kafka" in argv and str(self.properties_path) in argv

    def _our_pids(self) -> list[int]:
        """Every live broker process of this home, recorded or not (found through /proc)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and self._is_our_broker(int(entry.name)):
                pids.append(int(entry.name))
        return sorted(pids)

    def status(self) -> BrokerStatus:
        record = self._read_record()
        pid = int(record["pid"]) if record else None
        running = pid is not None and self._is_our_broker(pid)
        bootstrap = str(record["bootstrap"]) if record else None
        ready = running and bootstrap is not None and admin.tcp_answers(bootstrap, 1.0)
        return BrokerStatus(
            running=running,
            ready=ready,
            pid=pid if running else None,
            bootstrap=bootstrap if running else None,
            version=str(record["version"]) if record else self.version,
            home=str(self.home),
            log_path=str(self.log_path),
            started_at=float(record["started_at"]) if record and running else None,
        )

    # -- life-cycle -------------------------------------------------------------------

    def up(self, *, timeout: float = 90.0) -> BrokerStatus:
        """Start the broker unless this home's broker already runs; return once it answers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.dir / ".lock"):
            current = self.status()
            if current.running and current.bootstrap:
                assert current.pid is not None
                log.info("broker already running: pid %d at %s", current.pid, current.bootstrap)
                if current.version != self.version:
                    log.warning(
                        "the running broker is Kafka %s, not %s: `vudsync kafka down` first to switch",
                        current.version, self.version,
                    )
                self._wait_ready(current.pid, current.bootstrap, timeout)
                return self.status()
            strays = self._our_pids()
            if strays:
                raise BrokerStartError(
                    f"a broker of this home runs without a record (pid {strays}); not starting a second",
                    hint=f"stop it with `kill {' '.join(map(str, strays))}` or `vudsync kafka down`",
                )
            self.record_path.unlink(missing_ok=True)
            java = _require(
                self.java, "install a Java 17+ runtime (Debian: `apt-get install openjdk-17-jre-headless`)"
            )
            if (major := _java_major(java)) < _MIN_JAVA:
                raise ConfigurationError(
                    f"Kafka {self.version} needs Java {_MIN_JAVA}+, `{java}` is Java {major}",
                    hint="install openjdk-17-jre-headless (or newer) and put it first on PATH",
                )
            libs = self.fetch()
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    return self._start(java, libs, timeout)
                except BrokerStartError as exc:
                    # a port picked free a moment ago can be taken (another test's broker, or a
                    # client's ephemeral port) before the JVM binds it: pick again
                    if "Address already in use" not in str(exc) or attempt == _START_ATTEMPTS:
                        raise
                    log.warning("broker port taken during start-up; retrying (%d)", attempt)
            raise AssertionError("unreachable")

    def _start(self, java: str, libs: Path, timeout: float) -> BrokerStatus:
        port, controller_port = self._choose_ports()
        self._write_properties(port, controller_port)
        self._format_storage(java, libs)
        pid = self._spawn(java, libs)
        bootstrap = f"127.0.0.1:{port}"
        record = {
            "pid": pid,
            "bootstrap": bootstrap,
            "port": port,
            "controller_port": controller_port,
            "version": self.version,
            "heap": self.heap,
            "log": str(self.log_path),
            "started_at": time.time(),
        }
        self.record_path.write_text(json.dumps(record, indent=2))
        try:
            self._wait_ready(pid, bootstrap, timeout)
        except BaseException:
            self._stop_pid(pid, grace=10.0)
            self.record_path.unlink(missing_ok=True)
            raise
        log.info("broker %s up: pid %d at %s", self.version, pid, bootstrap)
        return self.status()

    def down(self, *, grace: float = 20.0) -> bool:
        """Stop this home's broker (SIGTERM, then SIGKILL after ``grace`` s). True if one was running."""
        if not self.dir.is_dir():
            return False
        with _locked(self.dir / ".lock"):
            record = self._read_record()
            pids = set(self._our_pids())
            if record:
                pid = int(record["pid"])
                if self._is_our_broker(pid):
                    pids.add(pid)
            for pid in sorted(pids):
                self._stop_pid(pid, grace=grace)
            self.record_path.unlink(missing_ok=True)
            return bool(pids)

    # -- internals --------------------------------------------------------------------

    def _choose_ports(self) -> tuple[int, int]:
        """The client port (``port`` or a free one) and the controller port.

        A formatted KRaft log remembers its controller's endpoint, so an existing home keeps the
        controller port of its server.properties; the client port is re-picked when it was 0.
        """
        old = _read_properties(self.properties_path)
        formatted = (self.data_dir / "meta.properties").is_file()
        controller_port = 0
        if formatted and "controller.quorum.bootstrap.servers" in old:
            controller_port = int(old["controller.quorum.bootstrap.servers"].rpartition(":")[2])
            if not _port_is_free(controller_port):
                raise BrokerStartError(
                    f"controller port {controller_port} of {self.home} is taken by another process",
                    hint=f"free the port, or delete {self.data_dir} to start with an empty broker",
                )
        port = self.port
        if port and not _port_is_free(port):
            raise ConfigurationError(
                f"port {port} is in use", hint="set VUDSYNC_KAFKA_PORT=0 to pick a free port"
            )
        port = port or free_port()
        while not controller_port or controller_port == port:
            controller_port = free_port()
        return port, controller_port

    def _write_properties(self, port: int, controller_port: int) -> None:
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
            "log.dirs": str(self.data_dir),
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
        self.dir.mkdir(parents=True, exist_ok=True)
        text = "# written by devtools.broker.LocalKafkaBroker; rewritten on every `up`\n"
        text += "".join(f"{key}={value}\n" for key, value in properties.items())
        self.properties_path.write_text(text)

    def _format_storage(self, java: str, libs: Path) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        command = [
            java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{libs}/*",
            f"-Dlog4j2.configurationFile={_LOG4J2_CONFIG}",
            "kafka.tools.StorageTool", "format", "--standalone",
            "--cluster-id", _new_cluster_id(), "--config", str(self.properties_path),
        ]
        with self.log_path.open("ab") as out:
            out.write(f"\n=== vudsync: format {self.data_dir} ===\n".encode())
            out.flush()
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise BrokerStartError(
                f"formatting KRaft storage failed (exit {result.returncode}); "
                f"end of {self.log_path}:\n{_tail(self.log_path)}"
            )

    def _jvm_command(self, java: str, libs: Path) -> list[str]:
        return [
            java, f"-Xmx{self.heap}", f"-Xms{self.heap}", *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={_LOG4J2_CONFIG}",
            "-cp", f"{libs}/*",
            "kafka.Kafka", str(self.properties_path),
        ]

    def _spawn(self, java: str, libs: Path) -> int:
        command = self._jvm_command(java, libs)
        with self.log_path.open("ab") as out:
            out.write(f"\n=== vudsync: start {' '.join(command)} ===\n".encode())
            out.flush()
            process = subprocess.Popen(
                command,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # detached: survives the CLI, not hit by its Ctrl-C
                close_fds=True,
                preexec_fn=_die_with_parent if self.bind_to_parent else None,
            )
        self._children[process.pid] = process
        return process.pid

    def _wait_ready(self, pid: int, bootstrap: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self._is_our_broker(pid):
                raise BrokerStartError(
                    f"the Kafka broker (pid {pid}) exited during start-up; "
                    f"end of {self.log_path}:\n{_tail(self.log_path)}",
                    hint="read the broker log; `vudsync kafka down` then `up` retries",
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerStartError(
                    f"the Kafka broker (pid {pid}) did not answer at {bootstrap} within "
                    f"{timeout:.0f} s; end of {self.log_path}:\n{_tail(self.log_path)}",
                    hint="a slow machine may need more time: `vudsync kafka up --timeout 180`",
                )
            try:
                admin.wait_for_broker(bootstrap, timeout=min(2.0, remaining))
                return
            except admin.BrokerUnavailable:
                continue

    def _stop_pid(self, pid: int, *, grace: float) -> None:
        """SIGTERM ``pid``, SIGKILL it after ``grace`` s, and return once it has exited.

        The pid is checked against /proc (our broker for this home) before it is signalled.
        """
        if not self._is_our_broker(pid):
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            log.info("sending %s to broker pid %d", sig.name, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self._gone(pid):
                    return
                time.sleep(0.05)
        raise BrokerStartError(f"broker pid {pid} still runs after SIGKILL")


def _die_with_parent() -> None:
    """In the forked child: ask Linux for SIGTERM when the parent thread exits."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _read_properties(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing), held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
