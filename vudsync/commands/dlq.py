"""``vudsync dlq list | show | retry | purge`` for both dead-letter topics.

What "handled" means and why purge works the way it does: :mod:`vudsync.ops.deadletters`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from kernel.errors import ConfigurationError
from kernel.settings import Settings, load_settings
from vudsync.bootstrap import resolve_bootstrap
from vudsync.ops.deadletters import DeadLetter, DeadLetterRef, queues_for

if TYPE_CHECKING:
    from vudsync.ops.dlq_kafka import KafkaDeadLetterQueues

_QUEUE = click.option(
    "--queue",
    "queue_choice",
    type=click.Choice(["directory", "operations", "both"]),
    default="both",
    show_default=True,
    help="vud.directory.dlq (capture, planner) or vud.cloud.operations.dlq (sink)",
)


@contextmanager
def _queues(settings: Settings) -> Iterator[KafkaDeadLetterQueues]:
    from vudsync.ops.dlq_kafka import KafkaDeadLetterQueues
    from vudsync.ops.kafka_admin import group_admin

    bootstrap = resolve_bootstrap(settings)
    with group_admin(bootstrap, security=settings.kafka_security()) as admin:
        yield KafkaDeadLetterQueues(settings, bootstrap, admin)


def _allowed_topics(settings: Settings) -> Callable[[str], bool]:
    """Where a directory dead letter may go back to: this installation's vudsync topics
    (``<prefix>vud.…``: the catalogue and the planner's own), never a dead-letter topic."""
    from schemas.topics import DIRECTORY_DLQ, OPERATIONS_DLQ

    dlqs = {settings.topic(DIRECTORY_DLQ.name), settings.topic(OPERATIONS_DLQ.name)}
    return lambda topic: topic.startswith(settings.topic("vud.")) and topic not in dlqs


def _line(dl: DeadLetter) -> str:
    mark = " (handled)" if dl.handled else ""
    reason = dl.reason if len(dl.reason) <= 90 else dl.reason[:87] + "…"
    when = dl.timestamp.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"{dl.ref!s:<22} {when}  {dl.stage or '?':<10} {dl.subject():<44} {reason}{mark}"


@click.group()
def dlq() -> None:
    """Dead letters: list them with their reasons, show one, retry after the cause is fixed, purge."""


@dlq.command("list")
@_QUEUE
@click.option("--all", "include_handled", is_flag=True, help="include dead letters already retried or purged")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", type=int, default=200, show_default=True)
def list_(queue_choice: str, include_handled: bool, as_json: bool, limit: int) -> None:
    """Unhandled dead letters (oldest first) with stage and reason; refs for show/retry/purge."""
    settings = load_settings()
    with _queues(settings) as queues:
        out: list[DeadLetter] = []
        depths = []
        for queue in queues_for(queue_choice):
            out.extend(queues.read(queue, include_handled=include_handled))
            depths.append(queues.depth(queue))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "depths": {d.queue: {"unhandled": d.unhandled, "retained": d.retained} for d in depths},
                    "dead_letters": [dl.as_dict() for dl in out[:limit]],
                },
                indent=2,
            )
        )
        return
    for d in depths:
        click.echo(f"{d.topic}: {d.unhandled} unhandled ({d.retained} kept in the topic)")
    if not out:
        click.echo("No dead letters." if not include_handled else "No dead letters kept.")
        return
    click.echo(f"{'ref':<22} {'time':<19}  {'stage':<10} {'subject':<44} reason")
    for dl in out[:limit]:
        click.echo(_line(dl))
    if len(out) > limit:
        click.echo(f"… {len(out) - limit} more (--limit)")
    click.echo(
        "Show one: vudsync dlq show <ref>   retry: vudsync dlq retry <ref>… | --all   "
        "purge: vudsync dlq purge"
    )


