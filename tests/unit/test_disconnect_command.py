"""`vudsync disconnect` says what it does and what it leaves before it asks; nothing is
published unless the operator says yes (no broker here: a publish would fail the test)."""

from __future__ import annotations

from click.testing import CliRunner

from vudsync.cli import cli


def test_it_explains_and_asks_and_a_no_publishes_nothing() -> None:
    result = CliRunner().invoke(cli, ["disconnect"], input="n\n")
    assert result.exit_code == 1  # click's abort
    assert "nothing is deleted or deactivated" in result.output
    assert "Users stay active" in result.output and "vudsync connect" in result.output
    assert "Disconnect this installation from the cloud?" in result.output


def test_json_needs_yes() -> None:
    result = CliRunner().invoke(cli, ["disconnect", "--json"])
    assert result.exit_code == 2 and "--json needs --yes" in result.output
