"""``vudsync bench <area>``: measure speed and memory; results go to docs/benchmarks.md."""

from __future__ import annotations

import importlib
import importlib.util

import click

from devtools.bench import AREAS


class _Areas(click.Group):
    """Loads an area's benchmark module only when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [a for a in AREAS if importlib.util.find_spec(f"devtools.bench.{a}") is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.list_commands(ctx):
            return None
        return importlib.import_module(f"devtools.bench.{name}").command  # type: ignore[no-any-return]


@click.group(cls=_Areas)
def bench() -> None:
    """Benchmarks of each stage on this machine (see docs/benchmarks.md for recorded figures)."""
