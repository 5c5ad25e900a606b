"""``vudsync verify``: compare the directory store with the cloud, object by object.

Prints a drift report by object type (missing, extra, different fields); ``--repair`` asks
the planner to re-assert each drifted entity's directory state (:mod:`vudsync.ops.repair_plan`)
— after showing what it asks for and asking (``--yes`` skips the question, ``--dry-run`` only
shows it). The planner plans the repairs like directory events: deactivations and revokes
pass the accidental-delete gate (held ones in ``vudsync deletes list``), access waits for a
matching application instance. ``--every 10m`` (or ``VUDSYNC_VERIFY_EVERY``) repeats it on a
schedule; a drift repaired again is the same repair (the gate counts and holds it once).
Exit status: 0 no drift, 1 drift found (after repair: drift left, or repairs held), 2 refused
(no store, an empty store, bad settings, a confirmation that cannot be asked).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from kernel.settings import Settings, load_settings
from vudsync.ops.drift import OBJECT_TYPES, DriftReport
from vudsync.ops.repair_plan import RepairPlan

if TYPE_CHECKING:
    from collections.abc import Callable

    from schemas.results import OperationResult
    from vudsync.ops.verify_runner import Sent
from vudsync.ops.timespec import parse_duration

log = logging.getLogger(__name__)
SHOWN = 20  # repair requests listed before "… and N more"


def _print_report(report: DriftReport) -> None:
    counts = report.counts()
    click.echo(
        f"{'object type':<22} {'directory':>9} {'cloud':>7} {'missing':>8} {'extra':>6} {'different':>9}"
    )
    for t in OBJECT_TYPES:
        ours, theirs = report.checked.get(t, (0, 0))
        c = counts[t]
        click.echo(f"{t:<22} {ours:>9} {theirs:>7} {c['missing']:>8} {c['extra']:>6} {c['different']:>9}")
    for d in report.drifts[:200]:
        line = f"  {d.kind.value:<9} {d.object_type}:{d.key}"
        if d.fields:
            line += "  " + "; ".join(f"{f.field}: {f.directory!r} ≠ cloud {f.cloud!r}" for f in d.fields)
        if d.note:
            line += f"  ({d.note})"
        click.echo(line)
    if len(report.drifts) > 200:
        click.echo(f"  … and {len(report.drifts) - 200} more (--json lists all)")
    for label in report.rejected_in_cloud[:200]:
        click.echo(f"  rejected  {label}  (capture rejects its directory row: not compared, never repaired)")
    if report.cloud_origin:
        click.echo(
            f"note: {len(report.cloud_origin)} access entr(y/ies) assigned in the cloud by an administrator "
            "(origin cloud): kept, not drift, never revoked by --repair (--json lists them)"
        )
    if report.rejected:
        click.echo(f"note: {report.rejected} directory row(s) cannot be captured (see `vudsync dlq list`)")
    click.echo("No drift." if report.clean else f"{len(report.drifts)} drift(s).")


def _show_plan(plan: RepairPlan) -> None:
    counts = plan.counts()
    click.echo(
        f"repair: {len(plan.requests)} entit(y/ies) to re-assert through the planner: "
        + (", ".join(f"{n} {kind}" for kind, n in counts.items()) or "nothing")
    )
    if plan.deletions:
        click.echo(
            f"repair: {plan.deletions} of them deactivate or revoke: they pass the accidental-delete "
            "gate (over VUDSYNC_PLANNER_DELETES_THRESHOLD they are held: `vudsync deletes list`)"
        )
    for r in plan.requests[:SHOWN]:
        click.echo(f"  {r.entity.value}:{r.entity_id:<24} {', '.join(r.sends)}")
    if len(plan.requests) > SHOWN:
        click.echo(f"  … and {len(plan.requests) - SHOWN} more (--json lists all)")
    for d, why in plan.skipped:
        click.echo(f"  not repaired  {d.object_type}:{d.key} — {why}")


def _show_outcomes(sent: Sent, outcomes: dict[str, str]) -> None:
    tally = Counter(outcomes.get(i, "no result yet") for i in sent.operation_ids)
    click.echo("repair: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(tally.items())))
    if tally["held"]:
        click.echo(
            "repair: deletions held by the accidental-delete gate: check the directory store, then "
            "`vudsync deletes list` and `vudsync deletes approve --up-to N` (or reject)"
        )
    if tally["blocked"]:
        click.echo("repair: access blocked by an application instance mismatch: see `vudsync instances`")
    for entity_id, why in sent.rejected.items():
        click.echo(f"  not sent  {entity_id} — capture rejects its row: {why}")
    for ref in sent.not_sent:
        click.echo(f"  not sent  {ref} — the store no longer holds it (the next verify sees it again)")


def _progress(total: int) -> Callable[[OperationResult], None]:
    """Shows the results as they come (stderr): the first ones, then a count now and then."""
    seen = 0

    def show(result: OperationResult) -> None:
        nonlocal seen
        seen += 1
        if seen <= SHOWN:
            click.echo(f"  {result.outcome.value:<15} {result.kind:<20} {result.entity_id}", err=True)
        elif seen % 100 == 0:
            click.echo(f"  … {seen} results for {total} operation(s)", err=True)

    return show


def _confirm(count: int) -> bool:
    if not sys.stdin.isatty():
        raise click.UsageError(
            f"--repair would ask the planner for {count} repair(s) and cannot ask for confirmation "
            "here (not a terminal): pass --yes to send them, or --dry-run to only show them"
        )
    return click.confirm(f"ask the planner to repair {count} entit(y/ies)?", err=True)


def _run(
    settings: Settings,
    *,
    repair: bool,
    dry_run: bool,
    confirm: bool,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> bool:
    """One pass; returns whether the cloud is clean (and no repair waits)."""
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.kafka_admin import group_admin
    from vudsync.ops.sync_runner import not_running
    from vudsync.ops.verify_runner import plan_repair, send_repairs, verify_once, wait_for_results

    verification = verify_once(settings)
    payload: dict[str, object] = {"report": verification.report.as_dict()}
    if not as_json:
        _print_report(verification.report)
    clean = verification.report.clean
    if repair and not clean:
        plan = plan_repair(verification)
        step: dict[str, object] = {"plan": plan.as_dict(), "sent": False}
        payload["repair"] = step
        if not as_json:
            _show_plan(plan)
        if not dry_run and plan.requests and (not confirm or _confirm(len(plan.requests))):
            bootstrap = resolve_bootstrap(settings)
            with group_admin(bootstrap, security=settings.kafka_security()) as admin:
                down = not_running(settings, admin)
                sent = send_repairs(settings, bootstrap, admin, plan)
            step.update(sent=True, operation_ids=sorted(sent.operation_ids), not_running=down)
            step.update(rejected=sent.rejected, not_sent=list(sent.not_sent))
            if not as_json:
                click.echo(f"repair: sent {len(plan.requests)} repair request(s) to the planner")
                for why in down:
                    click.echo(f"warning: {why}; the repairs wait for it in Kafka", err=True)
            if wait:
                outcomes = wait_for_results(
                    bootstrap,
                    sent.marks,
                    set(sent.operation_ids),
                    timeout=timeout,
                    on_result=None if as_json else _progress(len(sent.operation_ids)),
                    security=settings.kafka_security(),
                )
                step["outcomes"] = outcomes
                if not as_json:
                    _show_outcomes(sent, outcomes)
                verification = verify_once(settings)
                clean = verification.report.clean
                payload["after_repair"] = verification.report.as_dict()
                if not as_json:
                    click.echo("after repair:")
                    _print_report(verification.report)
        elif not dry_run and not as_json and plan.requests:
            click.echo("repair: nothing sent", err=True)
    if as_json:
        click.echo(json.dumps(payload, indent=2, default=str))
    return clean


@click.command()
@click.option("--json", "as_json", is_flag=True, help="the report as JSON")
@click.option(
    "--repair", is_flag=True, help="ask the planner to re-assert each drifted entity (through its gates)"
)
@click.option("--dry-run", is_flag=True, help="with --repair: show what it would ask for, send nothing")
@click.option(
    "--yes", is_flag=True, help="with --repair: send without asking (required with --every, --json)"
)
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="with --repair: wait for their results"
)
@click.option("--timeout", default="5m", show_default=True, help="with --repair --wait: how long")
@click.option("--every", default=None, help="repeat at this interval (10m, 1h); default VUDSYNC_VERIFY_EVERY")
def verify(
    as_json: bool, repair: bool, dry_run: bool, yes: bool, wait: bool, timeout: str, every: str | None
) -> None:
    """Full comparison of the directory store and the cloud: drift by object type.

    With --repair, each drifted user, company and catalogue entry is re-emitted to the planner
    with a repair marker; the planner plans it like a directory event (accidental-delete gate,
    instance block). Exit status 1 while drift is left (or repairs are held), 2 when refused.

    \b
    Example:
      vudsync verify --repair --dry-run      # what it would ask the planner for
      vudsync verify --repair                # the same, then asks before sending
      vudsync verify --repair --yes --every 1h --no-wait
    """
    settings = load_settings()
    interval = every if every is not None else settings.verify_every
    wait_seconds = parse_duration(timeout).total_seconds()
    if repair and not dry_run and not yes and (interval or as_json):
        raise click.UsageError("--repair with --every or --json cannot ask: add --yes (or --dry-run)")
    if dry_run and not repair:
        raise click.UsageError("--dry-run shows what --repair would send: add --repair")
    one_pass = functools.partial(
        _run,
        settings,
        repair=repair,
        dry_run=dry_run,
        confirm=not yes,
        wait=wait,
        timeout=wait_seconds,
        as_json=as_json,
    )
    if not interval:
        raise SystemExit(0 if one_pass() else 1)
    period = parse_duration(interval).total_seconds()
    try:
        while True:
            started = time.monotonic()
            if not as_json:
                click.echo(f"== verify at {datetime.now(UTC).isoformat(timespec='seconds')}")
            try:
                one_pass()
            except Exception as exc:  # a scheduled run survives one failed pass
                log.warning("verify: this pass failed: %s", exc)
                click.echo(f"error: {exc}", err=True)
            time.sleep(max(period - (time.monotonic() - started), 0))
    except KeyboardInterrupt:
        return
