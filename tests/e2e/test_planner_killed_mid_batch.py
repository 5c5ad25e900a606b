"""The planner SIGKILLed while it plans in batches, on real parts: SQLite → producer → Kafka →
one Faust planner → Kafka → sink → the cloud API.

The planner takes its messages in batches (``take_events``): a batch's records are sent, its
table writes made, and its events acknowledged only after the whole batch. Killed while the
initial sync releases parked assignments batch after batch (results and facts flowing, the
sink applying), then restarted: it recovers its table from the changelog, reads again what was
not committed, and the cloud ends up equal to the directory — every user, company and
assignment there, and the cloud's own audit shows each operation's effect once (nothing lost,
nothing applied twice).
"""

from __future__ import annotations

import random

from devtools.processes import wait_until
from devtools.seed.data import organisation_number
from kernel.scrape import total
from kernel.settings import Settings
from tests.e2e.test_reconciliation_rules import _vudsync
from tests.e2e.test_reconciliation_two_workers import Directory, _free_port, mismatches
from tests.fixtures.cloud import CloudReader, fingerprint
from tests.pipeline import PLANNER_FAILOVER, alive_or_fail, components, metrics_of
from vudsync.topics import ensure_catalogue

USERS = 300
COMPANIES = ["c000", "c001", "c002"]


def test_planner_killed_mid_batch_loses_nothing_and_applies_nothing_twice(
    pipeline_settings: Settings, kafka_bootstrap: str, cloud: CloudReader
) -> None:
    settings = pipeline_settings
    ensure_catalogue(settings, kafka_bootstrap)
    cloud.register_instance("business", "https://vb.fjord.local", fingerprint(settings, "VB-1"))
    d = Directory(settings)
    d.writer.add_application_instance("business", "https://vb.fjord.local", "VB-1")
    d.writer.upsert_catalogue("roles", [("business", "Regnskap", "Regnskap"), ("business", "Lønn", "Lønn")])
    for i, cid in enumerate(COMPANIES):
        d.company(cid, f"Fjord {i} AS", organisation_number(random.Random(i)))
    for i in range(USERS):
        uid = f"u{i:03d}"
        d.user(uid, username=f"bruker{i}", email=f"bruker{i}@fjord.no", first_name="Åse", last_name="Brækken")
        d.grant(uid, COMPANIES[i % 3], "business", "Regnskap")
        if i % 4 == 0:
            d.grant(uid, COMPANIES[(i + 1) % 3], "business", "Lønn")
    _vudsync(settings, kafka_bootstrap, "connect")  # the registry and the catalogue, as facts
    first_wave = USERS + len(COMPANIES) + 2  # upserts of users, companies and roles
    every_op = first_wave + sum(len(a) for a in d.access.values())  # and one per assignment
    port = _free_port()
    # a slow cloud (every request answered after 300 ms) and a sink calling it one operation
    # at a time, two in flight: the sink's results, and so the planner's releases, come back a
    # few at a time for a while — the kill lands among them. (With the batch endpoint, the
    # users' results came back in one or two calls, and the planner — which releases a user's
    # assignments in the step that reads its result — released them all in one batch, before
    # the test could see it releasing: the kill then landed after the releases.)
    cloud.faults(latency_ms=[300, 300])
    slow_sink = {"VUDSYNC_SINK_BATCH": "false", "VUDSYNC_SINK_CONCURRENCY": "2"}
    with components(settings, kafka_bootstrap, "producer", "sink", **slow_sink) as procs:
        with components(
            settings, kafka_bootstrap, "planner", metrics_ports={"planner": port}, **PLANNER_FAILOVER
        ) as first:
            planned: list[float] = []

            def releasing() -> bool:  # some parked assignments released, not all: batches in flight
                alive_or_fail({**procs, **first})
                planned[:] = [total(metrics_of(port), "vudsync_operations_planned_total") or 0]
                return planned[0] >= first_wave + 20

            wait_until(releasing, 240, what="the planner releasing parked assignments")
            first["planner"].kill()
            assert planned[0] < every_op, "the kill must land while assignments are still parked"
        cloud.faults()
        with components(settings, kafka_bootstrap, "planner", **PLANNER_FAILOVER) as restarted:
            running = {**procs, **restarted}
            wait_until(
                lambda: alive_or_fail(running) and not mismatches(d, cloud),
                300,
                what="the cloud equal to the directory (the restarted planner's log: logs/planner.log)",
            )

    users = cloud.client.get("/v1/users", params={"limit": 1000}).json()["items"]
    assert len(users) == USERS
    assert cloud.applied_twice() == []
    d.writer.close()
