"""``vudsync deletes``: the operator's side of the accidental-delete protection.

When a burst of deletions passes the threshold, the planner holds **all** of them (each held
operation has a ``held`` result on ``vud.cloud.results``) and numbers each held deletion.
``list`` shows what is held: the count, the first entries (and which side each deletes from:
the cloud — removed on premise — or the directory — a revoke in the cloud the writeback would
apply to the store) and the highest number.
``approve --up-to <n>`` lets the held deletions numbered up to ``n`` go — exactly what the
operator saw; a deletion held after that stays held. ``reject`` drops them (each gets a
``rejected`` result; the cloud keeps the objects). The decision travels as a
``DeletionsDecided`` message to partition 0 of ``vud.planner.control``, where the planner's gate
lives, whichever worker owns it.
"""

from __future__ import annotations

import getpass
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from kernel.settings import Settings, load_settings

if TYPE_CHECKING:
    from processors.gate import HeldDeletion

SHOWN = 20  # entries `list` prints (all with --json or --all)


def send_decision(
    settings: Settings, bootstrap: str, *, approve: bool, operator: str, up_to: int | None
) -> None:
    """Publish the decision to the gate (partition 0) and wait for the broker's ack; raises
    :class:`RetryableError` if it did not take it."""
    from kernel.publishing.kafka_python import KafkaRecordPublisher
    from processors.control import GATE_PARTITION, DeletionsDecided
    from processors.topics import ensure_planner_topics
    from schemas.topics import PLANNER_CONTROL

    ensure_planner_topics(settings, bootstrap)
    decision = DeletionsDecided(approve=approve, operator=operator, decided_at=datetime.now(UTC), up_to=up_to)
    security = settings.kafka_security()
    publisher = KafkaRecordPublisher(bootstrap, client_id="vudsync-deletes", security=security)
    try:
        publisher.publish(
            settings.topic(PLANNER_CONTROL.name),
            "operator",
            decision.model_dump_json().encode(),
            partition=GATE_PARTITION,
        )
        publisher.flush(timeout=60)
    finally:
        publisher.close(timeout=10)


@click.group()
def deletes() -> None:
    """Deletions held by the accidental-delete protection: list, approve or reject them.

    \b
    Example:
      vudsync deletes list                      # count, first entries, highest number (#n)
      vudsync deletes approve --up-to 611       # exactly what the list showed
      vudsync deletes reject --up-to 611 --yes
    """


def _entry(h: HeldDeletion) -> dict[str, object]:
    return {**asdict(h), "entity": h.entity, "entity_id": h.entity_id, "version": h.version}


def _decide(approve: bool, up_to: int | None, operator: str | None, yes: bool, as_json: bool) -> None:
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.held_deletions import read_held

    verb = "approve" if approve else "reject"
    settings = load_settings()
    bootstrap = resolve_bootstrap(settings)
    now = read_held(settings, bootstrap)
    if up_to is None and approve:
        mark = now.high_water
        raise click.UsageError(
            "approve names what it approves: run `vudsync deletes list`, check the deletions held, "
            + (
                f"then `vudsync deletes approve --up-to {mark}` ({now.count} held now)"
                if mark is not None
                else "then `vudsync deletes approve --up-to <n>` (nothing is held now)"
            )
        )
    chosen = now.held if up_to is None else now.up_to(up_to)
    if not chosen:
        message = f"nothing held{'' if up_to is None else f' up to #{up_to}'}: nothing to {verb}"
        click.echo(json.dumps({"decided": 0, "up_to": up_to}) if as_json else message)
        return
    bound = "" if up_to is None else f" (up to #{up_to})"
    if not yes:
        click.confirm(f"{verb} {len(chosen)} held deletion(s){bound}?", abort=True, err=True)
    send_decision(settings, bootstrap, approve=approve, operator=operator or getpass.getuser(), up_to=up_to)
    later = now.count - len(chosen)
    if as_json:
        doc = {"decision": verb, "decided": len(chosen), "up_to": up_to, "still_held": later}
        click.echo(json.dumps(doc))
        return
    click.echo(
        f"{verb}d {len(chosen)} held deletion(s){bound}: "
        + (
            "the planner releases them"
            if approve
            else "dropped: the side each deletes from keeps what it holds (a revoke in the cloud "
            "written back: the store keeps the entry, and the cloud gets it back)"
        )
        + (f"; {later} held later stay held" if later else "")
    )


_UP_TO = click.option(
    "--up-to", "up_to", type=click.IntRange(min=0), default=None, help="the highest number (#n) `list` showed"
)
_OPERATOR = click.option("--operator", default=None, help="who decides (default: the login name)")
_YES = click.option("--yes", is_flag=True, help="do not ask for confirmation")
_JSON = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


@deletes.command()
@_UP_TO
@_OPERATOR
@_YES
@_JSON
def approve(up_to: int | None, operator: str | None, yes: bool, as_json: bool) -> None:
    """Let the held deletions numbered up to --up-to go to the cloud.

    \b
    Example:
      vudsync deletes list
      vudsync deletes approve --up-to 611
    """
    _decide(True, up_to, operator, yes, as_json)


@deletes.command()
@_UP_TO
@_OPERATOR
@_YES
@_JSON
def reject(up_to: int | None, operator: str | None, yes: bool, as_json: bool) -> None:
    """Drop the held deletions (up to --up-to; without it, every one held): the cloud keeps
    those objects.

    \b
    Example:
      vudsync deletes reject --up-to 611
    """
    _decide(False, up_to, operator, yes, as_json)


@deletes.command(name="list")
@click.option("--all", "show_all", is_flag=True, help=f"every held deletion, not the first {SHOWN}")
@_JSON
def list_held(show_all: bool, as_json: bool) -> None:
    """The deletions held now: count, first entries, and the highest number to approve up to.
    Exit status 1 when something is held.

    \b
    Example:
      vudsync deletes list --json
    """
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.held_deletions import read_held

    settings = load_settings()
    now = read_held(settings, resolve_bootstrap(settings))
    if as_json:
        doc = {"held": now.count, "up_to": now.high_water, "entries": [_entry(h) for h in now.held]}
        click.echo(json.dumps(doc, indent=2))
    else:
        for h in now.held if show_all else now.held[:SHOWN]:
            click.echo(
                f"#{h.seq:<8} {h.entity}:{h.entity_id:<28} v{h.version:<8} deletes from the {h.deletes_from}"
            )
        if not show_all and now.count > SHOWN:
            click.echo(f"… and {now.count - SHOWN} more (--all lists them)")
        click.echo(f"{now.count} held")
        if now.high_water is not None:
            click.echo(
                f"to decide exactly these: vudsync deletes approve --up-to {now.high_water} "
                f"(or reject --up-to {now.high_water})"
            )
    if now.count:
        sys.exit(1)
