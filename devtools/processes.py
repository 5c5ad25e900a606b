"""Child processes of vudsync (pipeline components run by the demo and the tests).

Each child runs ``python -m vudsync.cli ...`` in its own process group with its output in a
log file, and is stopped by its pid: SIGTERM first (graceful), SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from pydantic import SecretStr

from kernel.errors import VudsyncError
from kernel.kafka_security import PLAINTEXT, KafkaSecurity
from kernel.scrape import Samples, ScrapeFailed, scrape, total
from kernel.settings import SECRET_FIELDS, Settings


def terminate(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    return proc.returncode


class ComponentProcess:
    def __init__(self, name: str, args: Sequence[str], *, env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = list(args)
        self.env = {**os.environ, **env}
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> ComponentProcess:
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "vudsync", *self.args],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def kill(self) -> None:
        """SIGKILL: the crash the pipeline must survive."""
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=30)

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
        if self._proc is None:
            return None
        code = terminate(self._proc, grace)
        if self._log:
            self._log.close()
            self._log = None
        return code

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until(condition: object, timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    """Poll ``condition()`` until true; raise TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.0f}s")


def kafka_security_env(security: KafkaSecurity) -> dict[str, str]:
    """``VUDSYNC_KAFKA_*`` variables that make a child connect as ``security`` says (none for
    PLAINTEXT). The password is among them, in clear: a child's environment, never a log."""
    if security == PLAINTEXT:
        return {}
    values = security.model_dump()
    return {
        f"VUDSYNC_KAFKA_{name.upper()}": v.get_secret_value() if isinstance(v, SecretStr) else str(v)
        for name, v in values.items()
        if v is not None
    }


