"""``vudsync deletes``: the operator's side of the accidental-delete protection.

When more deletions than the threshold arrive within the window, the planner holds them (each
held operation has a ``held`` result on ``vud.cloud.results``). ``approve`` lets every held
deletion go; ``reject`` drops them (each gets a ``rejected`` result; the cloud keeps the
objects). The decision travels as a ``DeletionsDecided`` message to partition 0 of
``vud.planner.control``, where the planner's gate lives, whichever worker owns it.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime

import click

from kernel.errors import RetryableError
from kernel.settings import Settings, load_settings
from schemas.results import OperationResult, ResultOutcome
from schemas.topics import PLANNER_CONTROL, RESULTS


def send_decision(settings: Settings, bootstrap: str, *, approve: bool, operator: str) -> None:
    """Publish the decision to the gate (partition 0) and wait for the broker's ack; raises
    :class:`RetryableError` if it did not take it."""
    from kernel.publishing.kafka_python import KafkaRecordPublisher
    from processors.control import GATE_PARTITION, DeletionsDecided
    from processors.topics import ensure_planner_topics

    ensure_planner_topics(settings, bootstrap)
    decision = DeletionsDecided(approve=approve, operator=operator, decided_at=datetime.now(UTC))
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


SETTLED = frozenset(
    {
        ResultOutcome.APPLIED,
        ResultOutcome.ALREADY_APPLIED,
        ResultOutcome.DEAD_LETTERED,
        ResultOutcome.REJECTED,
    }
)


def held_now(settings: Settings, bootstrap: str, timeout: float = 30.0) -> list[OperationResult]:
    """Held operations that no result has settled since (applied, rejected, …), from
    ``vud.cloud.results``. Order-free: the planner's and the sink's results of one operation
    may sit on different partitions (their clients need not hash keys alike)."""
    from kafka import KafkaConsumer, TopicPartition

    topic = settings.topic(RESULTS.name)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        **settings.kafka_security().for_kafka_python(),
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        held: dict[str, OperationResult] = {}
        settled: set[str] = set()
        deadline = datetime.now(UTC).timestamp() + timeout
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if datetime.now(UTC).timestamp() > deadline:
                raise RetryableError(f"{topic}: not read to its end within {timeout:.0f}s")
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    try:
                        result = OperationResult.model_validate_json(record.value)
                    except ValueError:
                        continue
                    if result.outcome is ResultOutcome.HELD:
                        held[result.operation_id] = result
                    elif result.outcome in SETTLED:
                        settled.add(result.operation_id)
        return [r for op_id, r in held.items() if op_id not in settled]
    finally:
        consumer.close()


@click.group()
def deletes() -> None:
    """Deletions held by the accidental-delete protection: list, approve or reject them."""


def _decide(approve: bool, operator: str | None, yes: bool) -> None:
    from vudsync.bootstrap import resolve_bootstrap

    settings = load_settings()
    verb = "approve" if approve else "reject"
    if not yes:
        click.confirm(f"{verb} every deletion held now?", abort=True)
    send_decision(
        settings, resolve_bootstrap(settings), approve=approve, operator=operator or getpass.getuser()
    )
    click.echo(
        f"{verb}d: the planner releases what it holds" if approve else "rejected: held deletions dropped"
    )


@deletes.command()
@click.option("--operator", default=None, help="who decides (default: the login name)")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def approve(operator: str | None, yes: bool) -> None:
    """Let every held deletion go to the cloud."""
    _decide(True, operator, yes)


@deletes.command()
@click.option("--operator", default=None, help="who decides (default: the login name)")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def reject(operator: str | None, yes: bool) -> None:
    """Drop every held deletion (the cloud keeps those objects)."""
    _decide(False, operator, yes)


@deletes.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_held(as_json: bool) -> None:
    """The operations held now."""
    from vudsync.bootstrap import resolve_bootstrap

    settings = load_settings()
    held = held_now(settings, resolve_bootstrap(settings))
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in held], indent=2))
        return
    for r in held:
        click.echo(f"{r.kind:<20} {r.entity.value}:{r.entity_id:<24} v{r.source_version}")
    click.echo(f"{len(held)} held")
