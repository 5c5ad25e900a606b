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
        ("disconnect", "disconnect", "disconnect"),
        ("deletes", "deletes", "deletes"),
        ("staging", "staging", "staging"),
        ("instances", "instances", "instances"),
        ("conflicts", "conflicts", "conflicts"),
        ("review", "review", "review"),
        # operations
        ("status", "status", "status"),
        ("replay", "replay", "replay"),
        ("dlq", "dlq", "dlq"),
        ("journal", "journal", "journal"),
        ("verify", "verify", "verify"),
        ("explain", "explain", "explain"),
        ("parked", "parked", "parked"),
        ("sync", "sync", "sync"),
        ("snapshot", "snapshot", "snapshot"),
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


#: Libraries whose own log lines are not the CLI's output: kafka-python's "Task … ran for 0.3 s
#: … blocking the event loop", aiokafka's and Faust's reconnect notes, one httpx line per cloud
#: request. An operator's command shows what *it* says; ``-v`` shows these libraries' warnings
#: too, ``-vv`` everything.
LIBRARY_LOGGERS = ("kafka", "aiokafka", "faust", "mode", "asyncio", "urllib3", "httpx", "httpcore")


def configure_logging(verbose: int, *, service: bool) -> None:
    """The root logger at WARNING (``-v`` INFO, ``-vv`` DEBUG) for vudsync's own loggers.

    Library loggers (:data:`LIBRARY_LOGGERS`): in an operator's command they say only ERROR
    without ``-v``, WARNING with ``-v``, follow the root with ``-vv``. A component (``vudsync
    run …``, ``service``) is a long-running process whose log *is* its output: there the
    libraries' warnings stay (a broker going away is worth a line), and only httpx's INFO line
    per request waits for ``-vv``.
    """
    level = max(logging.WARNING - 10 * verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        if verbose >= 2:
            library.setLevel(logging.NOTSET)  # follows the root (DEBUG)
        elif service or verbose == 1:
            library.setLevel(logging.WARNING)
        else:
            library.setLevel(logging.ERROR)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="more log output (-vv for debug)")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """vudsync — sync Visma User Directory to the cloud through Apache Kafka.

    Settings come from VUDSYNC_* environment variables and ./vudsync.toml
    (or the file named by VUDSYNC_CONFIG).
    """
    configure_logging(verbose, service=ctx.invoked_subcommand == "run")


def _register() -> None:
    """Load every command now (tests and tools that walk ``cli.commands``)."""
    ctx = click.Context(cli)
    for name in _COMMANDS:
        cli.get_command(ctx, name)


def main() -> None:
    cli()
