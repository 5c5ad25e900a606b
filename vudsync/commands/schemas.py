"""``vudsync schemas``: the contract as JSON Schema and AsyncAPI documents."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.group()
def schemas() -> None:
    """Export the message contract (JSON Schema per model, AsyncAPI of the topic catalogue)."""


@schemas.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="folder to write to (default: schemas/jsonschema in the source tree)",
)
@click.option("--check", is_flag=True, help="write nothing; exit 1 if the files differ from the models")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def export(out: Path | None, check: bool, as_json: bool) -> None:
    """Write one JSON Schema per event, operation and result model, and asyncapi.json."""
    from schemas.export import DEFAULT_OUT, stale_documents, write_documents

    folder = out or DEFAULT_OUT
    if check:
        stale = stale_documents(folder)
        if as_json:
            click.echo(json.dumps({"out": str(folder), "stale": stale}))
        elif stale:
            click.echo(f"{folder}: {len(stale)} file(s) differ from the models: {', '.join(stale)}")
            click.echo("run `vudsync schemas export` and commit the result")
        else:
            click.echo(f"{folder}: up to date")
        sys.exit(1 if stale else 0)
    changed = write_documents(folder)
    if as_json:
        click.echo(json.dumps({"out": str(folder), "changed": changed}))
    else:
        click.echo(
            f"{folder}: " + (f"{len(changed)} file(s) written or removed" if changed else "up to date")
        )
        for relative in changed:
            click.echo(f"  {relative}")
