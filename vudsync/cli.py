"""The ``vudsync`` command: one control plane for every component.

Each command group lives in its own module under ``vudsync.commands``; this module only
assembles them. Nothing is built at import: each command builds its own object graph
from ``Settings`` when it runs.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from vudsync.errors import VudsyncError

# (module under vudsync.commands, attribute) — a group or command each.
_COMMANDS: tuple[tuple[str, str], ...] = (
    ("kafka", "kafka"),
    ("cloud", "cloud"),
    ("run", "run"),
    ("lag", "run"),  # the same run group, with `run lag-exporter` added
    ("topics", "topics"),
    ("store", "store"),
    ("bench", "bench"),
    ("seed", "seed"),
    ("schemas", "schemas"),
    ("demo", "demo"),
    # planner: enabling the integration, accidental-delete protection
    ("connect", "connect"),
    ("deletes", "deletes"),
    # operations
    ("status", "status"),
    ("replay", "replay"),
    ("dlq", "dlq"),
    ("journal", "journal"),
    ("verify", "verify"),
)


class _Main(click.Group):
    """Turns our own errors into a one-line message and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except VudsyncError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            sys.exit(2)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="more log output (-vv for debug)")
def cli(verbose: int) -> None:
    """vudsync — sync Visma User Directory to the cloud through Apache Kafka.

    Settings come from VUDSYNC_* environment variables and ./vudsync.toml
    (or the file named by VUDSYNC_CONFIG).
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _register() -> None:
    for module_name, attr in _COMMANDS:
        module = importlib.import_module(f"vudsync.commands.{module_name}")
        cli.add_command(getattr(module, attr))


def main() -> None:
    _register()
    cli()
