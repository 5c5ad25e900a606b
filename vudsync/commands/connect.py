"""``vudsync connect``: enable the integration ("Connect to the cloud").

1. The cloud credentials (``VUDSYNC_CLOUD_CLIENT_ID`` / ``_SECRET``) must be a Customer
   administrator's: ``GET /v1/me`` says so, or connect refuses, clearly, and changes nothing.
2. It reads what the planner must know from the cloud — the registered application instances
   (every application: registered or not), the service catalogues, the companies and users
   already linked to on-premise ids — and the on-premise application instances from the
   directory store (license keys as their keyed fingerprint only), and publishes them as facts
   on ``vud.planner.facts``, each to every partition.
3. When the directory store was never snapshotted, it takes the producer's snapshot (the
   producer, started later, streams from there).
4. Last, once everything before has been acknowledged, it publishes the *connect* fact
   (``connect:installation``) to every partition: the planner sends nothing to the cloud
   before it has it (:mod:`processors.connection`), and a partition that has it has every
   other fact of this run (one partition's records stay in order).

Nothing secret is printed or published: neither the client secret nor the token nor a key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
import httpx
from pydantic import SecretStr

from kernel.auth import ClientCredentials, cloud_token_url
from kernel.errors import AuthenticationFailed, ConfigurationError, RetryableError, VudsyncError
from kernel.settings import Settings, load_settings
from processors.needs import CONNECT_SUBJECT
from schemas.directory import ApplicationInstanceState, ApplicationType, EntityType
from schemas.results import FactKind, PlannerFact
from schemas.topics import PLANNER_FACTS
from vudsync.ops.cloud_reader import all_pages

KINDS = ("roles", "layout_groups", "modules")


class ConnectRefused(VudsyncError):
    """The cloud credentials may not enable the integration."""


@dataclass
class CloudReadout:
    """What connect learned from the cloud."""

    customer: str
    client_id: str
    registry: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # app -> instance | None
    catalogue: list[str] = field(default_factory=list)  # <app>:<kind>:<name>
    companies: dict[str, str] = field(default_factory=dict)  # external id -> cloud id
    users: dict[str, str] = field(default_factory=dict)


# -- the cloud ------------------------------------------------------------------------------


def cloud_client(settings: Settings, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    auth = ClientCredentials(
        cloud_token_url(settings.cloud_url),
        settings.cloud_client_id,
        SecretStr(settings.require_secret("cloud_client_secret")),
        token_error=lambda r: RetryableError(f"the cloud's token endpoint answered {r.status_code}"),
    )
    return httpx.Client(base_url=settings.cloud_url, timeout=30.0, transport=transport, auth=auth)


def cloud_get(client: httpx.Client, path: str, **params: Any) -> Any:
    try:
        response = client.get(path, params=params or None)
    except httpx.HTTPError as exc:
        raise RetryableError(
            f"the cloud at {client.base_url} does not answer ({type(exc).__name__})",
            hint="check VUDSYNC_CLOUD_URL",
        ) from None
    if response.status_code >= 300:
        raise RetryableError(f"GET {path}: {response.status_code}")
    return response.json()


def require_customer_admin(client: httpx.Client, settings: Settings, action: str = "connect") -> Any:
    """``GET /v1/me`` (the first request fetches the token): the caller's identity, if it is a
    Customer administrator's; else :class:`ConnectRefused` saying what to use instead."""
    try:
        me = cloud_get(client, "/v1/me")
    except AuthenticationFailed:
        raise ConnectRefused(
            f"refused: the cloud does not accept the credentials of client {settings.cloud_client_id!r}",
            hint=f"{action} with the client id and secret of a Customer administrator "
            "(VUDSYNC_CLOUD_CLIENT_ID / VUDSYNC_CLOUD_CLIENT_SECRET)",
        ) from None
    if not me.get("is_customer_admin"):
        raise ConnectRefused(
            f"refused: client {me.get('client_id')!r} is not a Customer administrator of "
            f"{me.get('customer_name')!r}; only a Customer administrator may {action}",
            hint="use the credentials of a Customer administrator "
            "(VUDSYNC_CLOUD_CLIENT_ID / VUDSYNC_CLOUD_CLIENT_SECRET)",
        )
    return me


