"""``vudsync verify``: compare the directory store with the cloud, object by object.

Prints a drift report by object type (missing, extra, different fields); ``--repair`` sends
corrective operations through the sink; ``--every 10m`` (or ``VUDSYNC_VERIFY_EVERY``) repeats
it on a schedule. Exit status: 0 no drift, 1 drift found (after repair: drift left).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import click

from kernel.settings import Settings, load_settings
from vudsync.ops.drift import OBJECT_TYPES, DriftReport
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
    for name in report.truncated:
        click.echo(f"warning: the cloud returned only part of its {name}: the comparison is incomplete")
    if report.rejected:
        click.echo(f"note: {report.rejected} directory row(s) cannot be captured (see `vudsync dlq list`)")
    click.echo("No drift." if report.clean else f"{len(report.drifts)} drift(s).")


def _run(settings: Settings, *, repair: bool, wait: bool, timeout: float, as_json: bool) -> bool:
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.kafka_admin import group_admin
    from vudsync.ops.verify_runner import plan_repair, publish_repair, verify_once, wait_for_results

    verification = verify_once(settings)
    payload: dict[str, object] = {"report": verification.report.as_dict()}
    if not as_json:
        _print_report(verification.report)
    if repair and not verification.report.clean:
        bootstrap = resolve_bootstrap(settings)
        passes = []
        for attempt in range(3):  # access waits for its user/company: one more pass after them
            plan = plan_repair(verification)
            if not plan.operations:
                break
            with group_admin(bootstrap, security=settings.kafka_security()) as admin:
                marks = publish_repair(settings, bootstrap, admin, plan.operations)
            ids = {op.operation_id for op in plan.operations}
            step: dict[str, object] = {
                "published": [
                    {"operation_id": op.operation_id, "kind": op.kind, "aggregate": op.aggregate}
                    for op in plan.operations
                ],
                "skipped": [{"drift": d.as_dict(), "why": why} for d, why in plan.skipped],
            }
            if not as_json:
                click.echo(f"repair: published {len(plan.operations)} operation(s) to the sink")
                for d, why in plan.skipped:
                    click.echo(f"  not yet: {d.object_type}:{d.key} — {why}")
            if not wait:
                passes.append(step)
                break
            outcomes = wait_for_results(
                bootstrap, marks, ids, timeout=timeout, security=settings.kafka_security()
            )
            step["outcomes"] = outcomes
            passes.append(step)
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
        if wait:
            payload["after_repair"] = verification.report.as_dict()
            if not as_json:
                click.echo("after repair:")
                _print_report(verification.report)
    if as_json:
        click.echo(json.dumps(payload, indent=2, default=str))
    return verification.report.clean


@click.command()
@click.option("--json", "as_json", is_flag=True, help="the report as JSON")
@click.option("--repair", is_flag=True, help="send corrective operations through the sink for each drift")
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="with --repair: wait for their results"
)
@click.option("--timeout", default="5m", show_default=True, help="with --repair --wait: how long")
@click.option("--every", default=None, help="repeat at this interval (10m, 1h); default VUDSYNC_VERIFY_EVERY")
def verify(as_json: bool, repair: bool, wait: bool, timeout: str, every: str | None) -> None:
    """Full comparison of the directory store and the cloud: drift by object type."""
    settings = load_settings()
    interval = every if every is not None else settings.verify_every
    wait_seconds = parse_duration(timeout).total_seconds()
    if not interval:
        clean = _run(settings, repair=repair, wait=wait, timeout=wait_seconds, as_json=as_json)
        raise SystemExit(0 if clean else 1)
    period = parse_duration(interval).total_seconds()
    try:
        while True:
            started = time.monotonic()
            if not as_json:
                click.echo(f"== verify at {datetime.now(UTC).isoformat(timespec='seconds')}")
            try:
                _run(settings, repair=repair, wait=wait, timeout=wait_seconds, as_json=as_json)
            except Exception as exc:  # a scheduled run survives one failed pass
                log.warning("verify: this pass failed: %s", exc)
                click.echo(f"error: {exc}", err=True)
            time.sleep(max(period - (time.monotonic() - started), 0))
    except KeyboardInterrupt:
        return