def component_env(settings: Settings, bootstrap: str, **extra: str) -> dict[str, str]:
    """The environment of a child component: the same settings as this process, explicitly."""
    env = {
        "VUDSYNC_HOME": str(settings.home),
        "VUDSYNC_KAFKA_BOOTSTRAP": bootstrap,
        "VUDSYNC_TOPIC_PREFIX": settings.topic_prefix,
        "VUDSYNC_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "VUDSYNC_STORE_URL": settings.resolved_store_url(),
        "VUDSYNC_CLOUD_URL": settings.cloud_url,
        "VUDSYNC_CLOUD_CLIENT_ID": settings.cloud_client_id,
        "VUDSYNC_CONFIG": "/nonexistent/vudsync.toml",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(kafka_security_env(settings.kafka_security()))
    for name in SECRET_FIELDS:  # the secrets this process has (devtools.secrets generates them)
        value = getattr(settings, name)
        if value is not None:
            env[f"VUDSYNC_{name.upper()}"] = value.get_secret_value()
    env.update(extra)
    return env


class PipelineWorkers:
    """The producer, the planners and the sinks — with ``writeback``, also cloud-capture and a
    directory sink (cloud → directory) — as separate ``vudsync run`` processes, as an operator
    starts them, each with a metrics port: started, watched and stopped together (the demo,
    ``vudsync bench pipeline``, ``vudsync bench writeback``).

    ``planners`` / ``sinks`` > 1: that many processes of the role, named ``planner-1`` … (one
    process of a role keeps the role's name), each with its own ``--worker-name`` (a planner's
    state folder, a sink's client id) and sharing the role's consumer group, so the partitions
    split between them as between an operator's workers."""

    ROLES = ("producer", "planner", "sink")
    WRITEBACK = ("cloud-capture", "directory-sink")

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        log_dir: Path,
        security: Callable[[str], KafkaSecurity] | None = None,
        *,
        planners: int = 1,
        sinks: int = 1,
        writeback: bool = False,
        **extra: str,
    ) -> None:
        """``security`` gives each role its own principal on a secured cluster
        (:meth:`devtools.broker.cluster.KafkaTarget.security`); without it, they connect as
        ``settings``. ``writeback`` adds cloud-capture and the directory sink (off by default:
        two more processes a run that does not need them would wait for); ``extra``: more
        environment for every component (``VUDSYNC_WRITEBACK_POLL_INTERVAL`` …)."""

        def own(role: str) -> Settings:
            return settings.with_kafka_security(security(role)) if security else settings

        counts = {"producer": 1, "planner": planners, "sink": sinks}
        if writeback:
            counts |= {role: 1 for role in self.WRITEBACK}
        self.roles: dict[str, str] = {}  # process name → role
        self.worker_names: dict[str, str] = {}  # process name → --worker-name, when several
        for role, count in counts.items():
            if count < 1:
                raise ValueError(f"at least one {role}")
            for i in range(1, count + 1):
                name = role if count == 1 else f"{role}-{i}"
                self.roles[name] = role
                if count > 1:
                    self.worker_names[name] = f"worker-{i}"
        envs = {role: component_env(own(role), bootstrap, **extra) for role in counts}
        self.envs = {name: envs[role] for name, role in self.roles.items()}
        self.log_dir = log_dir
        self.procs: dict[str, ComponentProcess] = {}
        self.ports: dict[str, int] = {}

    def names(self, role: str) -> list[str]:
        """The processes of ``role``, in start order."""
        return [name for name, r in self.roles.items() if r == role]

    def start(self) -> PipelineWorkers:
        from devtools.broker import free_port

        for name, role in self.roles.items():
            self.ports[name] = free_port()
            worker = ["--worker-name", self.worker_names[name]] if name in self.worker_names else []
            self.procs[name] = ComponentProcess(
                name,
                ["run", role, "--metrics-port", str(self.ports[name]), *worker],
                env=self.envs[name],
                log_dir=self.log_dir,
            ).start()
        return self

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items() if proc.pid is not None}

    @property
    def metrics_urls(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{port}/metrics" for name, port in self.ports.items()}

    def scrape(self) -> dict[str, Samples]:
        """Each worker's samples; none for one that does not answer (yet)."""
        out: dict[str, Samples] = {}
        for name, url in self.metrics_urls.items():
            try:
                out[name] = scrape(url)
            except ScrapeFailed:
                out[name] = {}
        return out

    def check_alive(self) -> None:
        """Raise VudsyncError naming the first worker that stopped, with its log's tail."""
        for name, proc in self.procs.items():
            if not proc.alive():
                raise VudsyncError(
                    f"the {name} stopped (exit {proc.returncode()}):\n{proc.tail(20)}",
                    hint=f"its log: {proc.log_path}",
                )

    def progress(self, per_worker: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
        """The pipeline's counters now, summed over the processes of each role: changes
        captured, events the planners have taken (any outcome), operations planned, operations
        the sinks have handled (any outcome), dead-lettered, parked, the producer's capture
        lag, how many metrics endpoints did not answer (their counters then read 0), the
        sinks' calls to the cloud (batches, the operations in them, single calls), and with
        ``writeback`` its counters. ``per_worker``: filled with each planner's and sink's own
        counters."""
        m = self.scrape()

        def role_total(role: str, metric: str, **labels: str) -> float:
            return sum(total(m[name], metric, **labels) for name in self.names(role))

        if per_worker is not None:
            for name in self.names("planner"):
                per_worker[name] = {
                    "events": total(m[name], "vudsync_planner_events_total"),
                    "planned": total(m[name], "vudsync_operations_planned_total"),
                    "parked": total(m[name], "vudsync_parked_operations"),
                }
            for name in self.names("sink"):
                per_worker[name] = {"handled": total(m[name], "vudsync_sink_operations_total")}
        return {
            "captured": role_total("producer", "vudsync_source_changes_captured_total"),
            "planner_events": role_total("planner", "vudsync_planner_events_total"),
            "planned": role_total("planner", "vudsync_operations_planned_total"),
            "handled": role_total("sink", "vudsync_sink_operations_total"),
            "dead_lettered": role_total("sink", "vudsync_sink_operations_total", outcome="dead_lettered"),
            "parked": role_total("planner", "vudsync_parked_operations"),
            "capture_lag_seconds": role_total("producer", "vudsync_source_capture_lag_seconds"),
            "unanswered": float(sum(1 for samples in m.values() if not samples)),
            # how the sinks reach the cloud: calls of POST /v1/batch (and the operations they
            # carried) against calls of one operation alone
            "sink_batch_calls": role_total("sink", "vudsync_sink_cloud_calls_total", endpoint="batch"),
            "sink_batched_operations": role_total("sink", "vudsync_sink_batch_operations_sum"),
            "sink_single_calls": role_total("sink", "vudsync_sink_cloud_calls_total", endpoint="single"),
            **self._writeback_progress(m),
        }

    def _writeback_progress(self, m: Mapping[str, Samples]) -> dict[str, float]:
        """With ``writeback``: the cloud's access changes cloud-capture published, the directory
        operations the directory sink applied (any effect) and those it rejected."""
        if "directory-sink" not in m:
            return {}
        return {
            "cloud_changes_published": total(m["cloud-capture"], "vudsync_writeback_published_total"),
            "directory_applied": total(m["directory-sink"], "vudsync_writeback_applied_total"),
            "directory_rejected": total(m["directory-sink"], "vudsync_writeback_rejected_total"),
        }


def settled(now: Mapping[str, float]) -> bool:
    """Every planned operation handled, nothing parked, capture caught up (counters of
    :meth:`PipelineWorkers.progress`); the caller also waits for them to stop moving."""
    return (
        now["captured"] > 0
        and now["planned"] > 0
        and now["handled"] >= now["planned"]
        and now["capture_lag_seconds"] == 0
        and now["parked"] == 0
    )