def read_registry(client: httpx.Client) -> dict[str, dict[str, Any] | None]:
    """The cloud's registered instance of every application (``None``: none registered)."""
    registered = {i["service"]: i for i in cloud_get(client, "/v1/application-instances")["items"]}
    return {app.value: registered.get(app.value) for app in ApplicationType}


def read_cloud(settings: Settings, transport: httpx.BaseTransport | None = None) -> CloudReadout:
    """Check the caller is a Customer administrator; read registry, catalogue and links."""
    with cloud_client(settings, transport) as client:
        me = require_customer_admin(client, settings)
        readout = CloudReadout(customer=str(me.get("customer_name")), client_id=str(me.get("client_id")))
        readout.registry = read_registry(client)
        for service in cloud_get(client, "/v1/services")["items"]:
            for kind in KINDS:
                readout.catalogue += [
                    f"{service['service']}:{kind}:{e['name']}" for e in service.get(kind, ())
                ]
        for collection, out in (("companies", readout.companies), ("users", readout.users)):
            items = all_pages(lambda path, params: cloud_get(client, path, **params), f"/v1/{collection}")
            out.update({i["external_id"]: i["id"] for i in items if i.get("external_id")})
    return readout


# -- the directory store ------------------------------------------------------------------


def on_premise_instances(settings: Settings) -> tuple[list[PlannerFact], Any]:
    """The on-premise application instances (fingerprints only), as of the store's position."""
    from producers.service import open_change_log
    from vudsync.ops.directory_reader import snapshot_events

    change_log = open_change_log(settings.resolved_store_url())
    position = change_log.position()
    now = datetime.now(UTC)
    facts: list[PlannerFact] = []
    key = settings.require_secret("fingerprint_key").encode()
    for _id, event in snapshot_events(
        change_log, EntityType.APPLICATION_INSTANCE, key, position=position, now=now, batch_size=100
    ):
        if event is None:  # capture dead-letters it (e.g. a second instance of a type)
            continue
        state = event.state
        assert isinstance(state, ApplicationInstanceState)
        facts.append(
            _fact(
                FactKind.INSTANCE,
                state.application.value,
                now,
                uri=state.uri,
                license_fingerprint=state.license_fingerprint,
                version=position,
            )
        )
    return facts, change_log


def _fact(kind: FactKind, subject: str, observed_at: datetime, **known: Any) -> PlannerFact:
    """A fact as connect learned it (``source`` connect), at ``observed_at``."""
    return PlannerFact(kind=kind, subject=subject, observed_at=observed_at, source="connect", **known)


def registry_fact(application: str, instance: dict[str, Any] | None, observed_at: datetime) -> PlannerFact:
    """What the cloud's registry says of ``application``: its registered instance, or none."""
    return _fact(
        FactKind.REGISTRY,
        application,
        observed_at,
        present=instance is not None,
        uri=instance["uri"] if instance else None,
        license_fingerprint=instance["license_fingerprint"] if instance else None,
    )


def cloud_facts(readout: CloudReadout, observed_at: datetime) -> Iterator[PlannerFact]:
    """The facts of a cloud readout (pure)."""
    for app, instance in readout.registry.items():
        yield registry_fact(app, instance, observed_at)
    for entry in readout.catalogue:
        yield _fact(FactKind.CATALOGUE, entry, observed_at)
    for external, cloud_id in sorted(readout.companies.items()):
        yield _fact(FactKind.COMPANY, external, observed_at, cloud_id=cloud_id)
    for external, cloud_id in sorted(readout.users.items()):
        yield _fact(FactKind.USER, external, observed_at, cloud_id=cloud_id)


def connected_fact(observed_at: datetime) -> PlannerFact:
    """``vudsync connect`` has succeeded for this installation (published last)."""
    return _fact(FactKind.CONNECT, CONNECT_SUBJECT, observed_at, present=True)


