"""``vudsync bench journal``: the journal index on N entries — fill rate and filter query times.

Target (issue 6): a filter query over 1,000,000 entries answers in under a second. The index is
filled with synthetic results through :meth:`SqliteJournalIndex.add` (the path the indexer
uses); the queries are the ones ``vudsync journal`` and ``vudsync status`` run. With
``--from-kafka N`` it also measures the indexer reading N results from a real topic.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from devtools.bench import emit
from vudsync.ops.journal import JournalEntry, JournalFilter
from vudsync.ops.journal_index import SqliteJournalIndex

_OUTCOMES = (
    ("applied", 0.70),
    ("already_applied", 0.15),
    ("parked", 0.06),
    ("dead_lettered", 0.02),
    ("failed", 0.02),
    ("held", 0.01),
    ("blocked", 0.02),
    ("review", 0.02),
)
_KINDS = ("user.upsert", "access.assign", "access.revoke", "company.upsert", "user.deactivate")


def _entries(
    first: int, n: int, total: int, entities: int, now: float, days: int, seed: int
) -> list[JournalEntry]:
    """Entries ``first`` … ``first + n - 1`` of ``total``, spread evenly over ``days`` up to ``now``."""
    rng = random.Random(seed + first)
    outcomes = [o for o, _ in _OUTCOMES]
    weights = [w for _, w in _OUTCOMES]
    span = days * 86400
    picked = rng.choices(outcomes, weights, k=n)
    out = []
    for i in range(first, first + n):
        uid = f"u{rng.randrange(entities):06d}"
        outcome = picked[i - first]
        out.append(
            JournalEntry(
                topic="bench.results",
                partition=i % 6,
                offset=i,
                time=now - span + span * i / total,
                source="results",
                outcome=outcome,
                entity="user",
                entity_id=uid,
                operation_id=str(uuid.UUID(int=rng.getrandbits(128))),
                kind=rng.choice(_KINDS),
                source_version=i,
                reason="PUT /v1/users/…: 422 unknown_catalogue_entry" if outcome == "dead_lettered" else None,
                effect="updated" if outcome == "applied" else None,
                attempts=1,
            )
        )
    return out


def _timed(fn: Callable[[], Any], repeat: int = 5) -> dict[str, Any]:
    started = time.perf_counter()
    first = fn()
    cold = time.perf_counter() - started
    warm = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - started)
    rows = len(first) if isinstance(first, list) else first
    return {
        "cold_ms": round(cold * 1000, 2),
        "median_ms": round(statistics.median(warm) * 1000, 2),
        "rows": rows,
    }


@click.command("journal")
@click.option("--entries", type=int, default=1_000_000, show_default=True)
@click.option("--entities", type=int, default=20_000, show_default=True, help="distinct entity ids")
@click.option("--days", type=int, default=30, show_default=True, help="time span of the entries")
@click.option(
    "--path", type=click.Path(path_type=Path), default=None, help="index file (default: a temp dir)"
)
@click.option(
    "--from-kafka", type=int, default=0, help="also index N results from a real topic (needs a broker)"
)
@click.option("--seed", type=int, default=7)
@click.option("--json", "as_json", is_flag=True)
def command(
    entries: int, entities: int, days: int, path: Path | None, from_kafka: int, seed: int, as_json: bool
) -> None:
    """Fill a journal index with N entries, then time the filter queries of `vudsync journal`."""
    with tempfile.TemporaryDirectory(prefix="vudsync-bench-journal-") as tmp:
        db = path or Path(tmp) / "journal.db"
        now = time.time()
        index = SqliteJournalIndex(db)
        started = time.perf_counter()
        batch = 50_000
        for first in range(0, entries, batch):
            chunk = _entries(first, min(batch, entries - first), entries, entities, now, days, seed)
            index.add(chunk, {("bench.results", 0): first + len(chunk)})
        fill = time.perf_counter() - started
        probe = f"u{entities // 2:06d}"
        day_ago = now - 86400
        queries = {
            "entity (newest 50)": lambda: index.query(JournalFilter(entity_id=probe, limit=50)),
            "outcome dead_lettered, last 24 h": lambda: index.query(
                JournalFilter(outcomes=("dead_lettered",), since=day_ago, limit=50)
            ),
            "outcome applied (newest 50)": lambda: index.query(
                JournalFilter(outcomes=("applied",), limit=50)
            ),
            "outcomes failed+dead_lettered (newest 50)": lambda: index.query(
                JournalFilter(outcomes=("failed", "dead_lettered"), limit=50)
            ),
            "one hour, 15 days ago": lambda: index.query(
                JournalFilter(since=now - 15 * 86400, until=now - 15 * 86400 + 3600, limit=50)
            ),
            "entity + outcome applied": lambda: index.query(
                JournalFilter(entity_id=probe, outcomes=("applied",), limit=50)
            ),
            "count dead_lettered, last 7 days": lambda: index.count(
                JournalFilter(outcomes=("dead_lettered",), since=now - 7 * 86400)
            ),
            "status figures (last applied, last minute, open parked/held)": lambda: index.stats(now).entries,
        }
        timings = {name: _timed(fn) for name, fn in queries.items()}
        result: dict[str, Any] = {
            "benchmark": "journal index",
            "entries": entries,
            "entities": entities,
            "fill_seconds": round(fill, 1),
            "fill_entries_per_second": round(entries / fill),
            "index_file_mib": round(db.stat().st_size / 2**20, 1),
            "slowest_query_ms": max(t["median_ms"] for t in timings.values()),
            "slowest_cold_query_ms": max(t["cold_ms"] for t in timings.values()),
            "queries": {
                k: f"{v['median_ms']} ms median, {v['cold_ms']} ms cold, {v['rows']} rows"
                for k, v in timings.items()
            },
        }
        index.close()
        if from_kafka:
            result["from_kafka"] = _from_kafka(from_kafka, Path(tmp))
        emit(result, as_json)


def _from_kafka(n: int, tmp: Path) -> dict[str, Any]:
    """Publish N results to a fresh topic and time the indexer reading them into a new index."""
    from kernel.admin import TopicSpec, ensure_topics
    from kernel.publishing.kafka_python import KafkaRecordPublisher
    from kernel.settings import load_settings
    from schemas.codec import encode
    from schemas.directory import EntityType
    from schemas.results import OperationResult, ResultOutcome
    from schemas.topics import RESULTS
    from vudsync.bootstrap import resolve_bootstrap
    from vudsync.ops.journal_sync import JournalIndexer
    from vudsync.ops.kafka_admin import group_admin

    settings = load_settings(topic_prefix=f"bench-{uuid.uuid4().hex[:8]}-")
    bootstrap = resolve_bootstrap(settings)
    topic = settings.topic(RESULTS.name)
    ensure_topics(bootstrap, [TopicSpec(topic, settings.topic_partitions)])
    publisher = KafkaRecordPublisher(bootstrap, client_id="vudsync-bench")
    t0 = datetime.now(UTC) - timedelta(days=1)
    for i in range(n):
        result = OperationResult(
            operation_id=str(uuid.uuid4()),
            kind="user.upsert",
            aggregate=f"user:u{i % 5000}",
            entity=EntityType.USER,
            entity_id=f"u{i % 5000}",
            source_version=i,
            outcome=ResultOutcome.APPLIED,
            source_committed_at=t0,
            recorded_at=t0 + timedelta(milliseconds=i),
        )
        publisher.publish(topic, result.entity_id, encode(result))
        if i % 10_000 == 9_999:
            publisher.flush()
    publisher.flush()
    publisher.close()
    index = SqliteJournalIndex(tmp / "kafka-journal.db")
    indexer = JournalIndexer(settings, bootstrap, index)
    started = time.perf_counter()
    with group_admin(bootstrap) as admin:
        added = indexer.catch_up(admin)
    seconds = time.perf_counter() - started
    indexer.close()
    index.close()
    return {
        "records": n,
        "indexed": added,
        "seconds": round(seconds, 1),
        "entries_per_second": round(added / seconds),
    }
