"""``vudsync staging``: what a planner in staging mode computed, shown, then promoted or dropped.

A planner started with ``--staging`` (``VUDSYNC_PLANNER_STAGING=true``) plans every change as
ever but sends nothing to the cloud: the operations wait on ``vud.cloud.operations.staged``.
``diff`` compares them with the real cloud (read-only) and groups them by what they would
change, with the highest offset listed; ``promote --up-to <that offset>`` applies exactly
what the diff showed (its deletions judged by the accidental-delete rule), ``discard
--up-to`` drops it and the cloud stays as it is. The model is Entra Connect Sync's staging
mode: compute everything, export nothing, inspect, then switch over.
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import TYPE_CHECKING

import click

from kernel.settings import Settings, load_settings

if TYPE_CHECKING:
    from vudsync.ops.kafka_admin import KafkaGroupAdmin
    from vudsync.ops.staging_diff import Diff, Staged

FIRST = 10  # entries shown per group


@click.group()
def staging() -> None:
    """Staging mode: inspect what the planner computed, then promote it to the cloud or discard it.

    \b
    Example:
      vudsync run planner --staging             # computes everything, sends nothing
      vudsync staging diff                      # what would change in the cloud, by kind
      vudsync staging promote --up-to 4211      # exactly what the diff showed
      vudsync staging discard --up-to 4211 --yes
    """


def _read(settings: Settings, admin: KafkaGroupAdmin, bootstrap: str) -> Staged:
    from vudsync.ops.staging import read_staged

    return read_staged(settings, bootstrap, admin)


def _cloud_diff(settings: Settings, staged: Staged) -> Diff:
    from pydantic import SecretStr

    from vudsync.ops.cloud_reader import HttpCloudReader
    from vudsync.ops.drift import CloudState
    from vudsync.ops.staging_diff import diff

    if not staged.records:
        return diff(staged, CloudState([], [], {}, {}, {}))
    secret = settings.require_secret("cloud_client_secret")
    reader = HttpCloudReader(settings.cloud_url, settings.cloud_client_id, SecretStr(secret))
    try:
        cloud = reader.read()
    finally:
        reader.close()
    return diff(staged, cloud)


@staging.command(name="diff")
@click.option(
    "--first", "first", type=click.IntRange(min=0), default=FIRST, show_default=True, help="entries per kind"
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (every entry unless --first)")
def diff_command(first: int, as_json: bool) -> None:
    """What the staged operations would change in the cloud, compared with the cloud itself
    (read-only): counts by kind (creations, links, updates, deactivations, assignments,
    revokes, catalogue, registrations, no change), the first entries of each, and the highest
    offset, which `promote --up-to` and `discard --up-to` name. Exit status 1 when something
    is staged.

    \b
    Example:
      vudsync staging diff --first 5
      vudsync staging diff --json > staged.json
    """
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.kafka_admin import group_admin

    settings = load_settings()
    bootstrap = resolve_bootstrap(settings)
    with group_admin(bootstrap, security=settings.kafka_security()) as admin:
        click.echo("reading what is staged …", err=True)
        staged = _read(settings, admin, bootstrap)
    if staged.records:
        click.echo(f"comparing {len(staged.records)} staged record(s) with the cloud …", err=True)
    result = _cloud_diff(settings, staged)
    if as_json:
        wants_all = (
            click.get_current_context().get_parameter_source("first") is click.core.ParameterSource.DEFAULT
        )
        click.echo(json.dumps(result.as_dict(None if wants_all else first), indent=2))
    else:
        for line in _render(result, first):
            click.echo(line)
    if result.entries:
        sys.exit(1)


def _render(result: Diff, first: int) -> list[str]:
    from vudsync.ops.staging_diff import Change

    if not result.entries:
        return [f"nothing staged (from offset {result.mark})"]
    lines = [
        f"{len(result.entries)} staged operation(s) ({result.records} record(s), offsets "
        f"{result.mark}-{result.high_water}): {result.changes} would change the cloud"
    ]
    for change in Change:
        entries = result.groups.get(change, ())
        if not entries:
            continue
        lines.append("")
        lines.append(f"{change.value:<14} {len(entries)}")
        for e in entries[:first]:
            lines.append(f"  #{e.offset:<8} {e.kind:<30} {e.aggregate:<28} {e.detail}")
        if len(entries) > first:
            lines.append(f"  … and {len(entries) - first} more (--first {len(entries)}, or --json)")
    lines.append("")
    if result.waiting:
        lines.append(
            f"{result.waiting} wait for what the others create (user, company, catalogue entry): "
            "promote applies them once those exist"
        )
    if result.destructive:
        lines.append(f"{result.destructive} deletion(s) (deactivations, revokes, removals) among them")
    lines.append(
        f"to apply exactly these: vudsync staging promote --up-to {result.high_water}"
        f"   (or drop them: vudsync staging discard --up-to {result.high_water})"
    )
    return lines


_UP_TO = click.option(
    "--up-to",
    "up_to",
    type=click.IntRange(min=0),
    default=None,
    help="the highest offset `vudsync staging diff` showed",
)
_OPERATOR = click.option("--operator", default=None, help="who decides (default: the login name)")
_YES = click.option("--yes", is_flag=True, help="do not ask for confirmation")
_JSON = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


def _bounded(verb: str, up_to: int | None, staged: Staged) -> Staged:
    """The listing the operator names; usage errors that say what to do."""
    if up_to is None:
        mark = staged.high_water
        raise click.UsageError(
            f"{verb} names what it {verb}s: run `vudsync staging diff`, check it, then "
            + (
                f"`vudsync staging {verb} --up-to {mark}`"
                if mark is not None
                else f"`vudsync staging {verb} --up-to <offset>` (nothing is staged now)"
            )
        )
    return staged.up_to(up_to)


@staging.command()
@_UP_TO
@click.option(
    "--approve-deletions",
    "approve_deletions",
    type=click.IntRange(min=0),
    default=None,
    help="the number of deletions the promotion holds, when it passes the accidental-delete threshold",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="seconds to wait for the operations that need what the others create",
)
@_OPERATOR
@_YES
@_JSON
def promote(
    up_to: int | None,
    approve_deletions: int | None,
    wait: float,
    operator: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Apply exactly what `vudsync staging diff` showed, up to its highest offset: the ready
    operations at once, then those that waited for a creation as soon as the planner has the
    cloud ids (create before assign). Deletions are judged as one burst by the
    accidental-delete rule: over the threshold, nothing is applied unless --approve-deletions
    names their number. Exit status 1 when something could not be applied yet.

    \b
    Example:
      vudsync staging diff
      vudsync staging promote --up-to 4211
      vudsync staging promote --up-to 4211 --approve-deletions 812 --yes
    """
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.kafka_admin import group_admin
    from vudsync.ops.staging import deletions_go
    from vudsync.ops.staging import promote as run_promote
    from vudsync.ops.staging_diff import promotion
    from vudsync.ops.sync_runner import not_running

    settings = load_settings()
    bootstrap = resolve_bootstrap(settings)
    with group_admin(bootstrap, security=settings.kafka_security()) as admin:
        staged = _read(settings, admin, bootstrap)
        chosen = _bounded("promote", up_to, staged)
        plan = promotion(chosen)
        if not plan.total:
            message = f"nothing staged up to #{up_to} (promoted or discarded already?): nothing to promote"
            click.echo(json.dumps({"promoted": 0, "up_to": up_to}) if as_json else message)
            return
        if not deletions_go(settings, plan) and approve_deletions != plan.destructive:
            click.echo(
                f"refused: this promotion holds {plan.destructive} deletion(s) (deactivations, revokes, "
                f"removals), over the accidental-delete threshold ({settings.planner_deletes_threshold}). "
                "Check them (`vudsync staging diff --json`), then add "
                f"`--approve-deletions {plan.destructive}`",
                err=True,
            )
            sys.exit(1)
        absent = not_running(settings, admin) if plan.waiting else []
        for line in absent:
            click.echo(
                f"warning: {line}; the {len(plan.waiting)} operation(s) waiting for a creation are "
                "applied by a later promote",
                err=True,
            )
        later = sum(1 for r in staged.records if r.offset > chosen.end - 1)
        if not yes:
            click.confirm(
                f"promote {plan.total} operation(s) up to #{chosen.high_water} ({len(plan.ready)} now, "
                f"{len(plan.waiting)} once what they need exists; {plan.destructive} deletion(s))?",
                abort=True,
                err=True,
            )

        def progress(what: str, done: int, total: int) -> None:
            click.echo(f"{what} {done}/{total}", err=True)

        report = run_promote(
            settings,
            bootstrap,
            admin,
            chosen,
            plan,
            operator=operator or getpass.getuser(),
            wait=0.0 if absent else wait,
            progress=progress,
        )
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "staged_later": later}, indent=2))
    else:
        click.echo(
            f"promoted up to #{report.up_to}: {report.published} operation(s) sent to the cloud, "
            f"{report.released} more once what they needed existed"
            + (f"; {later} staged after the listing stay staged" if later else "")
        )
        if report.still_waiting:
            needs = sorted({n for ns in report.still_waiting.values() for n in ns})
            click.echo(
                f"{len(report.still_waiting)} operation(s) still wait (for {', '.join(needs[:5])}"
                + (" …" if len(needs) > 5 else "")
                + "): when the planner stages them again, `vudsync staging diff` shows them; promote those"
            )
    if report.still_waiting:
        sys.exit(1)


