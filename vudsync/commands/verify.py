"""``vudsync verify``: compare the directory store with the cloud, object by object.

Prints a drift report by object type (missing, extra, different fields); ``--repair`` sends
corrective operations through the sink — after showing them and asking (``--yes`` skips the
question, ``--dry-run`` only shows them), and with its deletions passed through the planner's
accidental-delete gate rule; ``--every 10m`` (or ``VUDSYNC_VERIFY_EVERY``) repeats it on a
schedule, one gate window across passes. Exit status: 0 no drift, 1 drift found (after
repair: drift left), 2 refused (no store, an empty store, bad settings).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import click

from kernel.settings import Settings, load_settings
from processors.deletions import GateState
from schemas.operations import CloudOperation
from vudsync.ops.drift import OBJECT_TYPES, DriftReport, RepairPlan
from vudsync.ops.timespec import parse_duration

log = logging.getLogger(__name__)


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
    for op in plan.operations[:200]:
        click.echo(f"  send      {op.kind:<30} {op.aggregate}")
    if len(plan.operations) > 200:
        click.echo(f"  … and {len(plan.operations) - 200} more (--json lists all)")
    for op in plan.held[:200]:
        click.echo(f"  held      {op.kind:<30} {op.aggregate}")
    if plan.held:
        click.echo(
            f"repair: {len(plan.held)} deletion(s) held by the accidental-delete gate (more than "
            "VUDSYNC_PLANNER_DELETES_THRESHOLD / _PERCENT in VUDSYNC_PLANNER_DELETES_WINDOW): "
            "not sent. Check the directory store first; to send them, raise the threshold for one run."
        )
    for d, why in plan.skipped:
        click.echo(f"  not yet   {d.object_type}:{d.key} — {why}")


def _op_rows(ops: Iterable[CloudOperation]) -> list[dict[str, object]]:
    return [{"operation_id": op.operation_id, "kind": op.kind, "aggregate": op.aggregate} for op in ops]


def _run(
    settings: Settings,
    gate: GateState,
    *,
    repair: bool,
    dry_run: bool,
    confirm: bool,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> tuple[bool, GateState]:
    """One pass; returns whether the cloud is clean and the gate's window after it."""
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.kafka_admin import group_admin
    from vudsync.ops.verify_runner import plan_repair, publish_repair, verify_once, wait_for_results

    verification = verify_once(settings)
    payload: dict[str, object] = {"report": verification.report.as_dict()}
    if not as_json:
        _print_report(verification.report)
    if repair and not verification.report.clean:
        passes = []
        for attempt in range(3):  # access waits for its user/company: one more pass after them
            plan, gate = plan_repair(settings, verification, gate)
            step: dict[str, object] = {
                "published": [] if dry_run else _op_rows(plan.operations),
                "planned": _op_rows(plan.operations),
                "held": _op_rows(plan.held),
                "skipped": [{"drift": d.as_dict(), "why": why} for d, why in plan.skipped],
            }
            passes.append(step)
            if not as_json:
                _show_plan(plan)
            if dry_run or not plan.operations:
                break
            if confirm and not click.confirm(
                f"send {len(plan.operations)} repair operation(s) to the sink?", err=True
            ):
                step["published"] = []
                click.echo("repair: nothing sent", err=True)
                break
            bootstrap = resolve_bootstrap(settings)
            with group_admin(bootstrap, security=settings.kafka_security()) as admin:
                marks = publish_repair(settings, bootstrap, admin, plan.operations)
            ids = {op.operation_id for op in plan.operations}
            if not as_json:
                click.echo(f"repair: published {len(plan.operations)} operation(s) to the sink")
            if not wait:
                break
            outcomes = wait_for_results(
                bootstrap, marks, ids, timeout=timeout, security=settings.kafka_security()
            )
            step["outcomes"] = outcomes
            if not as_json:
                done = sum(1 for o in outcomes.values() if o in ("applied", "already_applied"))
                click.echo(
                    f"repair: {done} applied, {len(ids) - len(outcomes)} without a result yet, "
                    f"{sum(1 for o in outcomes.values() if o == 'dead_lettered')} dead-lettered"
                )
            verification = verify_once(settings)
            if verification.report.clean or not plan.skipped or attempt == 2:
                break
        payload["repair"] = passes
        if wait and not dry_run:
            payload["after_repair"] = verification.report.as_dict()
            if not as_json:
                click.echo("after repair:")
                _print_report(verification.report)
    if as_json:
        click.echo(json.dumps(payload, indent=2, default=str))
    return verification.report.clean, gate


@click.command()
@click.option("--json", "as_json", is_flag=True, help="the report as JSON")
@click.option("--repair", is_flag=True, help="send corrective operations through the sink for each drift")
@click.option("--dry-run", is_flag=True, help="with --repair: show what it would send, send nothing")
@click.option("--yes", is_flag=True, help="with --repair: send without asking (required with --every)")
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="with --repair: wait for their results"
)
@click.option("--timeout", default="5m", show_default=True, help="with --repair --wait: how long")
@click.option("--every", default=None, help="repeat at this interval (10m, 1h); default VUDSYNC_VERIFY_EVERY")
def verify(
    as_json: bool, repair: bool, dry_run: bool, yes: bool, wait: bool, timeout: str, every: str | None
) -> None:
    """Full comparison of the directory store and the cloud: drift by object type."""
    settings = load_settings()
    interval = every if every is not None else settings.verify_every
    wait_seconds = parse_duration(timeout).total_seconds()
    if repair and not dry_run and not yes and (interval or as_json):
        raise click.UsageError("--repair with --every or --json cannot ask: add --yes (or --dry-run)")
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
    gate = GateState()  # the accidental-delete window, carried over scheduled passes
    if not interval:
        clean, _ = one_pass(gate)
        raise SystemExit(0 if clean else 1)
    period = parse_duration(interval).total_seconds()
    try:
        while True:
            started = time.monotonic()
            if not as_json:
                click.echo(f"== verify at {datetime.now(UTC).isoformat(timespec='seconds')}")
            try:
                _, gate = one_pass(gate)
            except Exception as exc:  # a scheduled run survives one failed pass
                log.warning("verify: this pass failed: %s", exc)
                click.echo(f"error: {exc}", err=True)
            time.sleep(max(period - (time.monotonic() - started), 0))
    except KeyboardInterrupt:
        return
