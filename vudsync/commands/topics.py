"""``vudsync topics``: the topic catalogue on the broker."""

from __future__ import annotations

import json

import click

from kernel.settings import load_settings
from schemas.topics import ALL_TOPICS
from vudsync.bootstrap import resolve_bootstrap
from vudsync.topics import catalogue_specs, ensure_catalogue


@click.group()
def topics() -> None:
    """Create and list the catalogue's topics."""


@topics.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def ensure(as_json: bool) -> None:
    """Create every catalogue topic that does not exist yet (safe to run twice)."""
    settings = load_settings()
    created = ensure_catalogue(settings, resolve_bootstrap(settings))
    if as_json:
        click.echo(json.dumps({"created": created}))
    else:
        click.echo(f"{len(created)} topic(s) created" + (": " + ", ".join(created) if created else ""))


@topics.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_(as_json: bool) -> None:
    """Show the catalogue: name, key, retention, purpose."""
    settings = load_settings()
    specs = catalogue_specs(settings)
    rows = [
        {
            "name": a.name,
            "partitions": a.partitions,
            "key": s.key,
            "compacted": s.compacted,
            "description": s.description,
            "config": dict(a.config or {}),
        }
        for a, s in zip(specs, ALL_TOPICS, strict=True)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        kind = "compacted" if row["compacted"] else "delete"
        click.echo(f"{row['name']:<40} {kind:<9} key={row['key']:<40} {row['description']}")