@staging.command()
@_UP_TO
@_OPERATOR
@_YES
@_JSON
def discard(up_to: int | None, operator: str | None, yes: bool, as_json: bool) -> None:
    """Drop what `vudsync staging diff` showed, up to its highest offset: nothing of it reaches
    the cloud. The planner has planned those changes: they are not planned again (see the
    runbook: `vudsync verify` shows them as drift, `verify --repair` applies them later).

    \b
    Example:
      vudsync staging discard --up-to 4211 --yes
    """
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.kafka_admin import group_admin
    from vudsync.ops.staging import discard as run_discard

    settings = load_settings()
    bootstrap = resolve_bootstrap(settings)
    with group_admin(bootstrap, security=settings.kafka_security()) as admin:
        staged = _read(settings, admin, bootstrap)
        chosen = _bounded("discard", up_to, staged)
        assert up_to is not None
        if not chosen.records:
            message = f"nothing staged up to #{up_to}: nothing to discard"
            click.echo(json.dumps({"discarded": 0, "up_to": up_to}) if as_json else message)
            return
        if not yes:
            click.confirm(
                f"discard {len(chosen.records)} staged record(s) up to #{up_to}? The cloud stays as it is",
                abort=True,
                err=True,
            )
        run_discard(settings, admin, up_to, operator or getpass.getuser())
    later = len(staged.records) - len(chosen.records)
    if as_json:
        click.echo(json.dumps({"discarded": len(chosen.records), "up_to": up_to, "staged_later": later}))
    else:
        click.echo(
            f"discarded {len(chosen.records)} staged record(s) up to #{up_to}: the cloud is untouched"
            + (f"; {later} staged after the listing stay staged" if later else "")
        )
