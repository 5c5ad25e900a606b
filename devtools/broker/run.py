"""Run: a real single-node Apache Kafka broker (KRaft, broker+controller) as a child process.

The jars come from :mod:`devtools.broker.fetch`, the node's configuration from
:mod:`devtools.broker.configure`. Everything else lives under ``<home>/kafka``::

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

import contextlib
import ctypes
import json
import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devtools.broker.configure import (
    JVM_FLAGS,
    LOG4J2_CONFIG,
    free_port,
    new_cluster_id,
    port_is_free,
    read_properties,
    server_properties,
    write_properties,
)
from devtools.broker.fetch import JarCache, locked, require
from kernel import admin
from kernel.errors import ConfigurationError, VudsyncError
from kernel.settings import Settings

log = logging.getLogger(__name__)

_MIN_JAVA = 17  # Kafka 4.x brokers need Java 17+
_START_ATTEMPTS = 3


class BrokerStartError(VudsyncError):
    """The local broker process exited or did not answer before its deadline."""


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


def read_state_file(path: Path) -> dict[str, Any] | None:
    """A state file this package wrote (JSON), or ``None`` when it is missing or half-written."""
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state


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
        self.jars = JarCache(version, cache_root=cache_root, pom=pom, mvn=mvn)
        self.cache_dir = self.jars.dir
        self.java = java
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
        return self.jars.libs_dir

    def is_fetched(self) -> bool:
        return self.jars.is_fetched()

    def fetch(self, *, force: bool = False) -> Path:
        """The broker's jars from Maven Central into the shared cache (see :class:`JarCache`)."""
        return self.jars.fetch(force=force)

    # -- state ------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str | None:
        """``127.0.0.1:<port>`` of the running broker, or None when none is recorded."""
        record = self._read_record()
        return str(record["bootstrap"]) if record else None

    def _read_record(self) -> dict[str, Any] | None:
        return read_state_file(self.record_path)

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
        with locked(self.dir / ".lock"):
            current = self.status()
            if current.running and current.bootstrap:
                assert current.pid is not None
                log.info("broker already running: pid %d at %s", current.pid, current.bootstrap)
                if current.version != self.version:
                    log.warning(
                        "the running broker is Kafka %s, not %s: `vudsync kafka down` first to switch",
                        current.version,
                        self.version,
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
            java, libs = self.java_and_jars()
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

    def java_and_jars(self) -> tuple[str, Path]:
        """The Java 17+ executable and the broker's jars (fetched when missing)."""
        java = require(
            self.java, "install a Java 17+ runtime (Debian: `apt-get install openjdk-17-jre-headless`)"
        )
        if (major := _java_major(java)) < _MIN_JAVA:
            raise ConfigurationError(
                f"Kafka {self.version} needs Java {_MIN_JAVA}+, `{java}` is Java {major}",
                hint="install openjdk-17-jre-headless (or newer) and put it first on PATH",
            )
        return java, self.fetch()

    def _start(self, java: str, libs: Path, timeout: float) -> BrokerStatus:
        port, controller_port = self._choose_ports()
        pid, bootstrap = self.launch(java, libs, port, controller_port)
        try:
            self._wait_ready(pid, bootstrap, timeout)
        except BaseException:
            self._stop_pid(pid, grace=10.0)
            self.record_path.unlink(missing_ok=True)
            raise
        log.info("broker %s up: pid %d at %s", self.version, pid, bootstrap)
        return self.status()

    def launch(self, java: str, libs: Path, port: int, controller_port: int) -> tuple[int, str]:
        """Write the properties, format the storage once, spawn the JVM and record it; returns
        its pid and bootstrap address without waiting for it to answer."""
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
        return pid, bootstrap

    def down(self, *, grace: float = 20.0) -> bool:
        """Stop this home's broker (SIGTERM, then SIGKILL after ``grace`` s). True if one was running."""
        if not self.dir.is_dir():
            return False
        with locked(self.dir / ".lock"):
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
        old = read_properties(self.properties_path)
        formatted = (self.data_dir / "meta.properties").is_file()
        controller_port = 0
        if formatted and "controller.quorum.bootstrap.servers" in old:
            controller_port = int(old["controller.quorum.bootstrap.servers"].rpartition(":")[2])
            if not port_is_free(controller_port):
                raise BrokerStartError(
                    f"controller port {controller_port} of {self.home} is taken by another process",
                    hint=f"free the port, or delete {self.data_dir} to start with an empty broker",
                )
        port = self.port
        if port and not port_is_free(port):
            raise ConfigurationError(
                f"port {port} is in use", hint="set VUDSYNC_KAFKA_PORT=0 to pick a free port"
            )
        port = port or free_port()
        while not controller_port or controller_port == port:
            controller_port = free_port()
        return port, controller_port

    def _write_properties(self, port: int, controller_port: int) -> None:
        write_properties(self.properties_path, server_properties(port, controller_port, self.data_dir))

    def _format_storage(self, java: str, libs: Path) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        command = [
            java,
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            "kafka.tools.StorageTool",
            "format",
            *self._format_args(),
            "--config",
            str(self.properties_path),
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

    def _format_args(self) -> list[str]:
        """How the storage is formatted: a one-node quorum with a new cluster id."""
        return ["--standalone", "--cluster-id", new_cluster_id()]

    def wait_ready(self, timeout: float) -> None:
        """Wait until the recorded broker answers (:class:`BrokerStartError` at ``timeout``)."""
        record = self._read_record()
        if not record:
            raise BrokerStartError(f"no broker is recorded in {self.record_path}")
        self._wait_ready(int(record["pid"]), str(record["bootstrap"]), timeout)

    def _jvm_command(self, java: str, libs: Path) -> list[str]:
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.properties_path),
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
            if self._signal_and_wait(pid, sig, wait):
                return
        raise BrokerStartError(f"broker pid {pid} still runs after SIGKILL")

    def _signal_and_wait(self, pid: int, sig: signal.Signals, wait: float) -> bool:
        """Send ``sig`` to ``pid``; True once it has exited within ``wait`` s."""
        log.info("sending %s to broker pid %d", sig.name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self._gone(pid):
                return True
            time.sleep(0.05)
        return False

    def kill(self) -> bool:
        """SIGKILL this home's broker at once — no controlled shutdown, no leadership handed
        over: the crash a cluster must survive. Its data and record stay, so :meth:`up` (or a
        cluster's ``start_node``) starts it again on the same ports. True if one was running."""
        status = self.status()
        if status.pid is None:
            return False
        if not self._signal_and_wait(status.pid, signal.SIGKILL, 10.0):
            raise BrokerStartError(f"broker pid {status.pid} still runs after SIGKILL")
        return True


def _die_with_parent() -> None:
    """In the forked child: ask Linux for SIGTERM when the parent thread exits."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
