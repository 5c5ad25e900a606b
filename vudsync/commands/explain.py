"""``vudsync explain user|company``: why is this user (or company) not in the cloud yet?

The directory's state, the planner's view (from its results in the journal) and the cloud's
state side by side, and what it waits for; see :mod:`vudsync.ops.explain`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from kernel.settings import Settings, load_settings
from schemas.directory import EntityType

if TYPE_CHECKING:
    from vudsync.ops.journal_index import SqliteJournalIndex


def indexing_progress() -> Callable[[int], None] | None:
    """A running count of the journal records indexed, on stderr when it is a terminal (the
    first run after a long time reads every result since)."""
    if not sys.stderr.isatty():
        return None
    read = [0]

    def show(n: int) -> None:
        read[0] += n
        click.echo(f"\rindexing the journal: {read[0]} records", err=True, nl=False)

    return show


@contextmanager
def caught_up_index(settings: Settings) -> Iterator[SqliteJournalIndex]:
    """The journal's index, caught up with the journal's topics first (a running count on a
    terminal's stderr while it reads); closed when the block ends."""
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.explain_runner import catch_up_journal
    from vudsync.ops.journal_index import SqliteJournalIndex
    from vudsync.ops.journal_sync import journal_path

    index = SqliteJournalIndex(journal_path(settings))
    try:
        progress = indexing_progress()
        catch_up_journal(settings, resolve_bootstrap(settings), index, progress=progress)
        if progress is not None:
            click.echo("\r\033[K", err=True, nl=False)
        yield index
    finally:
        index.close()


def _explain(entity: EntityType, key: str, as_json: bool, limit: int) -> None:
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.explain import render
    from vudsync.ops.explain_runner import explain_entity

    settings = load_settings()
    progress = indexing_progress()
    found = explain_entity(settings, resolve_bootstrap(settings), entity, key, shown=limit, progress=progress)
    if progress is not None:
        click.echo("\r\033[K", err=True, nl=False)
    if as_json:
        click.echo(json.dumps(found.as_dict(), indent=2, default=str))
    else:
        click.echo("\n".join(render(found)))
    raise SystemExit(1 if found.reasons() else 0)


ENTITY = click.Choice(["user", "company"])


@click.command()
@click.argument("entity", type=ENTITY)
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="machine-readable (waiting, reasons, every view)")
@click.option("--limit", type=int, default=10, show_default=True, help="journal entries shown")
def explain(entity: str, key: str, as_json: bool, limit: int) -> None:
    """Why is this user (by id or e-mail) or company (by id or organisation number) not in the
    cloud as the directory says? Directory, planner and cloud side by side. Exit status 1 when
    it waits on something or differs from the cloud.

    \b
    Example:
      vudsync explain user kari@fjord.no
      vudsync explain company 923609016
      vudsync explain user u1 --json | jq .reasons
    """
    _explain(EntityType(entity), key, as_json, limit)
