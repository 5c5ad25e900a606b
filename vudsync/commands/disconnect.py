"""``vudsync disconnect``: stop sending anything to the cloud for this installation.

The inverse of ``vudsync connect``: it publishes the connect fact (``connect:installation``)
with ``present`` false to every planner partition. A partition without a connected copy parks
every operation it plans or releases on ``connect:installation`` and goes on recording
everything else (:mod:`processors.connection`, the rule of issue 15: nothing is sent before
connect). ``vudsync connect`` publishes it connected again, after its other facts: what waited
is released then, judged against what the partitions know at that moment, each operation once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from kernel.settings import Settings, load_settings
from processors.needs import CONNECT_SUBJECT
from schemas.results import FactKind, PlannerFact

LEAVES = (
    "What stays in the cloud: everything, as it is. Users stay active, companies and their links to "
    "on-premise ids are kept, assignments stay; nothing is deleted or deactivated."
)
DOES = (
    "What it does: the planner sends no more operations to the cloud; it keeps reading the directory "
    "and records every change, parking what it would send. Operations already queued for the sink "
    "before the planner reads this are still applied. `vudsync connect` re-connects: what waited "
    "goes then, each operation once. It lasts across restarts until then."
)


def disconnected_fact(at: datetime | None = None) -> PlannerFact:
    """The inverse of ``vudsync connect``'s connect fact (:func:`vudsync.commands.connect.connected_fact`):
    the same key, ``present`` false, an operator's (a later ``observed_at`` wins)."""
    return PlannerFact(
        kind=FactKind.CONNECT,
        subject=CONNECT_SUBJECT,
        present=False,
        observed_at=at or datetime.now(UTC),
        source="operator",
    )


def run_disconnect(settings: Settings, bootstrap: str) -> int:
    """Publish the disconnect to every planner partition; returns the records acknowledged."""
    from processors.topics import ensure_planner_topics
    from vudsync.commands.connect import publish_facts

    ensure_planner_topics(settings, bootstrap)
    return publish_facts(settings, bootstrap, [disconnected_fact()])


@click.command()
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (needs --yes)")
def disconnect(yes: bool, as_json: bool) -> None:
    """Stop sending to the cloud for this installation, until `vudsync connect`.

    \b
    Nothing is deleted: users stay active in the cloud, companies and the links to on-premise ids
    are kept, assignments stay. The planner goes on reading the directory and parks what it would
    send; `vudsync connect` afterwards sends what waited, each operation once. `vudsync status`
    says "disconnected" (exit status 1) meanwhile.

    \b
    Example:
      vudsync disconnect            # says what it does and asks
      vudsync disconnect --yes --json
      vudsync connect               # re-connect
    """
    from vudsync.bootstrap import resolve_bootstrap

    if not yes:
        if as_json:
            raise click.UsageError("--json needs --yes (there is nobody to ask)")
        click.echo(DOES)
        click.echo(LEAVES)
        click.confirm("Disconnect this installation from the cloud?", abort=True)
    settings = load_settings()
    published = run_disconnect(settings, resolve_bootstrap(settings))
    if as_json:
        payload = {"disconnected": True, "facts": published, "does": DOES, "leaves": LEAVES}
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(f"disconnected: the planner sends nothing more to the cloud ({published} fact records)")
    click.echo(LEAVES)
    click.echo("Re-connect with `vudsync connect`.")
