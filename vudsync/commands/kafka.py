"""``vudsync kafka …``: fetch, start, stop and inspect the local single-node Kafka broker.

Each command builds a :class:`~devtools.broker.LocalKafkaBroker` from ``Settings`` (home,
``kafka_version``, ``kafka_port``, ``kafka_heap``); the jar cache is ``$VUDSYNC_KAFKA_CACHE``
or ``~/.cache/vudsync/kafka``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from devtools.broker import BrokerStatus, LocalKafkaBroker
from kernel.errors import ConfigurationError
from kernel.settings import load_settings

_json_option = click.option("--json", "as_json", is_flag=True, help="print one JSON object")


def _broker() -> LocalKafkaBroker:
    return LocalKafkaBroker.from_settings(load_settings())


def _emit(as_json: bool, payload: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(payload, sort_keys=True) if as_json else text)


def _describe(status: BrokerStatus) -> str:
    if not status.running:
        return f"Kafka {status.version}: not running (home {status.home})"
    state = "ready" if status.ready else "starting"
    return (
        f"Kafka {status.version}: {state}, pid {status.pid}, bootstrap {status.bootstrap}\n"
        f"log: {status.log_path}"
    )


@click.group()
def kafka() -> None:
    """The local Apache Kafka broker (KRaft, single node) that vudsync runs for the demo and tests.

    Jars come from Maven Central (needs `mvn` and Java 17+); the broker's files live in
    <home>/kafka. Settings: VUDSYNC_HOME, VUDSYNC_KAFKA_VERSION, VUDSYNC_KAFKA_PORT
    (0 = any free port), VUDSYNC_KAFKA_HEAP; the jar cache is VUDSYNC_KAFKA_CACHE
    (default ~/.cache/vudsync/kafka).
    """


@kafka.command()
@click.option("--force", is_flag=True, help="fetch again even when the cache is complete")
@_json_option
def fetch(force: bool, as_json: bool) -> None:
    """Download the broker's jars into the shared cache (skipped when already there)."""
    broker = _broker()
    started = time.monotonic()
    cached = broker.is_fetched() and not force
    libs = broker.fetch(force=force)
    seconds = round(time.monotonic() - started, 2)
    _emit(
        as_json,
        {"version": broker.version, "libs": str(libs), "cached": cached, "seconds": seconds},
        f"Kafka {broker.version} jars {'already in' if cached else 'fetched into'} {libs}"
        + ("" if cached else f" ({seconds} s)"),
    )


_brokers_option = click.option(
    "--brokers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 9),
    help="nodes (each broker and controller); more than 1 = a cluster in <home>/kafka-cluster",
)


@kafka.command()
@click.option("--timeout", default=90.0, show_default=True, help="seconds to wait for the broker")
@_brokers_option
@click.option("--secure", is_flag=True, help="cluster only: SASL_SSL, SCRAM users per component, ACLs")
@_json_option
def up(timeout: float, brokers: int, secure: bool, as_json: bool) -> None:
    """Start the broker in the background (or find it running) and print its bootstrap address.

    Idempotent: a broker already running for this home is reused, never doubled. With
    `--brokers 3 [--secure]`, a local cluster; secured, each component's credentials are in
    <home>/kafka-cluster/credentials.json and the CA in <home>/kafka-cluster/tls/ca.pem.
    """
    settings = load_settings()
    if settings.kafka_bootstrap:
        raise ConfigurationError(
            f"VUDSYNC_KAFKA_BOOTSTRAP is set ({settings.kafka_bootstrap}): vudsync uses that broker",
            hint="unset VUDSYNC_KAFKA_BOOTSTRAP to run the local broker",
        )
    if brokers > 1 or secure:
        from devtools.broker.cluster import LocalKafkaCluster

        if brokers == 1:
            raise ConfigurationError(
                "--secure needs a cluster", hint="`vudsync kafka up --brokers 3 --secure`"
            )
        cluster = LocalKafkaCluster(settings, brokers=brokers, secure=secure)  # 320m heaps
        state = cluster.up(timeout=max(timeout, 180.0))
        _emit(as_json, state.as_dict(), str(state.bootstrap))
        return
    status = LocalKafkaBroker.from_settings(settings).up(timeout=timeout)
    _emit(as_json, status.as_dict(), str(status.bootstrap))


@kafka.command()
@click.option("--grace", default=20.0, show_default=True, help="seconds between SIGTERM and SIGKILL")
@_brokers_option
@_json_option
def down(grace: float, brokers: int, as_json: bool) -> None:
    """Stop this home's broker (its data stays in <home>/kafka/data), or its cluster (--brokers N)."""
    if brokers > 1:
        from devtools.broker.cluster import LocalKafkaCluster

        stopped = LocalKafkaCluster(load_settings(), brokers=brokers).down(grace=grace)
    else:
        stopped = _broker().down(grace=grace)
    _emit(as_json, {"stopped": stopped}, "stopped" if stopped else "not running")


@kafka.command()
@_json_option
def status(as_json: bool) -> None:
    """Show whether the broker runs; exit code 1 when it does not."""
    current = _broker().status()
    _emit(as_json, current.as_dict(), _describe(current))
    if not current.running:
        sys.exit(1)
