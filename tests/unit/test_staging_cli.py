"""The staging commands' edges that need no broker: the planner's --staging flag reaches its
settings, and promote/discard refuse without --up-to (nothing is read or sent then)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from kernel.settings import Settings
from vudsync.cli import _register, cli


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    import processors.service
    import vudsync.commands.run as run_module

    seen: list[Settings] = []
    monkeypatch.setattr(processors.service, "run_planner", lambda settings, *a, **kw: seen.append(settings))
    monkeypatch.setattr(run_module, "resolve_bootstrap", lambda settings: "127.0.0.1:9")
    monkeypatch.setattr(run_module, "ensure_component_topics", lambda *a, **kw: [])
    return seen


def _invoke(*args: str, **env: Any) -> Any:
    _register()
    return CliRunner().invoke(cli, list(args), env={"VUDSYNC_CONFIG": "/nonexistent.toml", **env})


def test_run_planner_staging_flag_and_environment_turn_staging_on(started: list[Settings]) -> None:
    assert _invoke("run", "planner", "--staging").exit_code == 0
    assert _invoke("run", "planner").exit_code == 0
    assert _invoke("run", "planner", VUDSYNC_PLANNER_STAGING="true").exit_code == 0
    assert [s.planner_staging for s in started] == [True, False, True]


def test_promote_and_discard_name_what_they_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections.abc import Iterator
    from contextlib import contextmanager

    import vudsync.commands.staging as staging_module
    import vudsync.ops.kafka_admin as kafka_admin
    from vudsync.ops.staging_diff import Staged

    @contextmanager
    def no_admin(*a: Any, **kw: Any) -> Iterator[None]:
        yield None

    monkeypatch.setattr(kafka_admin, "group_admin", no_admin)
    monkeypatch.setattr("vudsync.bootstrap.resolve_bootstrap", lambda settings: "127.0.0.1:9")
    monkeypatch.setattr(staging_module, "_read", lambda *a: Staged(3, 3))
    for verb in ("promote", "discard"):
        done = _invoke("staging", verb, "--yes")
        assert done.exit_code == 2
        assert f"`vudsync staging {verb} --up-to <offset>` (nothing is staged now)" in done.output
