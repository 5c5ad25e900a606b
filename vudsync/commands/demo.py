"""``vudsync demo``."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console

from kernel.settings import load_settings


@click.command()
@click.option("--users", default=300, show_default=True, help="users in the sample directory")
@click.option("--companies", default=20, show_default=True, help="companies in the sample directory")
@click.option("--changes", default=60, show_default=True, help="live changes made after the initial sync")
@click.option("--timeout", default=600.0, show_default=True, help="seconds to wait for each backlog")
@click.option("--keep-running", is_flag=True, help="leave the broker, cloud API and workers running")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def demo(users: int, companies: int, changes: int, timeout: float, keep_running: bool, as_json: bool) -> None:
    """Run the whole pipeline on the embedded default (SQLite, local Kafka, reference cloud).

    Seeds a sample directory with Norwegian users and companies, syncs it to the cloud,
    makes live changes (renames, removals, new users), waits for them to arrive and prints
    a summary with end-to-end latency. Stops everything it started on exit or Ctrl-C.

    Example: vudsync demo --users 300 --changes 60

    On a secured three-node cluster instead of the embedded broker (each component connects
    as its own principal, the run's topics get their ACLs):

    \b
      export VUDSYNC_HOME=~/vudsync-secured
      vudsync kafka up --brokers 3 --secure --json      # prints the bootstrap
      VUDSYNC_KAFKA_BOOTSTRAP=<its bootstrap> vudsync demo

    Any other cluster: set VUDSYNC_KAFKA_BOOTSTRAP and VUDSYNC_KAFKA_* (docs/operations.md);
    every component then connects as that principal, which needs the rights of all of them on
    the run's `demo-<id>-` topics and groups.
    """
    from devtools.demo import Demo, DemoOptions, render

    console = Console(stderr=as_json)
    report = Demo(
        load_settings(), DemoOptions(users, companies, changes, timeout, keep_running), console
    ).run()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        render(report, console)
    if report.applied == 0 or report.users_in_cloud != report.users_in_store:
        console.print("[red]the cloud does not match the directory[/]")
        sys.exit(1)
    if keep_running:
        console.print(
            "left running; stop with Ctrl-C in their terminals, `kill <pid>`, and `vudsync kafka down`"
        )
