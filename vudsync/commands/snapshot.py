"""``vudsync snapshot``: ask the running producer to emit the current state of chosen entities
again (an ad-hoc snapshot through the store's signal table); see :mod:`vudsync.ops.snapshot`
and :mod:`producers.adhoc`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from kernel.settings import load_settings

if TYPE_CHECKING:
    from producers.signals import SnapshotSignal

_ENTITY_CHOICES = ("users", "companies", "roles", "layout-groups", "modules", "application-instances")


class _Progress:
    """A bar of the request's progress (stderr with --json; only on a terminal)."""

    def __init__(self, as_json: bool) -> None:
        self.stream = click.get_text_stream("stderr") if as_json else None
        self.bar: object | None = None
        self.shown = 0

    def __call__(self, signal: SnapshotSignal) -> None:
        if signal.total is None:
            return
        if self.bar is None:
            self.bar = click.progressbar(
                length=max(signal.total, 1), label=f"snapshot #{signal.id}", file=self.stream
            ).__enter__()
        step = min(signal.emitted, signal.total) - self.shown
        if step > 0:
            self.bar.update(step)  # type: ignore[attr-defined]
            self.shown += step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)  # type: ignore[attr-defined]


@click.command()
@click.option(
    "--entity",
    "entities",
    multiple=True,
    type=click.Choice(_ENTITY_CHOICES),
    help="which entities (repeat it; default: all, in the initial snapshot's order)",
)
@click.option("--where", "where_text", default=None, help="only these: id=<id>[,<id>…] or company=<id>")
@click.option("--wait", is_flag=True, help="show a progress bar until the producer is done")
@click.option(
    "--pickup-timeout",
    "pickup_text",
    default="15s",
    show_default=True,
    help="give up (and cancel the request) when no producer picks it up within this",
)
@click.option(
    "--timeout", "timeout_text", default="1h", show_default=True, help="with --wait: stop waiting after"
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable: the outcome and the request")
def snapshot(
    entities: tuple[str, ...],
    where_text: str | None,
    wait: bool,
    pickup_text: str,
    timeout_text: str,
    as_json: bool,
) -> None:
    """Make the running producer emit the current state of the chosen entities again (an
    ad-hoc snapshot, like Debezium's signal-table snapshots), each entity once, while it goes on
    streaming live changes.

    Unchanged state plans nothing: the planner compares each entity with what it has seen, so
    a re-snapshot applies nothing twice in the cloud; what differs (an entity the pipeline lost
    track of, a dead letter fixed in the store) is planned with the same rules and gates as any
    change.

    This is the one command that writes to the directory store, and only to its signal table
    (capture_signal); every other command opens the store read-only.

    Exit status 0 when the producer picked the request up (with --wait: when it is done); 1
    when no producer picked it up within --pickup-timeout (the request is cancelled), the
    producer failed it, or --timeout passed.

    \b
    Example:
      vudsync snapshot --entity users --wait
      vudsync snapshot --entity users --where company=c17 --json
      vudsync snapshot --entity companies --where id=c1,c2
    """
    from producers.signals import FilterError, check_where, parse_entities, parse_where
    from vudsync.ops.snapshot import request_snapshot
    from vudsync.ops.timespec import parse_duration

    try:
        chosen = parse_entities(entities)
        where = parse_where(where_text)
        check_where(where, chosen)
    except FilterError as exc:
        raise click.UsageError(str(exc)) from exc
    settings = load_settings()
    progress = _Progress(as_json) if wait else None
    try:
        outcome = request_snapshot(
            settings,
            chosen,
            where,
            pickup_timeout=parse_duration(pickup_text).total_seconds(),
            wait=wait,
            wait_timeout=parse_duration(timeout_text).total_seconds(),
            on_progress=progress,
        )
    finally:
        if progress is not None:
            progress.close()
    if as_json:
        click.echo(json.dumps(outcome.as_dict(), indent=2, default=str))
    else:
        signal = outcome.signal
        what = f"snapshot #{signal.id} of {signal.describe()}" if signal else "snapshot"
        if outcome.status == "running":
            click.echo(
                f"{what}: picked up by the producer, {signal.total if signal else '?'} entities to emit; "
                "follow it with `vudsync status` (or run with --wait)"
            )
        elif outcome.status == "done" and signal is not None:
            click.echo(f"{what}: done, {signal.emitted} of {signal.total} entities emitted")
        else:
            click.echo(f"{what}: {outcome.status}")
        for reason in outcome.reasons:
            click.echo(f"  ! {reason}")
    raise SystemExit(outcome.exit_status)