def publish_facts(settings: Settings, bootstrap: str, facts: Iterable[PlannerFact]) -> int:
    """Every fact to every partition (the planner assumes nothing about which partition holds an
    entity). Returns how many records were acknowledged (acks=all); raises
    :class:`RetryableError` if the broker did not take them all."""
    from kernel.publishing.kafka_python import KafkaRecordPublisher

    topic = settings.topic(PLANNER_FACTS.name)
    security = settings.kafka_security()
    publisher = KafkaRecordPublisher(bootstrap, client_id="vudsync-connect", security=security)
    try:
        for fact in facts:
            value = fact.model_dump_json().encode()
            for p in range(settings.topic_partitions):
                publisher.publish(topic, fact.key, value, partition=p)
        return publisher.flush(timeout=60)
    finally:
        publisher.close(timeout=10)


@dataclass
class ConnectReport:
    customer: str
    client_id: str
    registry: dict[str, str]
    catalogue: int
    companies: int
    users: int
    instances: int
    facts: int
    snapshot: str


def run_connect(settings: Settings, bootstrap: str, *, snapshot: bool = True) -> ConnectReport:
    """Check, read, publish, snapshot, say connected — in that order; raises
    :class:`ConnectRefused` (and then the planner still sends nothing)."""
    from processors.topics import ensure_planner_topics
    from vudsync.topics import ensure_catalogue

    for secret in ("cloud_client_secret", "fingerprint_key"):  # both, before any effect
        settings.require_secret(secret)
    readout = read_cloud(settings)
    ensure_catalogue(settings, bootstrap)
    ensure_planner_topics(settings, bootstrap)
    instances, change_log = on_premise_instances(settings)
    try:
        facts = [*instances, *cloud_facts(readout, datetime.now(UTC))]
        published = publish_facts(settings, bootstrap, facts)
        snapshotted = "not needed (the store was snapshotted before)"
        if change_log.load_checkpoint("default") is None:
            if snapshot:
                from producers.service import build_capture

                capture = build_capture(settings, bootstrap)
                try:
                    position = capture.snapshot()
                finally:
                    capture.publisher.close()
                    capture.log.close()
                snapshotted = f"taken at change-log position {position}"
            else:
                snapshotted = "skipped (--no-snapshot); the producer takes it when it starts"
    finally:
        change_log.close()
    published += publish_facts(settings, bootstrap, [connected_fact(datetime.now(UTC))])
    return ConnectReport(
        customer=readout.customer,
        client_id=readout.client_id,
        registry={app: ("registered" if i else "none registered") for app, i in readout.registry.items()},
        catalogue=len(readout.catalogue),
        companies=len(readout.companies),
        users=len(readout.users),
        instances=len(instances),
        facts=published,
        snapshot=snapshotted,
    )


@click.command()
@click.option(
    "--snapshot/--no-snapshot", default=True, show_default=True, help="snapshot a never-snapshotted store"
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def connect(snapshot: bool, as_json: bool) -> None:
    """Enable the integration with the credentials of a Customer administrator.

    Tells the planner what the cloud holds (registered application instances, catalogues,
    linked companies and users) and snapshots the directory store if it never was.
    """
    from vudsync.bootstrap import resolve_bootstrap

    settings = load_settings()
    if not settings.cloud_url:
        raise ConfigurationError("no cloud URL", hint="set VUDSYNC_CLOUD_URL")
    report = run_connect(settings, resolve_bootstrap(settings), snapshot=snapshot)
    if as_json:
        click.echo(json.dumps(report.__dict__, indent=2))
        return
    click.echo(f"connected to {report.customer} as {report.client_id} (Customer administrator)")
    for app, state in report.registry.items():
        click.echo(f"  {app:<16} {state}")
    click.echo(
        f"  catalogue entries {report.catalogue}, linked companies {report.companies}, linked users "
        f"{report.users}, on-premise instances {report.instances}"
    )
    click.echo(f"  {report.facts} facts published; snapshot: {report.snapshot}")
