"""``vudsync sync user|company``: provision one entity on demand and follow it to the cloud.

Re-emits the entity's current state from the store through the producer's own Kafka client, so
the *running* planner and sink handle it with the same rules and gates as any change, and
prints each step as it happens; see :mod:`vudsync.ops.sync_follow`.
"""

from __future__ import annotations

import json

import click

from kernel.settings import load_settings
from schemas.directory import EntityType


def sync_and_follow(entity: EntityType, key: str, timeout_text: str, as_json: bool) -> None:
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.sync_follow import Step
    from vudsync.ops.sync_runner import sync_entity
    from vudsync.ops.timespec import parse_duration

    timeout = parse_duration(timeout_text).total_seconds()
    settings = load_settings()

    def emit(step: Step) -> None:
        click.echo(json.dumps(step.as_dict(), default=str) if as_json else step.line())

    done = sync_entity(settings, resolve_bootstrap(settings), entity, key, timeout=timeout, emit=emit)
    if as_json:
        summary = {"outcome": done.outcome, "exit_status": done.exit_status, "reasons": list(done.reasons)}
        click.echo(json.dumps(summary))
    else:
        click.echo(f"{done.outcome}" + "".join(f"\n  ! {r}" for r in done.reasons))
    raise SystemExit(done.exit_status or 0)


@click.command()
@click.argument("entity", type=click.Choice(["user", "company"]))
@click.argument("key")
@click.option(
    "--timeout", "timeout_text", default="2m", show_default=True, help="stop following after (90s, 5m)"
)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per step, then the outcome")
def sync(entity: str, key: str, timeout_text: str, as_json: bool) -> None:
    """Provision one user (by id or e-mail) or company (by id or organisation number) now,
    through the running pipeline, and follow it: captured → planned → parked on what → applied.

    Exit status 0 when it is applied or already in sync; 1 when it waits (parked, held,
    blocked), was dead-lettered or rejected, the time-out passed, or the planner or the sink is
    not running (then nothing is sent).

    \b
    Example:
      vudsync sync user kari@fjord.no
      vudsync sync company 923609016 --timeout 10m --json
    """
    sync_and_follow(EntityType(entity), key, timeout_text, as_json)
