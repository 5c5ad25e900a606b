"""The ``vudsync`` command: one control plane for every component.

Each command group lives in its own module under ``vudsync.commands``; this module only
assembles them, lazily: ``vudsync run sink`` imports the ``run`` module and nothing else
(every component starts as such a child process, and the other modules' imports —
the admin client, the cloud API, the bench — cost a good part of a second).
Nothing is built at import: each command builds its own object graph from ``Settings``
when it runs.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from kernel.errors import VudsyncError

# command name → (module under vudsync.commands, attribute): a group or command each.
_COMMANDS: dict[str, tuple[str, str]] = {
    name: (module, attr)
    for name, module, attr in (
        ("kafka", "kafka", "kafka"),
        ("cloud", "cloud", "cloud"),
        ("run", "lag", "run"),  # the run group, with `run lag-exporter` added by the lag module
        ("topics", "topics", "topics"),
        ("store", "store", "store"),
        ("bench", "bench", "bench"),
        ("seed", "seed", "seed"),
        ("schemas", "schemas", "schemas"),
        ("demo", "demo", "demo"),
        # planner: enabling the integration, accidental-delete protection
        ("connect", "connect", "connect"),
        ("deletes", "deletes", "deletes"),
        ("instances", "instances", "instances"),
        ("conflicts", "conflicts", "conflicts"),
        # operations
        ("status", "status", "status"),
        ("replay", "replay", "replay"),
        ("dlq", "dlq", "dlq"),
        ("journal", "journal", "journal"),
        ("verify", "verify", "verify"),
        ("explain", "explain", "explain"),
        ("parked", "parked", "parked"),
        ("sync", "sync", "sync"),
    )
}


class _Main(click.Group):
    """Loads each command's module when it is asked for; turns our own errors into a one-line
    message and exit code 2, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _COMMANDS:
            module_name, attr = _COMMANDS[cmd_name]
            try:
                module = importlib.import_module(f"vudsync.commands.{module_name}")
            except ModuleNotFoundError as exc:
                if exc.name is None or exc.name.split(".")[0] != "devtools":
                    raise
                # a production image leaves the developer tools out (Dockerfile)
                raise click.UsageError(
                    f"`vudsync {cmd_name}` is a developer tool, not part of this install "
                    "(install vudsync from its source tree to have it)"
                ) from exc
            self.add_command(getattr(module, attr), cmd_name)
        return self.commands.get(cmd_name)

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
    if level > logging.DEBUG:
        # httpx logs every request at INFO: with -v a line per cloud call drowned what the sink
        # says about its own work (and the tail of a log). -vv shows them again.
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _register() -> None:
    """Load every command now (tests and tools that walk ``cli.commands``)."""
    ctx = click.Context(cli)
    for name in _COMMANDS:
        cli.get_command(ctx, name)


def main() -> None:
    cli()
