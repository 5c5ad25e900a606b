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
