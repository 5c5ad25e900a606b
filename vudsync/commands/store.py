"""``vudsync store``: the directory store's schema."""

from __future__ import annotations

import json

import click

from kernel.settings import load_settings


@click.group()
def store() -> None:
    """Manage the directory store (SQLite by default, PostgreSQL for larger installations)."""


@store.command()
@click.option("--url", default=None, help="store URL (default: VUDSYNC_STORE_URL or <home>/directory.db)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def init(url: str | None, as_json: bool) -> None:
    """Create the schema or apply pending migrations (safe to run twice)."""
    from producers.service import open_store_migrations

    settings = load_settings()
    target = url or settings.resolved_store_url()
    applied = open_store_migrations(target)
    shown = target.split("@")[-1]  # never print credentials
    if as_json:
        click.echo(json.dumps({"store": shown, "applied": applied}))
    else:
        click.echo(f"{shown}: " + (f"applied {', '.join(applied)}" if applied else "schema up to date"))
