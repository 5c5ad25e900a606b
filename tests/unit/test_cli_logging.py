"""What -v and -vv turn on: the tool's own INFO lines, not one line per cloud request."""

from __future__ import annotations

import logging
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
