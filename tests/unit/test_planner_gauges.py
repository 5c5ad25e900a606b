"""The planner's gauges: one per state, one number per thing, and only what the worker owns now.

A drill saw the parked gauge stay at 554 for minutes after a rebalance, with lag 0 and nothing
waiting, until a restart: the memory store keeps the keys the agent wrote on a partition after
the partition is revoked. And held deletions were counted three times three ways: the gate's
held deletions (one per user), the deactivations and revokes held (3,201 operations), and the
same operations again in the parked gauge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from processors.engine import Effects, Reconciler
from processors.faust_compat import OwnedKeys
from processors.handlers import PlannerHandlers
from processors.metrics import PlannerMetrics
from processors.model import PlannerSettings
from processors.parking import Waiting, count_waiting
from tests.factories import T0

CHANGELOG = "vudsync-planner-state-changelog"


def item(*needs: str) -> dict[str, Any]:
    return {
        "slot": "s",
        "op": {"source_committed_at": T0.isoformat()},
        "needs": list(needs),
        "apps": [],
        "del": None,
    }


def test_each_waiting_operation_is_in_exactly_one_state() -> None:
    values = [
        [item("company:c1"), item("user:u1", "catalogue:business:roles:Lønn")],  # parked, parked
        [item("deletion:user:u2:9"), item("deletion:user:u2:9", "company:c1")],  # held, held
        [item("application:business"), item("application:business", "deletion:user:u3:4")],
    ]
    assert count_waiting(values) == Waiting(parked=2, held=3, blocked=1)
    assert count_waiting(values).total == 6


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class FakeAssignor:
    partitions: set[int]

    def assigned_actives(self) -> set[TP]:
        return {TP(CHANGELOG, p) for p in self.partitions} | {
            TP("vud.directory.users", p) for p in self.partitions
        }


@dataclass
class FakeApp:
    assignor: FakeAssignor


class FakeChangelog:
    def get_topic_name(self) -> str:
        return CHANGELOG


@dataclass
class FakeStore(dict[str, Any]):
    _key_partition: dict[str, int] = field(default_factory=dict)  # what faust's memory store recovered


class FakeTable(dict[str, Any]):
    changelog_topic = FakeChangelog()

    def __init__(self) -> None:
        super().__init__()
        self.data = FakeStore()


def _worker(partitions: set[int]) -> tuple[PlannerHandlers, FakeTable, FakeApp, CollectorRegistry]:
    table = FakeTable()
    app = FakeApp(FakeAssignor(set(partitions)))
    registry = CollectorRegistry()
    handlers = PlannerHandlers(
        Reconciler(table, PlannerSettings(), 6, lambda: T0),
        table,
        None,  # type: ignore[arg-type]  # no sends here
        PlannerMetrics(registry),
        lambda t, p: None,
        owned_keys=OwnedKeys(app, table),  # type: ignore[arg-type]
    )
    return handlers, table, app, registry


def _gauges(registry: CollectorRegistry) -> dict[str, float | None]:
    names = (
        "vudsync_parked_operations",
        "vudsync_held_operations",
        "vudsync_blocked_operations",
        "vudsync_held_deletions",
    )
    return {n.removeprefix("vudsync_"): registry.get_sample_value(n) for n in names}


async def test_the_gauges_count_only_the_partitions_the_worker_owns_now() -> None:
    handlers, table, app, registry = _worker({0, 1, 2})
    # written by this worker: user u1 on partition 1, u2 on partition 2 (its deletion is held)
    u1, u2 = (
        {"p|user:u1": [item("company:c1"), item("company:c2")]},
        {"p|user:u2": [item("deletion:user:u2:5")] * 3},
    )
    await handlers.perform(Effects(writes=u1, partitions={"p|user:u1": 1}))
    await handlers.perform(Effects(writes=u2, partitions={"p|user:u2": 2}))
    # recovered from the changelog of partition 0: blocked on its application; the gate holds 1
    table["p|user:u3"] = [item("application:business")]
    table.data._key_partition["p|user:u3"] = 0
    table["g|gate"] = {"window": [], "holding": True, "held": 1, "live": {}}
    handlers.export_gauges()
    assert _gauges(registry) == {
        "parked_operations": 2,
        "held_operations": 3,
        "blocked_operations": 1,
        "held_deletions": 1,
    }

    # a rebalance takes partitions 0 and 2 away: the store still holds their keys (faust's
    # memory store does), the gauges drop them at the revocation, before the assignor forgets
    handlers.export_gauges(revoked=frozenset({0, 2}))
    assert _gauges(registry) == {
        "parked_operations": 2,
        "held_operations": 0,
        "blocked_operations": 0,
        "held_deletions": 0,
    }
    app.assignor.partitions = {1}
    handlers.export_gauges()
    assert _gauges(registry)["parked_operations"] == 2 and _gauges(registry)["held_operations"] == 0

    # u1's operations are released: its key is deleted, the gauge follows
    await handlers.perform(Effects(writes={"p|user:u1": None}, partitions={"p|user:u1": 1}))
    handlers.export_gauges()
    assert _gauges(registry)["parked_operations"] == 0
    # the oldest parked age, too, is of what the worker owns: nothing (the others' keys remain)
    assert registry.get_sample_value("vudsync_parked_oldest_age_seconds") == 0


def test_a_blocked_application_and_companies_waiting_for_review_are_told_by_partition_0s_owner() -> None:
    """The license change that blocked Business showed only as a number of blocked operations:
    no alert could say which application, nor that companies wait for an operator's review."""
    fp_cloud, fp_new = "hmac-sha256:" + "a" * 64, "hmac-sha256:" + "b" * 64
    knowledge = {
        "k|0|registry:business": {"present": True, "uri": "https://vb", "fp": fp_cloud, "at": 1.0},
        "k|0|instance:business": {"present": True, "uri": "https://vb", "fp": fp_new, "version": 9},
        "k|0|registry:reporting": {"present": False, "uri": None, "fp": None, "at": 1.0},
        "k|0|review:c1": {"w": True, "at": 1.0, "cloud": "cc-1"},
        "k|0|review:c2": {"w": False, "at": 1.0, "cloud": "cc-2"},  # accepted
    }
    for partitions, expected in (({0, 1}, (1, 0, 1)), ({1, 2}, (0, 0, 0))):
        handlers, table, _, registry = _worker(partitions)
        table.update(knowledge)
        handlers.export_gauges()
        blocked = {
            app: registry.get_sample_value("vudsync_application_blocked", {"application": app})
            for app in ("business", "reporting")
        }
        waiting = registry.get_sample_value("vudsync_review_waiting_companies")
        assert (blocked["business"], blocked["reporting"], waiting) == expected, partitions


