"""A production image leaves ``devtools/`` out (Dockerfile): the CLI must say so plainly, and
the runtime commands must not need it."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from kernel.errors import ConfigurationError
from kernel.settings import Settings
from vudsync.bootstrap import resolve_bootstrap
from vudsync.cli import cli


@pytest.fixture
def no_devtools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports of ``devtools`` fail as they would where the package is not installed."""
    for name in [m for m in sys.modules if m == "devtools" or m.startswith("devtools.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "devtools", None)  # type: ignore[arg-type]
    for name in ("vudsync.commands.kafka", "vudsync.commands.bench"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    for name in ("kafka", "bench"):
        monkeypatch.delitem(cli.commands, name, raising=False)


@pytest.mark.usefixtures("no_devtools")
def test_a_dev_command_says_it_is_not_part_of_the_install() -> None:
    result = CliRunner().invoke(cli, ["kafka", "status"])
    assert result.exit_code == 2
    assert "`vudsync kafka` is a developer tool, not part of this install" in result.output


@pytest.mark.usefixtures("no_devtools")
def test_a_runtime_command_without_a_bootstrap_asks_for_one() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_bootstrap(Settings(kafka_bootstrap=""))
    assert info.value.hint is not None and "VUDSYNC_KAFKA_BOOTSTRAP" in info.value.hint
    assert resolve_bootstrap(Settings(kafka_bootstrap="broker:9092")) == "broker:9092"
