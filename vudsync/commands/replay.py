"""``vudsync replay``: rewind the planner's, the sink's and/or the directory sink's consumer group
after a failed integration, wait while the backlog drains, and say what it did.

The logic is in :mod:`vudsync.ops.replay` (pure) and :mod:`vudsync.ops.replay_runner`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from kernel.errors import ConfigurationError
from kernel.settings import load_settings
from vudsync.bootstrap import resolve_bootstrap
from vudsync.ops.groups import GROUP_CHOICES, group_id, resolve_topics, roles_for, topic_aliases
from vudsync.ops.replay import ReplayPlan, ReplaySummary, parse_offsets
from vudsync.ops.timespec import parse_duration, parse_since

if TYPE_CHECKING:
    from vudsync.ops.replay_runner import ReplayRunner


def _table(plan: ReplayPlan) -> None:
    click.echo(
        f"  {'group':<32} {'topic':<42} {'part':>4} {'committed':>9} {'reset to':>9} {'end':>9} {'msgs':>6}"
    )
    for p in plan.partitions:
        committed = "-" if p.committed is None else str(p.committed)
        click.echo(
            f"  {p.group:<32} {p.topic:<42} {p.partition:>4} {committed:>9} {p.target:>9} {p.end:>9}"
            f" {p.messages:>6}"
        )


def _summary_text(s: ReplaySummary) -> str:
    return (
        f"re-read {s.reread} message(s); re-planned {s.replanned} operation(s); "
        f"{s.operations} operation(s) with a result: {s.already_applied} skipped as already applied, "
        f"{s.newly_applied} newly applied, {s.superseded} superseded (older than what is applied), "
        f"{s.dead_lettered} dead-lettered again, "
        f"{s.waiting} waiting (parked/held)"
    )


@click.command()
@click.option("--since", "since_text", help="rewind to this point in time: 2h, 30m, 1d or an ISO time")
@click.option(
    "--from-offsets",
    "offsets_text",
    help="rewind to given offsets: topic:partition=offset,… (instead of --since)",
)
@click.option(
    "--group",
    "group_choice",
    type=click.Choice(GROUP_CHOICES),
    default="both",
    show_default=True,
    help="both = planner and sink; directory-sink is the writeback's (vud.directory.operations)",
)
@click.option("--topics", default="", help="comma-separated topics to rewind (default: each group's own)")
@click.option("--dry-run", is_flag=True, help="print what would be read again and re-planned; change nothing")
@click.option("--no-wait", is_flag=True, help="reset the offsets and return; do not wait for the backlog")
@click.option("--timeout", default="1h", show_default=True, help="how long to wait for the backlog to drain")
@click.option("--json", "as_json", is_flag=True, help="machine-readable plan and summary on stdout")
def replay(
    since_text: str | None,
    offsets_text: str | None,
    group_choice: str,
    topics: str,
    dry_run: bool,
    no_wait: bool,
    timeout: str,
    as_json: bool,
) -> None:
    """Rewind the planner's, the sink's and/or the directory sink's consumer group and apply
    again what was missed.

    Nothing is applied twice: the planner plans the same operation ids again, the sink's
    ledger and the cloud's idempotency keys turn what was applied into "already applied", and
    so does the directory store's record of the operations it applied (writeback).
    Refuses while a worker of a replayed group is running (stop them first). The backlog
    drains only when the workers run again: start them after the reset.

    \b
    Examples:
      vudsync replay --since 2h --dry-run
      vudsync replay --since 2026-11-27T10:00            # planner and sink
      vudsync replay --since 2h --group directory-sink   # the writeback's store writes
    """
    from vudsync.ops.journal_index import SqliteJournalIndex
    from vudsync.ops.journal_sync import JournalIndexer, journal_path
    from vudsync.ops.kafka_admin import group_admin
    from vudsync.ops.replay_runner import ReplayRequest, ReplayRunner, dry_run_report

    if bool(since_text) == bool(offsets_text):
        raise ConfigurationError("give exactly one of --since and --from-offsets")
    settings = load_settings()
    now = datetime.now(UTC)
    since = parse_since(since_text, now) if since_text else None
    offsets = parse_offsets(offsets_text, topic_aliases(settings)) if offsets_text else None
    roles = roles_for(group_choice)
    chosen = tuple(resolve_topics(topics.split(","), settings)) if topics else ()
    wait_seconds = parse_duration(timeout).total_seconds()
    bootstrap = resolve_bootstrap(settings)

    def say(text: str) -> None:
        click.echo(text, err=as_json)

    with group_admin(bootstrap, security=settings.kafka_security()) as admin:
        runner = ReplayRunner(settings, bootstrap, admin)
        request = ReplayRequest(roles, chosen, since, offsets)
        members = runner.live_members(roles)
        if not dry_run:
            runner.refuse_if_live(roles)
        plan = runner.plan(request)
        where = f"since {since.isoformat(timespec='seconds')}" if since else "from the given offsets"
        say(
            f"Replay of {', '.join(f'the {r.value} group ({group_id(r, settings)})' for r in roles)} {where}:"
        )
        if not as_json:
            _table(plan)
        content = runner.read_content(plan)
        known: dict[str, set[str]] = {}
        if content.operation_ids:
            index = SqliteJournalIndex(journal_path(settings))
            indexer = JournalIndexer(settings, bootstrap, index)
            try:
                indexer.catch_up(admin, timeout=120)
            finally:
                indexer.close()
            known = index.outcomes_of(content.operation_ids)
            index.close()
        report = dry_run_report(plan, content, known, members)
        ops = report["operations"]
        say(
            f"  {plan.messages} message(s) to read again: {ops['count']} operation(s) "
            f"({ops['already_applied_per_journal']} already applied per the journal, "
            f"{ops['to_apply']} to apply); "
            f"{content.events} directory event(s) of {len(content.entities)} entities to plan again"
        )
        if content.unreadable:
            say(f"  {content.unreadable} record(s) do not decode: they go to the dead-letter topics again")
        if dry_run:
            for m in report["live_members"].items():
                say(f"  note: the {m[0]} group has live members now ({'; '.join(m[1])}): replay would refuse")
            if not as_json:
                for e in report["replanned_entities"][:50]:
                    click.echo(f"  re-plan {e['entity']}:{e['entity_id']} (newest version {e['version']})")
                if len(report["replanned_entities"]) > 50:
                    click.echo(f"  … and {len(report['replanned_entities']) - 50} more")
            else:
                click.echo(json.dumps({"dry_run": True, **report}, indent=2, default=str))
            return
        if not plan.partitions or not any(p.moves for p in plan.partitions):
            say("Nothing to rewind: every group is already at (or before) that point.")
            if as_json:
                click.echo(json.dumps({"dry_run": False, **report, "summary": None}, indent=2, default=str))
            return
        mark = runner.reset(plan)
        start_cmds = " and ".join(f"`vudsync run {r.value}`" for r in roles)
        say(
            "Offsets reset. The backlog drains only when the workers run again: "
            f"start them now ({start_cmds})."
        )
        if no_wait:
            reset_at = datetime.fromtimestamp(mark.at, UTC).isoformat(timespec="seconds")
            say(
                "Not waiting (--no-wait): follow the lag with `vudsync status` and the outcomes with "
                f"`vudsync journal --since {reset_at}`"
            )
            if as_json:
                click.echo(json.dumps({"dry_run": False, **report, "summary": None}, indent=2, default=str))
            return
        finished = _wait(runner, plan, wait_seconds, as_json)
        summary = runner.summary(plan, mark, content)
        if not finished:
            say(f"The backlog did not drain within {timeout}; the workers keep going. Partial summary:")
        say("Summary: " + _summary_text(summary))
        if as_json:
            payload: dict[str, Any] = {
                "dry_run": False,
                **report,
                "finished": finished,
                "summary": summary.as_dict(),
            }
            click.echo(json.dumps(payload, indent=2, default=str))
        if not finished:
            raise SystemExit(1)


class _Bar:
    """Feeds the runner's progress into a click progress bar (stderr with --json)."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.shown = 0

    def __call__(self, done: int, total: int, phase: str) -> None:
        if phase != "replayed ranges":
            self.bar.label = phase
            return
        step = min(done, self.bar.length) - self.shown
        if step > 0:
            self.bar.update(step)
            self.shown += step


def _wait(runner: ReplayRunner, plan: ReplayPlan, timeout: float, to_stderr: bool) -> bool:
    stream = click.get_text_stream("stderr") if to_stderr else None
    with click.progressbar(
        length=max(plan.messages, 1), label="draining the replayed backlog", file=stream
    ) as bar:
        return runner.wait(plan, timeout=timeout, on_progress=_Bar(bar))