@dlq.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def show(ref: str, as_json: bool) -> None:
    """One dead letter with all its headers and its record (REF as printed by `dlq list`)."""
    settings = load_settings()
    parsed = DeadLetterRef.parse(ref)
    with _queues(settings) as queues:
        dl = queues.get(parsed)
    data = dl.as_dict(with_value=True)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for key in (
        "ref",
        "topic",
        "time",
        "key",
        "subject",
        "stage",
        "reason",
        "exception",
        "attempts",
        "original",
        "handled",
    ):
        click.echo(f"{key + ':':<10} {data.get(key)}")
    click.echo("headers:")
    for k, v in sorted(data["headers"].items()):
        click.echo(f"  {k}: {v}")
    click.echo("record:")
    value = data["value"]
    click.echo(json.dumps(value, indent=2, ensure_ascii=False) if isinstance(value, dict) else f"  {value}")


def _select(
    queues: KafkaDeadLetterQueues, queue_choice: str, refs: tuple[str, ...], everything: bool
) -> list[DeadLetter]:
    if bool(refs) == everything:
        raise ConfigurationError("name dead letters by their refs, or pass --all (not both)")
    if everything:
        return [dl for q in queues_for(queue_choice) for dl in queues.read(q)]
    return [queues.get(DeadLetterRef.parse(r)) for r in refs]


@dlq.command()
@click.argument("refs", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="every unhandled dead letter of --queue")
@_QUEUE
@click.option("--json", "as_json", is_flag=True)
def retry(refs: tuple[str, ...], everything: bool, queue_choice: str, as_json: bool) -> None:
    """Re-drive dead letters through the normal path, after the cause is fixed.

    An operation goes back onto vud.cloud.operations (the sink applies it once: ledger and
    idempotency key); a directory record goes back onto its original topic. Retried dead
    letters are marked handled and leave `dlq list`.
    """
    settings = load_settings()
    with _queues(settings) as queues:
        chosen = [
            dl for dl in _select(queues, queue_choice, refs, everything) if not (dl.handled and everything)
        ]
        outcomes = queues.retry(chosen, _allowed_topics(settings))
    sent = [o for o in outcomes if o.target]
    skipped = [o for o in outcomes if not o.target]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "retried": [{"ref": str(o.ref), "topic": o.target} for o in sent],
                    "skipped": [{"ref": str(o.ref), "why": o.skipped} for o in skipped],
                },
                indent=2,
            )
        )
    else:
        for o in sent:
            click.echo(f"retried {o.ref} → {o.target}")
        for o in skipped:
            click.echo(f"skipped {o.ref}: {o.skipped}")
        click.echo(f"{len(sent)} re-driven, {len(skipped)} skipped. Follow them: vudsync journal --follow")
    if skipped and not sent:
        raise SystemExit(1)


@dlq.command()
@click.argument("refs", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="every unhandled dead letter of --queue")
@_QUEUE
@click.option("--yes", is_flag=True, help="do not ask for confirmation (scripts)")
def purge(refs: tuple[str, ...], everything: bool, queue_choice: str, yes: bool) -> None:
    """Mark dead letters handled without retrying them, and delete the handled records.

    Kafka deletes only from the start of a partition: records purged out of order are marked
    handled at once and deleted once every record before them is handled too.
    """
    settings = load_settings()
    with _queues(settings) as queues:
        chosen = _select(queues, queue_choice, refs, everything)
        pending = [dl for dl in chosen if not dl.handled]
        if not pending:
            click.echo("Nothing to purge.")
            return
        for dl in pending[:20]:
            click.echo(_line(dl))
        if len(pending) > 20:
            click.echo(f"… and {len(pending) - 20} more")
        if not yes and not click.confirm(
            f"Purge {len(pending)} dead letter(s)? They will not be retried", default=False
        ):
            raise SystemExit(1)
        total = 0
        for queue in queues_for(queue_choice):
            mine = [dl.ref for dl in pending if dl.ref.queue == queue]
            if not mine:
                continue
            total += queues.purge(queue, mine)  # exactly what was shown, never what arrived since
    click.echo(f"Purged {total} dead letter(s).")
