"""What -v and -vv turn on: the tool's own INFO lines, not one line per cloud request."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from vudsync.cli import cli


@pytest.fixture(autouse=True)
def _restore_httpx_level() -> Iterator[None]:
    httpx_logger = logging.getLogger("httpx")
    before = httpx_logger.level
    yield
    httpx_logger.setLevel(before)


@pytest.mark.parametrize(("flags", "httpx_level"), [(["-v"], logging.WARNING), (["-vv"], logging.NOTSET)])
def test_cloud_requests_are_logged_only_with_debug(flags: list[str], httpx_level: int) -> None:
    """-v: httpx's INFO line per request is off; -vv: httpx follows the root logger (DEBUG)."""
    logging.getLogger("httpx").setLevel(logging.NOTSET)
    result = CliRunner().invoke(cli, [*flags, "schemas", "--help"])
    assert result.exit_code == 0, result.output
    assert logging.getLogger("httpx").level == httpx_level


def test_log_levels_name_single_loggers_and_refuse_what_is_not_name_level() -> None:
    """VUDSYNC_LOG_LEVELS: one component's inner workings at DEBUG, not every library's."""
    from kernel.errors import ConfigurationError
    from kernel.settings import Settings

    levels = Settings(log_levels="processors=DEBUG, faust.tables.recovery=info,").logger_levels()
    assert levels == {"processors": logging.DEBUG, "faust.tables.recovery": logging.INFO}
    assert Settings().logger_levels() == {}
    for bad in ("processors", "processors=LOUD", "=DEBUG"):
        with pytest.raises(ConfigurationError):
            Settings(log_levels=bad).logger_levels()


# A command that logs what the libraries say during a replay (kafka-python's loop warning, an
# aiokafka reconnect note) and what vudsync itself says, run as the CLI runs: its own process,
# so the root logger is configured by `vudsync` alone (pytest's capture handlers stay out).
_NOISY_CLI = """
import logging, sys, click
from vudsync.cli import cli

@cli.command("noisy")
def noisy() -> None:
    logging.getLogger("kafka.net.selector").warning("Task <x> ran for 0.300s: blocking the event loop")
    logging.getLogger("aiokafka.conn").warning("reconnecting to the broker")
    logging.getLogger("asyncio").warning("Executing <Task> took 0.5 seconds")
    logging.getLogger("kafka.conn").error("connection refused for good")
    logging.getLogger("vudsync.ops.replay_runner").warning("our own warning")
    click.echo("done")

cli(sys.argv[1:], prog_name="vudsync")
"""


def _run_noisy(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _NOISY_CLI, *flags, "noisy"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_library_warnings_stay_out_of_a_commands_output_unless_asked_for() -> None:
    quiet = _run_noisy()
    assert quiet.stdout.strip() == "done"
    assert "our own warning" in quiet.stderr
    assert "blocking the event loop" not in quiet.stderr, quiet.stderr
    assert "reconnecting" not in quiet.stderr and "took 0.5 seconds" not in quiet.stderr
    assert "connection refused for good" in quiet.stderr  # a library's error still shows

    verbose = _run_noisy("-v")
    for line in ("blocking the event loop", "reconnecting", "took 0.5 seconds", "our own warning"):
        assert line in verbose.stderr, verbose.stderr


def test_a_component_keeps_library_warnings_in_its_log() -> None:
    """``vudsync run …``: the log is the output; a broker going away is worth a line."""
    from vudsync.cli import LIBRARY_LOGGERS, configure_logging

    before = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    try:
        configure_logging(0, service=True)
        assert all(logging.getLogger(n).level == logging.WARNING for n in LIBRARY_LOGGERS)
        configure_logging(0, service=False)
        assert all(logging.getLogger(n).level == logging.ERROR for n in LIBRARY_LOGGERS)
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)
