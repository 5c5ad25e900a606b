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
    """The producer, a planner and a sink — with ``writeback``, also cloud-capture and a
    directory sink (cloud → directory) — as separate ``vudsync run`` processes, as an operator
    starts them, each with a metrics port: started, watched and stopped together (the demo,
    ``vudsync bench pipeline``, ``vudsync bench writeback``)."""

    NAMES = ("producer", "planner", "sink")
    WRITEBACK = ("cloud-capture", "directory-sink")

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        log_dir: Path,
        security: Callable[[str], KafkaSecurity] | None = None,
        *,
        writeback: bool = False,
        **extra: str,
    ) -> None:
        """``security`` gives each component its own principal on a secured cluster
        (:meth:`devtools.broker.cluster.KafkaTarget.security`); without it, they connect as
        ``settings``. ``writeback`` adds cloud-capture and the directory sink (off by default:
        two more processes a run that does not need them would wait for); ``extra``: more
        environment for every component (``VUDSYNC_WRITEBACK_POLL_INTERVAL`` …)."""

        def own(name: str) -> Settings:
            return settings.with_kafka_security(security(name)) if security else settings

        self.names = self.NAMES + (self.WRITEBACK if writeback else ())
        self.envs = {name: component_env(own(name), bootstrap, **extra) for name in self.names}
        self.log_dir = log_dir
        self.procs: dict[str, ComponentProcess] = {}
        self.ports: dict[str, int] = {}

    def start(self) -> PipelineWorkers:
        from devtools.broker import free_port

        for name in self.names:
            self.ports[name] = free_port()
            self.procs[name] = ComponentProcess(
                name,
                ["run", name, "--metrics-port", str(self.ports[name])],
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

    def progress(self) -> dict[str, float]:
        """The pipeline's counters now: changes captured, events the planner has taken (any
        outcome), operations planned, operations the sink has handled (any outcome),
        dead-lettered, parked, the producer's capture lag, how many of the metrics endpoints
        did not answer (their counters then read 0), and with ``writeback`` its counters."""
        m = self.scrape()
        return {
            "captured": total(m["producer"], "vudsync_source_changes_captured_total"),
            "planner_events": total(m["planner"], "vudsync_planner_events_total"),
            "planned": total(m["planner"], "vudsync_operations_planned_total"),
            "handled": total(m["sink"], "vudsync_sink_operations_total"),
            "dead_lettered": total(m["sink"], "vudsync_sink_operations_total", outcome="dead_lettered"),
            "parked": total(m["planner"], "vudsync_parked_operations"),
            "capture_lag_seconds": total(m["producer"], "vudsync_source_capture_lag_seconds"),
            "unanswered": float(sum(1 for samples in m.values() if not samples)),
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
