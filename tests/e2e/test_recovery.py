"""Recovery after a failed integration, on real parts, as an operator does it.

The cloud fails every request for a while, and the sink (configured to give up at once)
dead-letters what was planned meanwhile. The cloud recovers. ``vudsync dlq retry``
re-drives one dead letter; ``vudsync replay --since`` (refused while a worker runs, naming it)
rewinds the planner and the sink to before the outage; ``vudsync verify`` then finds no
drift, and the cloud's own audit shows no idempotency key with two effects.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result

from devtools.broker.cluster import KafkaTarget
from devtools.processes import component_env, wait_until
from devtools.seed.writer import open_writer
from kernel.settings import Settings
from processors.app import app_id
from sinks.service import sink_group
from tests.factories import store_users
from tests.fixtures.cloud import CloudReader
from tests.pipeline import alive_or_fail, components
from vudsync.cli import _register, cli
from vudsync.ops.kafka_admin import group_admin
from vudsync.topics import ensure_catalogue

# The sink waits an outage out behind its open circuit by default (nothing dead-letters while
# the cloud is down); giving up at the first failure makes what is planned during the outage
# dead-letter, the failed integration this test recovers from.
SINK = {"VUDSYNC_SINK_MAX_ATTEMPTS": "1", "VUDSYNC_SINK_RETRY_TIMEOUT": "0"}


def run(settings: Settings, bootstrap: str, *args: str, **env: str) -> Result:
    _register()
    return CliRunner().invoke(
        cli, list(args), env=component_env(settings, bootstrap, **env), catch_exceptions=False
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _verify_clean(settings: Settings, bootstrap: str) -> bool:
    result = run(settings, bootstrap, "verify", "--json")
    return result.exit_code == 0 and bool(json.loads(result.stdout)["report"]["clean"])


def _wait_clean(settings: Settings, bootstrap: str, procs: dict[str, Any], what: str) -> None:
    """Until verify finds no drift; on time-out, fail with the drift, the journal and the logs."""
    try:
        wait_until(
            lambda: alive_or_fail(procs) and _verify_clean(settings, bootstrap), 240, interval=2, what=what
        )
    except TimeoutError as exc:
        drift = run(settings, bootstrap, "verify").output  # with its error, if it failed
        journal = run(settings, bootstrap, "journal", "--limit", "30").stdout
        journal += run(settings, bootstrap, "journal", "--outcome", "parked,blocked", "--json").stdout
        logs = "\n".join(f"--- {n}\n{p.tail(25)}" for n, p in procs.items() if n in ("planner", "sink"))
        raise AssertionError(f"{exc}\n{drift}\n{journal}\n{logs}") from None


def _unhandled(settings: Settings, bootstrap: str) -> list[dict[str, Any]]:
    listed = run(settings, bootstrap, "dlq", "list", "--json", "--queue", "operations")
    return list(json.loads(listed.stdout)["dead_letters"])


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kafka_target", ["plaintext", "secured"], indirect=True)
def test_outage_then_dlq_retry_and_replay_bring_the_cloud_to_the_directory_state(
    pipeline_settings: Settings, kafka_target: KafkaTarget, cloud: CloudReader
) -> None:
    """On the single PLAINTEXT broker and on the secured three-node cluster (each component its
    own principal; every ``vudsync`` command, the replay included, as the ops principal)."""
    s = pipeline_settings
    kafka_bootstrap = kafka_target.bootstrap
    principals = kafka_target.security
    ensure_catalogue(s, kafka_bootstrap)
    writer = open_writer(s.resolved_store_url())
    writer.upsert_catalogue("roles", [("business", "Regnskap", "Regnskap og lønn")])
    writer.upsert_companies([{"id": "c1", "name": "Fjord AS", "organisation_number": "923 609 016"}])
    writer.upsert_users(store_users(1, 2, 3))
    writer.grant([("u1", "c1", "business", "role", "Regnskap")])
    writer.add_application_instance("business", "https://vb.fjord.local", "VB-1")
    ports = {"planner": _free_port(), "sink": _free_port()}
    scraped = ",".join(f"{name}=http://127.0.0.1:{port}/metrics" for name, port in ports.items())

    with ExitStack() as stack:
        # as an installation starts: workers, then `vudsync connect`, then the producer
        procs = stack.enter_context(
            components(
                s, kafka_bootstrap, "planner", "sink", metrics_ports=ports, security=principals, **SINK
            )
        )
        with group_admin(kafka_bootstrap, security=s.kafka_security()) as admin:
            wait_until(lambda: alive_or_fail(procs) and admin.members(app_id(s)), 180, what="a planner")
        connected = run(s, kafka_bootstrap, "connect")
        assert connected.exit_code == 0, connected.output
        procs.update(stack.enter_context(components(s, kafka_bootstrap, "producer", security=principals)))
        _wait_clean(s, kafka_bootstrap, procs, "the directory in the cloud")

        # -- the outage: every cloud request fails; what is planned meanwhile dead-letters
        outage = datetime.now(UTC) - timedelta(seconds=2)
        cloud.faults(error_rate=1.0)
        writer.update_user("u2", first_name="Kari Anne")
        writer.update_user("u3", last_name="Olsen")
        with writer.transaction():
            writer.upsert_user(
                id="u4", username="ny", email="ny@fjord.no", first_name="Ny", last_name="Bruker"
            )
            writer.grant([("u4", "c1", "business", "role", "Regnskap")])
        wait_until(
            lambda: alive_or_fail(procs) and len(_unhandled(s, kafka_bootstrap)) >= 3,
            180,
            interval=1,
            what="the outage's operations dead-lettered",
        )
        status = json.loads(
            run(s, kafka_bootstrap, "status", "--json", VUDSYNC_STATUS_METRICS=scraped).stdout
        )
        assert not status["ok"] and status["dlq"][s.topic("vud.cloud.operations.dlq")] >= 3
        assert {c["name"]: c["state"] for c in status["components"]}["sink"] == "up"
        assert status["circuit"] in ("open", "closed")  # known: read from the sink's metrics

        # -- the cloud recovers; retry one dead letter through the normal path
        cloud.faults()
        dead = _unhandled(s, kafka_bootstrap)
        u2 = next(d for d in dead if "user:u2" in d["subject"])
        retried = run(s, kafka_bootstrap, "dlq", "retry", u2["ref"])
        assert retried.exit_code == 0 and "1 re-driven" in retried.stdout
        wait_until(
            lambda: alive_or_fail(procs) and cloud.user("u2")["first_name"] == "Kari Anne",
            120,
            what="the retried dead letter applied",
        )

        # -- replay refuses while a worker of the group runs, and names it
        refused = run(s, kafka_bootstrap, "replay", "--since", outage.isoformat(), "--group", "sink")
        assert refused.exit_code == 2
        assert "vudsync-sink-worker-1 on" in refused.output, refused.output
        refused = run(s, kafka_bootstrap, "replay", "--since", outage.isoformat(), "--group", "both")
        assert (
            refused.exit_code == 2 and "planner group" in refused.output and "live member" in refused.output
        )

        # -- stop the workers, replay both groups since before the outage, start them again
        procs["planner"].stop()
        procs["sink"].stop()
        with group_admin(kafka_bootstrap, security=s.kafka_security()) as admin:
            wait_until(
                lambda: not admin.members(app_id(s)) and not admin.members(sink_group(s)),
                90,
                what="the groups empty",
            )
        dry = run(s, kafka_bootstrap, "replay", "--since", outage.isoformat(), "--dry-run", "--json")
        plan = json.loads(dry.stdout)
        assert plan["operations"]["count"] >= 3  # the dead-lettered upserts (the re-driven copy has its id)
        assert {e["entity_id"] for e in plan["replanned_entities"]} >= {"u2", "u3", "u4"}

        replay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vudsync",
                "replay",
                "--since",
                outage.isoformat(),
                "--timeout",
                "5m",
                "--json",
            ],
            env={**component_env(s, kafka_bootstrap)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        said: list[str] = []
        reader = threading.Thread(target=lambda: said.extend(iter(replay.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
        reader.start()
        try:
            wait_until(lambda: any("Offsets reset" in line for line in said), 120, what="the offsets reset")
            assert any("drains only when the workers run again" in line for line in said)
            with components(s, kafka_bootstrap, "planner", "sink", security=principals, **SINK) as again:
                stdout, _ = replay.communicate(timeout=360)
                alive_or_fail(again)
                if replay.returncode != 0:
                    lag = json.loads(run(s, kafka_bootstrap, "status", "--json").stdout)["lag"]
                    raise AssertionError(
                        "".join(said[-12:])
                        + json.dumps(lag, indent=1)
                        + "\n".join(f"--- {n}\n{p.tail(40)}" for n, p in again.items())
                    )
                # done means drained: what the replay produced (results, facts, operations) is read
                after = json.loads(run(s, kafka_bootstrap, "status", "--json").stdout)["lag"]["by_group"]
                assert not any(after.values()), after
                summary = json.loads(stdout)["summary"]
                assert summary["newly_applied"] >= 2, summary  # u3 and u4, dead-lettered in the outage
                assert summary["already_applied"] >= 1, summary  # u2, applied by the retry
                assert summary["replanned"] >= 3, summary  # the planner re-planned u2, u3, u4
                _wait_clean(s, kafka_bootstrap, again, "no drift after the replay")
        finally:
            if replay.poll() is None:
                replay.kill()
                replay.wait(timeout=30)

    # what the retry and the replay applied is settled: purge the dead letters
    purged = run(s, kafka_bootstrap, "dlq", "purge", "--all", "--queue", "operations", "--yes")
    assert purged.exit_code == 0 and not _unhandled(s, kafka_bootstrap)
    assert cloud.user("u4") is not None and cloud.access(cloud.user("u4")["id"])
    assert cloud.user("u3")["last_name"] == "Olsen"
    assert cloud.applied_twice(creations=False) == []
    journal = run(s, kafka_bootstrap, "journal", "--entity", "u3", "--json")
    outcomes = [json.loads(line)["outcome"] for line in journal.stdout.splitlines()]
    # the sink records an operation it gave up on as failed (dead_lettered: the cloud refused it)
    assert {"failed", "dead_lettered"} & set(outcomes) and "applied" in outcomes
    writer.close()
