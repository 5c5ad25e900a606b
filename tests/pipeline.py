"""Starting pipeline components as real child processes, for integration and e2e tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vudsync.processes import ComponentProcess, component_env
from vudsync.settings import Settings


@contextmanager
def components(
    settings: Settings, bootstrap: str, *names: str, **extra: str
) -> Iterator[dict[str, ComponentProcess]]:
    """Start ``vudsync run <name>`` for each name; stop them all (by pid) on exit."""
    log_dir = Path(settings.home) / "logs"
    procs: dict[str, ComponentProcess] = {}
    try:
        for name in names:
            component, _, worker = name.partition(":")
            args = ["run", component] + (["--worker-name", worker] if worker else [])
            procs[name] = ComponentProcess(
                name.replace(":", "-"), args, env=component_env(settings, bootstrap, **extra), log_dir=log_dir
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
