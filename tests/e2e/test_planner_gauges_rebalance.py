"""The planner's waiting-operation gauges after a rebalance, on real parts: SQLite → producer →
Kafka → one planner worker, then a second one joins.

The drill that found it: the parked gauge stayed at 554 for at least 48 s with lag 0 after a
rebalance, and went to 0 only when the worker restarted — it counted the table keys of
partitions the worker no longer owned. Here no sink runs, so every access assignment waits in
the planner's table (for its user's and company's cloud ids, and its application); after the
second worker joins, each worker's gauges must equal what the table holds on the partitions
*it* owns, as the table's changelog says.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from typing import Any

import httpx

from kernel.settings import Settings
from processors.app import app_id
from tests.factories import store_users
from tests.kafka_read import read_all
from tests.pipeline import components, connected, directory_writer, gauge, wait_for
from vudsync.topics import ensure_catalogue

USERS = 30
COMPANIES = ["c0", "c1", "c2"]
GAUGES = ("vudsync_parked_operations", "vudsync_held_operations", "vudsync_blocked_operations")
PLANNER_ENV = {"VUDSYNC_PLANNER_SESSION_TIMEOUT": "10"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _waiting(port: int) -> int | None:
    """The worker's waiting operations, all three states (None while it does not serve them)."""
    values = [gauge(port, name) for name in GAUGES]
    return None if any(v is None for v in values) else int(sum(v for v in values if v is not None))


def _partitions(port: int) -> set[int] | None:
    try:
        figures: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/status", timeout=10).json()["figures"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return set(figures.get("table_partitions") or ()) or None


def _held_in_table(settings: Settings, bootstrap: str) -> Counter[int]:
    """Operations waiting per table partition, from the table's changelog (latest value per key)."""
    latest: dict[tuple[int, str], Any] = {}
    for record in read_all(bootstrap, f"{app_id(settings)}-state-changelog", timeout=30):
        key = json.loads(record.key)
        if isinstance(key, str) and key.startswith("p|"):
            latest[(record.partition, key)] = json.loads(record.value) if record.value else None
    per_partition: Counter[int] = Counter()
    for (partition, _), items in latest.items():
        per_partition[partition] += len(items or ())
    return per_partition


def test_after_a_rebalance_each_workers_gauges_count_its_own_partitions_only(
    kafka_settings: Settings, kafka_bootstrap: str
) -> None:
    settings = kafka_settings.model_copy(update={"topic_partitions": 3})
    ensure_catalogue(settings, kafka_bootstrap)
    connected(settings, kafka_bootstrap)  # as after `vudsync connect`: the assignments wait for cloud ids
    writer = directory_writer(settings)
    writer.add_application_instance("business", "https://vb.fjord.local", "VB-1")
    writer.upsert_catalogue("roles", [("business", "Regnskap", "Regnskap")])
    writer.upsert_companies(
        {"id": cid, "name": f"Fjord {cid} AS", "organisation_number": f"92360901{i}"}
        for i, cid in enumerate(COMPANIES)
    )
    rows = store_users(*range(USERS), digits=3)
    writer.upsert_users(rows)
    users = [row["id"] for row in rows]
    writer.grant(
        [(u, COMPANIES[i % len(COMPANIES)], "business", "role", "Regnskap") for i, u in enumerate(users)]
    )
    ports = {"planner:worker-1": _free_port(), "planner:worker-2": _free_port()}
    one, two = ports.values()

    with components(
        settings, kafka_bootstrap, "planner:worker-1", "producer", metrics_ports=ports, **PLANNER_ENV
    ) as procs:
        # one worker owns every partition and counts every waiting operation the table holds
        wait_for(
            procs,
            lambda: (
                _partitions(one) == {0, 1, 2}
                and (_waiting(one) or 0) >= USERS
                and _waiting(one) == sum(_held_in_table(settings, kafka_bootstrap).values())
            ),
            240,
            "worker-1 owning every partition, counting every waiting assignment",
            interval=1,
        )

        with components(
            settings, kafka_bootstrap, "planner:worker-2", metrics_ports=ports, **PLANNER_ENV
        ) as second:
            procs.update(second)
            table = _held_in_table(settings, kafka_bootstrap)  # nothing moves: no sink runs

            def each_counts_its_own() -> bool:
                mine, theirs = _partitions(one), _partitions(two)
                if not mine or not theirs or mine & theirs or mine | theirs != {0, 1, 2}:
                    return False  # the rebalance has not settled yet
                return _waiting(one) == sum(table[p] for p in mine) and _waiting(two) == sum(
                    table[p] for p in theirs
                )

            try:
                wait_for(
                    procs, each_counts_its_own, 180, "each worker's gauges equal to its partitions' table", 1
                )
            except AssertionError as exc:
                seen = {n: (_partitions(p), _waiting(p)) for n, p in ports.items()}
                raise AssertionError(f"partitions, waiting: {seen}; table: {dict(table)}\n{exc}") from None
            mine, theirs = _partitions(one), _partitions(two)
            assert mine and theirs
            total = sum(table.values())
            assert (_waiting(one) or 0) + (_waiting(two) or 0) == total >= USERS, "none counted twice"
