"""Starting pipeline components as real child processes, for integration and e2e tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner, Result

from devtools.processes import ComponentProcess, component_env, wait_until
from devtools.seed.writer import SqliteDirectoryWriter
from kernel.kafka_security import KafkaSecurity
from kernel.scrape import Samples, ScrapeFailed, scrape
from kernel.settings import Settings
from vudsync.topics import ensure_catalogue

#: The environment of a worker a test SIGKILLs and starts again: a member killed without leaving
#: its group holds its partitions until its session times out, and the worker started after it
#: gets none before. 6 s (the broker's ``group.min.session.timeout.ms``) instead of the defaults,
#: 45 s for a sink (``SINK_FAILOVER``, the directory sink's too) and 30 s for a planner
#: (``PLANNER_FAILOVER``), which were most of such a test's time. Give it to the killed worker
#: and to the one started after it: the broker waits for the dead member's own timeout.
FAILOVER_SECONDS = "6"
SINK_FAILOVER: dict[str, str] = {"VUDSYNC_SINK_SESSION_TIMEOUT": FAILOVER_SECONDS}
PLANNER_FAILOVER: dict[str, str] = {"VUDSYNC_PLANNER_SESSION_TIMEOUT": FAILOVER_SECONDS}


def vudsync_cli(
    settings: Settings, bootstrap: str, *args: str, timeout: float = 180, **env: str
) -> subprocess.CompletedProcess[str]:
    """``vudsync <args>`` as an operator runs it, with the components' environment (plus ``env``)."""
    return subprocess.run(
        [sys.executable, "-m", "vudsync", *args],
        env={**component_env(settings, bootstrap), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def lag_by_group(settings: Settings, bootstrap: str) -> dict[str, int]:
    """Each consumer group's lag, as ``vudsync status --json`` reads it (as ``settings`` connect)."""
    import json

    done = vudsync_cli(settings, bootstrap, "status", "--json")
    by_group: dict[str, int] = json.loads(done.stdout)["lag"]["by_group"]
    return by_group


def connected(settings: Settings, bootstrap: str) -> None:
    """What `vudsync connect` says last, for a test that feeds the planner by hand: connected
    (the planner sends nothing before; processors.connection)."""
    from datetime import UTC, datetime

    from processors.topics import ensure_planner_topics
    from vudsync.commands.connect import connected_fact, publish_facts

    ensure_planner_topics(settings, bootstrap)
    publish_facts(settings, bootstrap, [connected_fact(datetime.now(UTC))])


def run_cli(settings: Settings, bootstrap: str, *args: str, input: str | None = None) -> Result:
    """``vudsync <args>`` in this process, with the environment a component of ``settings`` gets."""
    from vudsync.cli import _register, cli

    _register()
    return CliRunner().invoke(
        cli, list(args), env=component_env(settings, bootstrap), input=input, catch_exceptions=False
    )


def metrics_of(port: int) -> Samples:
    """A component's samples from its ``/metrics`` on this host; none while it is not serving."""
    try:
        return scrape(f"http://127.0.0.1:{port}/metrics", timeout=10.0)
    except ScrapeFailed:
        return {}


def gauge(port: int, name: str) -> float | None:
    """One metric's value (summed over its series); None while it is not served."""
    series = metrics_of(port).get(name)
    return sum(v for _, v in series) if series else None


@contextmanager
def components(
    settings: Settings,
    bootstrap: str,
    *names: str,
    metrics_ports: Mapping[str, int] | None = None,
    security: Callable[[str], KafkaSecurity] | None = None,
    debug: bool = False,
    **extra: str,
) -> Iterator[dict[str, ComponentProcess]]:
    """Start ``vudsync run <name>`` for each name; stop them all (by pid) on exit.

    ``metrics_ports`` maps a name to the port its ``--metrics-port`` serves /metrics on;
    ``security`` gives each component (producer, planner, sink) its own principal on a secured
    cluster (:class:`devtools.broker.cluster.KafkaTarget`); without it, they connect as ``settings``.
    """
    log_dir = Path(settings.home) / "logs"
    procs: dict[str, ComponentProcess] = {}
    try:
        for name in names:
            component, _, worker = name.partition(":")
            args = ["run", component] + (["--worker-name", worker] if worker else [])
            if debug:  # every log line there is: what a secret scan reads
                args = ["-vv", *args]
            elif component in ("sink", "planner"):  # INFO (assignments, recovery) explains a stuck run
                args = ["-v", *args]
            if metrics_ports and name in metrics_ports:
                args += ["--metrics-port", str(metrics_ports[name])]
            own = settings.with_kafka_security(security(component)) if security else settings
            procs[name] = ComponentProcess(
                name.replace(":", "-"), args, env=component_env(own, bootstrap, **extra), log_dir=log_dir
            ).start()
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def alive_or_fail(procs: dict[str, ComponentProcess]) -> bool:
    """For ``until=`` conditions: fail at once, with its log, when a component has died."""
    for name, proc in procs.items():
        if not proc.alive():
            raise AssertionError(f"{name} exited with {proc.returncode()}:\n{proc.tail(40)}")
    return True


def wait_for(
    procs: dict[str, ComponentProcess],
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> None:
    """``wait_until`` while every component lives; on time-out, fail with their logs' tails
    (a component that is alive but stuck says why only there)."""
    try:
        wait_until(lambda: alive_or_fail(procs) and condition(), timeout, interval=interval, what=what)
    except TimeoutError as exc:
        logs = "\n".join(f"--- {name}\n{proc.tail(40)}" for name, proc in procs.items())
        raise AssertionError(f"{exc}\n{logs}") from None


def directory_writer(settings: Settings) -> SqliteDirectoryWriter:
    """A writer of this test's directory store (the SQLite file of ``settings``' store URL), as VUD writes."""
    return SqliteDirectoryWriter(settings.resolved_store_url().removeprefix("sqlite:///"))


def business_directory(
    settings: Settings, bootstrap: str, roles: tuple[str, ...] = ("Regnskap",)
) -> SqliteDirectoryWriter:
    """This test's directory store, with the catalogue's topics created and these Business roles."""
    ensure_catalogue(settings, bootstrap)
    writer = directory_writer(settings)
    writer.upsert_catalogue("roles", [("business", r, r) for r in roles])
    return writer
