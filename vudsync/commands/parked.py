"""``vudsync parked list``: the operations that wait, oldest first, and what each waits for.

From the journal (``vud.cloud.results``, indexed): the planner reports every operation it parks
(or holds) as a result, and the sink reports each applied one; an operation waits while no
applied, dead-lettered or rejected result followed its parked one.
"""

from __future__ import annotations

import json
import time

import click

from kernel.settings import load_settings


@click.group()
def parked() -> None:
    """Operations waiting in the planner for their prerequisites (or an operator)."""


@parked.command(name="list")
@click.option("--limit", type=int, default=50, show_default=True, help="the oldest N")
@click.option("--held/--no-held", default=True, show_default=True, help="include held deletions")
@click.option(
    "--older-than",
    "older_than",
    default=None,
    help="only those waiting longer (90s, 10m, 2h); exit status 1 when there are any",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable: total and the operations")
def list_parked(limit: int, held: bool, older_than: str | None, as_json: bool) -> None:
    """Parked (and held) operations with their age, oldest first.

    \b
    Example:
      vudsync parked list --limit 20
      vudsync parked list --older-than 15m --json   # exit status 1 when any
    """
    from vudsync.commands.explain import caught_up_index
    from vudsync.ops.journal import waiting_lines
    from vudsync.ops.timespec import parse_duration

    minimum = parse_duration(older_than).total_seconds() if older_than else None
    with caught_up_index(load_settings()) as index:
        outcomes = ("parked", "blocked", "held") if held else ("parked", "blocked")
        waiting, total = index.waiting(outcomes=outcomes, limit=limit if minimum is None else 1_000_000)
    now = time.time()
    if minimum is not None:
        waiting = [w for w in waiting if w.age(now) >= minimum]
        total = len(waiting)
        waiting = waiting[:limit]
    if as_json:
        click.echo(json.dumps({"total": total, "operations": [w.as_dict(now) for w in waiting]}, indent=2))
    else:
        click.echo("\n".join(waiting_lines(waiting, total, now)))
    raise SystemExit(1 if minimum is not None and total else 0)
