"""``vudsync journal``: every result and dead letter, with entity, operation, reason and time.

Queries an index (``<home>/journal.db``) that each call first brings up to date from
``vud.cloud.results`` and both dead-letter topics; see :mod:`vudsync.ops.journal_index`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from kernel.errors import ConfigurationError
from kernel.settings import load_settings
from vudsync.bootstrap import resolve_bootstrap
from vudsync.ops.journal import OUTCOMES, JournalEntry, JournalFilter
from vudsync.ops.timespec import parse_since


def _line(entry: JournalEntry) -> str:
    when = datetime.fromtimestamp(entry.time).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    subject = f"{entry.entity or '?'}:{entry.entity_id or '?'}"
    version = f" v{entry.source_version}" if entry.source_version is not None else ""
    op = (entry.operation_id or "")[:8]
    extra = entry.reason or entry.effect or ""
    return f"{when}  {entry.outcome:<15} {entry.kind or '':<30} {subject + version:<36} {op:<8}  {extra}"


def _outcomes(values: tuple[str, ...]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(v.strip() for item in values for v in item.split(",") if v.strip()))
    unknown = [o for o in out if o not in OUTCOMES]
    if unknown:
        raise ConfigurationError(f"unknown outcome(s) {unknown}", hint=f"choose from: {', '.join(OUTCOMES)}")
    return out


def _echo(entry: JournalEntry, as_json: bool) -> None:
    click.echo(json.dumps(entry.as_dict(), default=str) if as_json else _line(entry))


@click.command()
@click.option("--entity", "entity_id", help="entity id (user id, company id, …)")
@click.option("--outcome", "outcomes", multiple=True, help=f"one or more of: {', '.join(OUTCOMES)}")
@click.option("--since", "since_text", help="2h, 30m, 1d or an ISO time")
@click.option("--until", "until_text", help="2h, 30m, 1d or an ISO time")
@click.option("--operation", "operation_id", help="operation id")
@click.option("--kind", help="operation kind, e.g. user.upsert, access.assign, dlq.plan")
@click.option("--limit", type=int, default=50, show_default=True, help="the newest N matching entries")
@click.option("--count", "count_only", is_flag=True, help="print how many entries match")
@click.option("--follow", "-f", is_flag=True, help="then keep printing new matching entries (Ctrl-C stops)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option("--no-sync", is_flag=True, help="query the index as it is, without reading Kafka")
def journal(
    entity_id: str | None,
    outcomes: tuple[str, ...],
    since_text: str | None,
    until_text: str | None,
    operation_id: str | None,
    kind: str | None,
    limit: int,
    count_only: bool,
    follow: bool,
    as_json: bool,
    no_sync: bool,
) -> None:
    """The event journal: what became of every operation and every dead letter."""
    from vudsync.ops.journal_index import SqliteJournalIndex
    from vudsync.ops.journal_sync import JournalIndexer, journal_path
    from vudsync.ops.kafka_admin import group_admin

    settings = load_settings()
    now = datetime.now(UTC)
    flt = JournalFilter(
        entity_id=entity_id,
        outcomes=_outcomes(outcomes),
        since=parse_since(since_text, now).timestamp() if since_text else None,
        until=parse_since(until_text, now).timestamp() if until_text else None,
        operation_id=operation_id,
        kind=kind,
        limit=limit,
    )
    index = SqliteJournalIndex(journal_path(settings))
    indexer: JournalIndexer | None = None
    try:
        if not no_sync or follow:
            bootstrap = resolve_bootstrap(settings)
            indexer = JournalIndexer(settings, bootstrap, index)
            with group_admin(bootstrap, security=settings.kafka_security()) as admin:
                added = indexer.catch_up(admin)
            if added and not as_json and not count_only:
                click.echo(f"(indexed {added} new entries)", err=True)
        if count_only:
            click.echo(str(index.count(flt)))
            return
        rows = index.query(flt)
        for _, entry in reversed(rows):
            _echo(entry, as_json)
        if not follow:
            return
        assert indexer is not None
        last = index.last_id()
        follow_filter = JournalFilter(**{**flt.__dict__, "after_id": last, "limit": 10_000})
        try:
            while True:
                if indexer.poll(1.0) == 0:  # waits up to a second for new records
                    continue
                for row_id, entry in index.query(follow_filter):
                    _echo(entry, as_json)
                    last = row_id
                follow_filter = JournalFilter(**{**follow_filter.__dict__, "after_id": last})
        except KeyboardInterrupt:
            return
    finally:
        if indexer is not None:
            indexer.close()
        index.close()
