"""``vudsync instances``: each application's on-premise instance beside the cloud's registration.

The integration's rule (docs/domain.md): operations of an application go to the cloud only
while the on-premise instance has the URI and license key the cloud has registered for it.
After a license change on premise they differ, and the planner holds that application's
assignments. ``vudsync instances`` shows the verdict the planner reaches, with the differing
field named (never a key: license keys are compared by their keyed fingerprint);
``vudsync instances register <application>`` replaces the cloud's registration with the
on-premise instance — with a Customer administrator's credentials, after showing what changes —
and tells the planner, which then releases what it held.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import click

from kernel.errors import ConfigurationError, PermanentError
from kernel.settings import Settings, load_settings
from processors.model import InstanceSeen, Registry, VerdictStatus
from processors.planner import instance_verdict
from schemas.directory import ApplicationType
from schemas.results import PlannerFact
from vudsync.commands.connect import (
    cloud_client,
    on_premise_instances,
    publish_facts,
    read_registry,
    registry_fact,
    require_customer_admin,
)

_SAYS = {
    VerdictStatus.OK: "ok",
    VerdictStatus.REGISTER: "not registered: the planner registers it",
    VerdictStatus.UNVERIFIED: "the cloud's registration is not known",
    VerdictStatus.MISMATCH: "mismatch",
}


@dataclass(frozen=True)
class InstanceRow:
    """One application: where it runs on premise, what the cloud has registered, the verdict."""

    application: str
    on_premise_uri: str | None
    cloud_uri: str | None
    verdict: str  # a VerdictStatus value
    differing: tuple[str, ...]  # field names ("uri", "license key"), never values
    blocked: bool

    def says(self) -> str:
        text = _SAYS[VerdictStatus(self.verdict)]
        return f"{text}: {', '.join(self.differing)} differ" if self.differing else text


def assess(
    on_premise: dict[str, PlannerFact], registry: dict[str, dict[str, Any] | None]
) -> list[InstanceRow]:
    """The planner's verdict for every application (pure: the same function the planner uses)."""
    rows: list[InstanceRow] = []
    for app in ApplicationType:
        fact = on_premise.get(app.value)
        cloud = registry.get(app.value)
        seen = (
            InstanceSeen(fact.uri or "", fact.license_fingerprint or "", fact.version)
            if fact is not None
            else None
        )
        registered = (
            Registry(True, cloud["uri"], cloud["license_fingerprint"])
            if cloud is not None
            else Registry(False)
        )
        verdict = instance_verdict(seen, registered)
        rows.append(
            InstanceRow(
                application=app.value,
                on_premise_uri=fact.uri if fact is not None else None,
                cloud_uri=cloud["uri"] if cloud is not None else None,
                verdict=verdict.status.value,
                differing=verdict.differing,
                blocked=verdict.blocked,
            )
        )
    return rows


def _read(settings: Settings) -> tuple[dict[str, PlannerFact], dict[str, dict[str, Any] | None]]:
    if not settings.cloud_url:
        raise ConfigurationError("no cloud URL", hint="set VUDSYNC_CLOUD_URL")
    facts, change_log = on_premise_instances(settings)
    change_log.close()
    with cloud_client(settings) as client:
        registry = read_registry(client)
    return {f.subject: f for f in facts}, registry


def _table(rows: list[InstanceRow]) -> None:
    click.echo(f"{'application':<16} {'on premise':<32} {'cloud':<32} verdict")
    for row in rows:
        click.echo(
            f"{row.application:<16} {row.on_premise_uri or '(none)':<32} "
            f"{row.cloud_uri or '(none registered)':<32} {row.says()}"
        )


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def instances(ctx: click.Context, as_json: bool) -> None:
    """Each application's on-premise instance beside the cloud's registration, and the verdict.

    Exit status 1 when an application's assignments are held (a mismatch after a license
    change, or a registration not known yet); `vudsync instances register <application>`
    resolves a mismatch. License keys are never shown, only whether they differ.

    \b
    Example:
        vudsync instances
        vudsync instances --json
    """
    if ctx.invoked_subcommand is not None:
        return
    rows = assess(*_read(load_settings()))
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        _table(rows)
        if any(r.verdict == VerdictStatus.MISMATCH for r in rows):
            click.echo(
                "\nhint: after a license change on premise, run `vudsync instances register <application>`"
            )
    raise SystemExit(1 if any(r.blocked for r in rows) else 0)


@instances.command()
@click.argument("application", type=click.Choice([a.value for a in ApplicationType]))
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (requires --yes)")
def register(application: str, yes: bool, as_json: bool) -> None:
    """Register the on-premise instance of APPLICATION in the cloud (its URI and license key).

    The procedure after a license change on premise: the cloud's registration must carry the
    same URI and license key, or the planner holds the application's assignments. Needs a
    Customer administrator's credentials (VUDSYNC_CLOUD_CLIENT_ID / _SECRET). Shows what
    changes and asks first; then tells the planner, which releases what it held.

    \b
    Example:
        vudsync instances register business
    """
    if as_json and not yes:
        raise click.UsageError("--json cannot ask: add --yes")
    settings = load_settings()
    on_premise, registry = _read(settings)
    (row,) = (r for r in assess(on_premise, registry) if r.application == application)
    fact = on_premise.get(application)
    if fact is None:
        raise PermanentError(
            f"the directory store has no {application} instance to register",
            hint="add the application instance on premise first (VUD)",
        )
    if row.verdict == VerdictStatus.OK:
        _done(
            {"application": application, "changed": False, "says": "already registered as on premise"},
            as_json,
        )
        return
    changes = ", ".join(row.differing) if row.differing else "a new registration"
    with cloud_client(settings) as client:
        require_customer_admin(client, settings, action="register an application instance")
        if not yes:
            click.echo(
                f"{application}: the cloud's registration becomes the on-premise instance "
                f"({row.on_premise_uri}); changes: {changes}"
            )
            click.confirm("register it in the cloud?", abort=True)
        response = client.put(
            f"/v1/application-instances/{application}",
            json={"uri": fact.uri, "license_fingerprint": fact.license_fingerprint},
        )
        if response.status_code >= 300:
            raise PermanentError(f"PUT /v1/application-instances/{application}: {response.status_code}")
        registered = read_registry(client).get(application)
    from vudsync.bootstrap import resolve_bootstrap

    told = publish_facts(
        settings,
        resolve_bootstrap(settings),
        [registry_fact(application, registered, datetime.now(UTC))],  # what connect would read now
    )
    _done(
        {"application": application, "changed": True, "says": f"registered ({changes})", "facts": told},
        as_json,
    )


def _done(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"{report['application']}: {report['says']}")
