"""``vudsync conflicts list|resolve``: matches the sink refused to take over.

Matching an on-premise user to a cloud user by e-mail (a company by organisation number) links
only a cloud object that is linked to no other on-premise id and is not a customer
administrator. Anything else is a *conflict*: nothing is written, the result says so with both
ids (no personal data), the entity's assignments wait, and it is listed here until resolved.
"""

from __future__ import annotations

import json
import time

import click

from kernel.settings import load_settings
from schemas.directory import EntityType


@click.group()
def conflicts() -> None:
    """Matches the sink refused to take over (a cloud user or company linked to someone else)."""


@conflicts.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
def list_conflicts(as_json: bool) -> None:
    """Open conflicts, oldest first, with what to do about each. Exit status 1 when any.

    \b
    Example:
      vudsync conflicts list
      vudsync conflicts list --json
    """
    from vudsync.commands.explain import caught_up_index
    from vudsync.ops.conflicts import read_open_conflicts

    with caught_up_index(load_settings()) as index:
        open_ = read_open_conflicts(index)
    if as_json:
        click.echo(json.dumps({"total": len(open_), "conflicts": [c.as_dict() for c in open_]}, indent=2))
    elif not open_:
        click.echo("No open conflicts.")
    else:
        now = time.time()
        click.echo(f"{len(open_)} open conflict(s), oldest first:")
        for c in open_:
            other = f", linked to {c.linked_to}" if c.linked_to else ""
            click.echo(
                f"  {c.entity} {c.entity_id}: {c.reason} — cloud {c.entity} {c.cloud_id}{other} "
                f"({(now - c.time) / 60:.0f} min ago)"
            )
            click.echo(f"      {c.as_dict()['what_to_do']}")
        click.echo("Resolve: fix the cause, then `vudsync conflicts resolve <user|company> <id>`.")
    raise SystemExit(1 if open_ else 0)


@conflicts.command()
@click.argument("entity", type=click.Choice(["user", "company"]))
@click.argument("entity_id")
@click.option("--timeout", "timeout_text", default="2m", show_default=True, help="how long to follow it")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per step, then the outcome")
def resolve(entity: str, entity_id: str, timeout_text: str, as_json: bool) -> None:
    """After fixing the cause, send the entity again and follow it (as `vudsync sync`): the sink
    judges the match again (a conflict is never kept in its ledger); exit 0 once it is applied,
    1 if it is still a conflict (or waits, or the workers are not running).

    \b
    Example:
      vudsync conflicts resolve user u1042
    """
    from vudsync.commands.sync import sync_and_follow

    sync_and_follow(EntityType(entity), entity_id, timeout_text, as_json)