async def test_the_gauges_walk_the_table_only_when_it_may_hold_keys_the_agent_did_not_write() -> None:
    """A refresh walked every key of the table twice (half a million at 100,000 users): the
    keys the gauges read are now kept as the agent writes them, and the table is walked again
    only after a recovery or a rebalance (``table_changed``) — never counted wrong meanwhile."""
    handlers, table, _, registry = _worker({0, 1})
    handlers.export_gauges()  # the first refresh walks the (empty) table
    walked: list[int] = []
    real_iter = FakeTable.__iter__

    def counting_iter(self: FakeTable) -> Any:
        walked.append(1)
        return real_iter(self)

    FakeTable.__iter__ = counting_iter  # type: ignore[method-assign]
    try:
        await handlers.perform(
            Effects(writes={"p|user:u1": [item("company:c1")]}, partitions={"p|user:u1": 1})
        )
        handlers.export_gauges()
        assert _gauges(registry)["parked_operations"] == 1 and not walked, "written keys: no walk"

        # the same key rewritten with more items: a new value, summarised again
        two = [item("company:c1"), item("deletion:user:u1:3")]
        await handlers.perform(Effects(writes={"p|user:u1": two}, partitions={"p|user:u1": 1}))
        handlers.export_gauges()
        assert (_gauges(registry)["parked_operations"], _gauges(registry)["held_operations"]) == (1, 1)

        # a recovery brings keys the agent never wrote; the recovery callback says so
        table["p|user:u2"] = [item("company:c2")]
        table.data._key_partition["p|user:u2"] = 0
        table["k|0|review:c9"] = {"w": True, "at": 1.0, "cloud": "cc-9"}
        handlers.table_changed()
        handlers.export_gauges()
        assert _gauges(registry)["parked_operations"] == 2 and walked, "walked once after the recovery"
        assert registry.get_sample_value("vudsync_review_waiting_companies") == 1
        walks = len(walked)
        handlers.export_gauges()
        assert len(walked) == walks, "and not again"

        # a key the table lost behind the agent's back (a tombstone recovered) reads as nothing
        del table["p|user:u2"]
        handlers.export_gauges()
        assert _gauges(registry)["parked_operations"] == 1
    finally:
        FakeTable.__iter__ = real_iter  # type: ignore[method-assign]
