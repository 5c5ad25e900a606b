"""``vudsync seed``: fill a directory store with sample data; ``vudsync seed churn``: keep changing it."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from kernel.settings import load_settings


def _shown(url: str) -> str:
    """A store URL without credentials."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[str, int], None]]:
    """A rich progress bar on stderr when it is a terminal; a no-op otherwise."""
    if not sys.stderr.isatty():
        yield lambda _what, _rows: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(label, total=total)

        def advance(what: str, rows: int) -> None:
            bar.update(task, advance=rows, description=f"{label}: {what}")

        yield advance


@click.group(invoke_without_command=True)
@click.option("--users", type=click.IntRange(min=0), default=1000, show_default=True)
@click.option("--companies", type=click.IntRange(min=0), default=50, show_default=True)
@click.option(
    "--store", "store_url", default=None, help="store URL (default: VUDSYNC_STORE_URL or <home>/directory.db)"
)
@click.option(
    "--seed", "seed", type=int, default=7, show_default=True, help="random seed (same seed, same data)"
)
@click.option(
    "--access-per-user",
    type=click.FloatRange(min=1.0),
    default=None,
    help="average access rows per user (default: varied, about 10)",
)
@click.option(
    "--batch", type=click.IntRange(min=1), default=5000, show_default=True, help="rows per transaction"
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def seed(
    ctx: click.Context,
    users: int,
    companies: int,
    store_url: str | None,
    seed: int,
    access_per_user: float | None,
    batch: int,
    as_json: bool,
) -> None:
    """Fill the directory store with realistic sample data.

    Norwegian names with æøå, organisation numbers with a valid mod-11 check digit, the role,
    layout-group and module catalogues of each application, one instance per application
    type, and varied access. Rows are upserted: a second run with the same seed rewrites the
    same rows (the change log records them as updates).
    """
    if ctx.invoked_subcommand is not None:
        return
    from devtools.seed.data import sample_directory, write_sample
    from devtools.seed.writer import open_writer

    url = store_url or load_settings().resolved_store_url()
    started = time.monotonic()
    sample = sample_directory(users, companies, seed=seed, access_per_user=access_per_user)
    generated = time.monotonic() - started
    writer = open_writer(url)
    try:
        before = writer.change_log_position()
        total = (
            sum(len(r) for r in sample.catalogue.values())
            + len(sample.instances)
            + len(sample.companies)
            + len(sample.users)
            + len(sample.access)
        )
        with _progress(total, "seeding") as advance:
            write_sample(writer, sample, batch=batch, progress=advance)
        position = writer.change_log_position()
    finally:
        writer.close()
    result: dict[str, Any] = {
        "store": _shown(url),
        "users": len(sample.users),
        "companies": len(sample.companies),
        "access_rows": len(sample.access),
        "catalogue_rows": sum(len(r) for r in sample.catalogue.values()),
        "application_instances": len(sample.instances),
        "seed": seed,
        "change_log_rows": position - before,
        "change_log_position": position,
        "seconds": round(time.monotonic() - started, 2),
        "generate_seconds": round(generated, 2),
    }
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(
            f"{result['store']}: {result['users']} users, {result['companies']} companies, "
            f"{result['access_rows']} access rows (seed {seed}) in {result['seconds']} s; "
            f"change log at {position}"
        )


@seed.command()
@click.option(
    "--rate", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="changes per second"
)
@click.option(
    "--duration", type=click.FloatRange(min=0), default=None, help="seconds (default: until SIGTERM/Ctrl-C)"
)
@click.option("--store", "store_url", default=None, help="store URL (default: as for `vudsync seed`)")
@click.option("--seed", "seed_", type=int, default=11, show_default=True, help="random seed of the changes")
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
@click.pass_context
def churn(
    ctx: click.Context, rate: float, duration: float | None, store_url: str | None, seed_: int, as_json: bool
) -> None:
    """Keep making realistic changes at RATE changes/s: user edits, access granted and revoked,
    new users, deletions, company edits. Stops at SIGTERM, Ctrl-C or after --duration, and
    reports what it did."""
    from devtools.seed.churn import Churn, load_state
    from devtools.seed.writer import open_writer

    parent = ctx.parent.params if ctx.parent else {}
    url = store_url or parent.get("store_url") or load_settings().resolved_store_url()
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    writer = open_writer(url)
    try:
        runner = Churn(writer, load_state(writer), seed=seed_)
        live = sys.stderr.isatty() and not as_json
        last_shown = [0.0]

        def show(report: Any) -> None:
            now = time.monotonic()
            if live and now - last_shown[0] > 1.0:
                last_shown[0] = now
                click.echo(
                    f"\r{report.total} changes in {report.transactions} transactions", nl=False, err=True
                )

        report = runner.run(rate, duration=duration, stop=stop, on_tick=show)
    finally:
        writer.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    result = {"store": _shown(url), "rate": rate, **report.as_dict()}
    if as_json:
        click.echo(json.dumps(result))
    else:
        if live:
            click.echo("", err=True)
        kinds = ", ".join(f"{k} {v}" for k, v in result["by_kind"].items())
        click.echo(
            f"{result['store']}: {result['changes']} changes in {result['seconds']} s "
            f"({result['changes_per_second']}/s, {result['transactions']} transactions): {kinds}"
        )
