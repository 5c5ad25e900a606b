"""``vudsync review list|accept``: companies linked to cloud companies that existed before.

The seed's rule: "check that the companies have valid information before activating any other
cloud services for these companies". When the sink links an on-premise company to a cloud
company found by its organisation number (not created by vudsync), the planner holds every
assignment of access to it until an operator has checked the cloud company and accepted the
link (:mod:`processors.reviews`). ``list`` shows what waits, oldest first, numbered;
``accept`` names what it accepts — companies by id, or ``--all-up-to <n>``: exactly what
``list`` showed, never a company linked after it. The acceptance travels as a fact to every
partition of ``vud.planner.facts`` (compacted: it survives restarts), like ``instances
register``'s.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from kernel.errors import PermanentError
from kernel.settings import load_settings
from schemas.directory import EntityType

if TYPE_CHECKING:
    from processors.reviews import WaitingCompany

SHOWN = 20  # entries `list` prints (all with --json or --all)


def _entry(w: WaitingCompany, on_premise: dict[str, tuple[str, str]]) -> dict[str, Any]:
    name, number = on_premise.get(w.company_id, (None, None))
    return {
        "number": w.number,
        "company_id": w.company_id,
        "name": name,
        "organisation_number": number,
        "cloud_company_id": w.cloud_id,
        "linked_at": w.linked_at.isoformat(),
    }


def _on_premise(store_url: str, company_ids: list[str]) -> tuple[dict[str, tuple[str, str]], str | None]:
    """``{company id: (name, organisation number)}`` as the directory store holds them (read-only),
    what the operator compares with the cloud company; and why it is empty when the store
    cannot be read here (the list still works: the ids come from the facts topic)."""
    from producers.service import open_change_log

    if not company_ids:
        return {}, None
    try:
        log = open_change_log(store_url, read_only=True)
    except Exception as exc:  # an operator's host without the store: say so, and go on
        return {}, f"the directory store could not be read here ({type(exc).__name__}): ids only"
    try:
        rows = log.read_entities(EntityType.COMPANY, company_ids)
    finally:
        log.close()
    return {
        cid: (str(r.row.get("name") or ""), str(r.row.get("organisation_number") or ""))
        for cid, r in rows.items()
    }, None


@click.group()
def review() -> None:
    """Companies linked to existing cloud companies: their services wait for a review.

    \b
    Example:
      vudsync review list                    # oldest first, numbered (#n)
      vudsync review accept c1042            # after checking the cloud company
      vudsync review accept --all-up-to 311  # exactly what the list showed
    """


@review.command(name="list")
@click.option("--all", "show_all", is_flag=True, help=f"every company waiting, not the first {SHOWN}")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_waiting(show_all: bool, as_json: bool) -> None:
    """Companies waiting for review, oldest first: the on-premise id and the cloud company it
    was linked to (check that one in the cloud portal). Exit status 1 when any wait.

    \b
    Example:
      vudsync review list --json
    """
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.planner_facts import read_planner_facts

    settings = load_settings()
    now = read_planner_facts(settings, resolve_bootstrap(settings))
    waiting = now.reviews
    shown = waiting if show_all or as_json else waiting[:SHOWN]
    on_premise, unreadable = _on_premise(settings.resolved_store_url(), [w.company_id for w in shown])
    if unreadable:
        click.echo(f"note: {unreadable}", err=True)
    if as_json:
        doc = {
            "waiting": len(waiting),
            "up_to": now.high_water,
            "companies": [_entry(w, on_premise) for w in waiting],
        }
        click.echo(json.dumps(doc, indent=2))
    elif not waiting:
        click.echo("No company waits for review.")
    else:
        for w in shown:
            name, number = on_premise.get(w.company_id, ("", ""))
            known = f" ({name}, org. no. {number})" if number else ""
            click.echo(
                f"#{w.number:<8} company {w.company_id}{known} linked to cloud company {w.cloud_id} "
                f"at {w.linked_at:%Y-%m-%d %H:%M:%S}"
            )
        if not show_all and len(waiting) > SHOWN:
            click.echo(f"… and {len(waiting) - SHOWN} more (--all lists them)")
        click.echo(f"{len(waiting)} waiting for review: their assignments of access wait")
        click.echo(
            "check each cloud company's details, then: vudsync review accept <company-id>… "
            f"(or exactly these: vudsync review accept --all-up-to {now.high_water})"
        )
    if waiting:
        sys.exit(1)


@review.command()
@click.argument("company_ids", nargs=-1)
@click.option(
    "--all-up-to",
    "up_to",
    type=click.IntRange(min=0),
    default=None,
    help="accept every company listed up to this number (#n of `review list`)",
)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (requires --yes)")
def accept(company_ids: tuple[str, ...], up_to: int | None, yes: bool, as_json: bool) -> None:
    """Accept the link of the named companies (or of those listed up to --all-up-to): the
    planner releases their assignments of access. A company linked after the list stays held.

    \b
    Example:
      vudsync review list
      vudsync review accept c1042 c1043
      vudsync review accept --all-up-to 311 --yes
    """
    from datetime import UTC, datetime

    from processors.reviews import accepted_fact
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.commands.connect import publish_facts
    from vudsync.ops.planner_facts import read_planner_facts

    if bool(company_ids) == (up_to is not None):
        raise click.UsageError("name the companies, or --all-up-to <n> from `vudsync review list`; not both")
    if as_json and not yes:
        raise click.UsageError("--json cannot ask: add --yes")
    settings = load_settings()
    bootstrap = resolve_bootstrap(settings)
    now = read_planner_facts(settings, bootstrap)
    if up_to is not None:
        chosen = now.up_to(up_to)
    else:
        by_id = {w.company_id: w for w in now.reviews}
        unknown = [c for c in company_ids if c not in by_id]
        if unknown:
            raise PermanentError(
                f"not waiting for review: {', '.join(unknown)}",
                hint="`vudsync review list` shows the companies that wait",
            )
        chosen = [by_id[c] for c in dict.fromkeys(company_ids)]
    if not chosen:
        message = f"nothing waits for review up to #{up_to}: nothing to accept"
        click.echo(json.dumps({"accepted": 0, "up_to": up_to}) if as_json else message)
        return
    if not yes:
        for w in chosen[:SHOWN]:
            click.echo(f"  company {w.company_id} ↔ cloud company {w.cloud_id}", err=True)
        click.confirm(
            f"accept {len(chosen)} compan{'y' if len(chosen) == 1 else 'ies'}?", abort=True, err=True
        )
    started = datetime.now(UTC)
    publish_facts(settings, bootstrap, [accepted_fact(w.fact) for w in chosen])
    later = len(now.reviews) - len(chosen)
    if as_json:
        doc = {
            "accepted": len(chosen),
            "companies": [w.company_id for w in chosen],
            "up_to": up_to,
            "still_waiting": later,
            "at": started.isoformat(),
        }
        click.echo(json.dumps(doc))
        return
    click.echo(
        f"accepted {len(chosen)}: the planner releases their assignments of access"
        + (f"; {later} other(s) still wait" if later else "")
    )
