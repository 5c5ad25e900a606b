"""Faust's sharp edges, pinned: no exception escapes the agent (each failure is retried, parked
or dead-lettered), effects go out in their order, and the agent runs with concurrency 1.

The shell is driven with a small in-memory topic fake (the unit tier has no broker); the same
shell runs against the real broker in tests/integration/test_planner_faust.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from kernel.records import Record
from kernel.retry import Backoff
from kernel.settings import Settings
from processors.engine import Coords, Effects, Reconciler, Send
from processors.facts import teaches
from processors.faust_compat import Deliveries, skip_before_stream
from processors.handlers import MAX_BACKOFF, PlannerHandlers
from processors.metrics import PlannerMetrics
from processors.model import Identities, PlannerSettings
from processors.planner import plan
from schemas.codec import encode
from schemas.deadletter import HEADER_EXCEPTION, HEADER_REASON, HEADER_STAGE, headers_dict
from schemas.results import OperationResult, ResultOutcome, result_headers
from schemas.topics import DIRECTORY_TOPICS, RESULTS
from tests.factories import T0, connected_table, user_event


@dataclass
class FakeTopic:
    """Records what is sent; fails the first ``fail`` sends with a broker timeout."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    fail: int = 0
    log: list[str] | None = None
    name: str = ""

    async def send(self, **kw: Any) -> asyncio.Future[None]:
        if self.fail:
            self.fail -= 1
            raise KafkaTimeoutError("broker gone")
        self.sent.append(kw)
        if self.log is not None:
            self.log.append(f"send:{self.name}")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class FakeTopics:
    def __init__(self, log: list[str]) -> None:
        self.topics = {
            r: FakeTopic(log=log, name=r) for r in ("operations", "results", "facts", "control", "dlq")
        }
        self.dlq = self.topics["dlq"]

    def by_role(self, role: str) -> FakeTopic:
        return self.topics[role]


class LoggingTable(dict[str, Any]):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def __setitem__(self, key: str, value: Any) -> None:
        self.log.append(f"write:{key}")
        super().__setitem__(key, value)


@dataclass
class Message:
    topic: str
    value: bytes | None
    partition: int = 0
    offset: int = 7
    key: bytes | None = b"u1"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class Event:
    message: Message


@dataclass
class NoWaits(Backoff):
    """kernel's back-off that records the attempts it was asked about and never waits."""

    asked: list[int] = field(default_factory=list)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        self.asked.append(attempt)
        return 0.0


def _handlers(
    reconciler: Any = None, backoff: Backoff | None = None
) -> tuple[PlannerHandlers, FakeTopics, list[str]]:
    log: list[str] = []
    table = LoggingTable(log)
    dict.update(table, connected_table())  # an installation that ran `vudsync connect` (not logged)
    topics = FakeTopics(log)
    reconciler = reconciler or Reconciler(table, PlannerSettings(), 1, lambda: T0)
    handlers = PlannerHandlers(
        reconciler, table, topics, PlannerMetrics(CollectorRegistry()), lambda t, p: None, backoff=backoff
    )  # type: ignore[arg-type]
    return handlers, topics, log


def _users_topic() -> str:
    from schemas.directory import EntityType

    return DIRECTORY_TOPICS[EntityType.USER].name


async def test_a_planning_failure_is_dead_lettered_and_the_agent_goes_on() -> None:
    class Broken(Reconciler):
        def on_directory_event(self, *args: Any) -> Effects:
            raise RuntimeError("a bug")

    handlers, topics, _ = _handlers(Broken({}, PlannerSettings(), 1, lambda: T0))
    raw = user_event(3).model_dump_json().encode()
    await handlers.on_message(Event(Message(_users_topic(), raw)))  # type: ignore[arg-type]
    (dead,) = topics.dlq.sent
    headers = headers_dict(dead["headers"])
    assert headers[HEADER_STAGE] == "plan" and headers[HEADER_EXCEPTION] == "RuntimeError"
    assert "a bug" in headers[HEADER_REASON] and dead["value"] == raw


async def test_undecodable_input_is_dead_lettered_with_stage_decode() -> None:
    handlers, topics, _ = _handlers()
    for value in (b"not json", b'{"entity": "user"}', user_event(3).model_dump_json().encode()):
        topic = "vud.directory.companies" if value.startswith(b'{"event_id"') else _users_topic()
        await handlers.on_message(Event(Message(topic, value)))  # type: ignore[arg-type]
    stages = [headers_dict(d["headers"])[HEADER_STAGE] for d in topics.dlq.sent]
    reasons = [headers_dict(d["headers"])[HEADER_REASON] for d in topics.dlq.sent]
    assert stages == ["decode"] * 3
    assert reasons[0].startswith("not JSON") and reasons[1].startswith("wrong shape")
    assert reasons[2] == "a user event on the company topic"
    await handlers.on_message(Event(Message(_users_topic(), None)))  # type: ignore[arg-type]
    assert len(topics.dlq.sent) == 3, "a tombstone is compaction's, not a dead letter"


async def test_a_broker_refusing_a_record_is_retried_until_it_takes_it() -> None:
    waits = NoWaits()
    handlers, topics, _ = _handlers(backoff=waits)
    topics.topics["operations"].fail = 2
    await handlers.on_message(Event(Message(_users_topic(), user_event(3).model_dump_json().encode())))  # type: ignore[arg-type]
    (op,) = topics.topics["operations"].sent
    assert op["key"] == b"user:u1" and topics.dlq.sent == []
    assert handlers.metrics.retries.labels(reason="KafkaTimeoutError")._value.get() == 2
    assert waits.asked == [1, 2], "each retry waits by the injected back-off, attempt by attempt"


def test_the_planner_waits_by_the_kernel_backoff_doubling_from_a_fifth_of_a_second() -> None:
    """One back-off in vudsync (kernel.retry): the planner's is full jitter under a ceiling of
    0.2 s before the second try, doubling, capped at ``MAX_BACKOFF``."""
    backoff = _handlers()[0].backoff
    assert type(backoff) is Backoff and (backoff.base, backoff.cap) == (0.1, MAX_BACKOFF)
    assert all(0.0 <= backoff.delay(1) <= 0.2 for _ in range(200))
    assert max(backoff.delay(30) for _ in range(200)) <= MAX_BACKOFF


async def test_effects_go_out_in_order_sends_then_acks_then_writes() -> None:
    class Scripted(Reconciler):
        def on_directory_event(self, *args: Any) -> Effects:
            fx = Effects(acks_first=True)
            op = plan(None, user_event(3), Identities(), PlannerSettings(), now=T0).operations[0]
            fx.sends.append(Send("operations", "user:u1", op))
            fx.writes = {"a": 1, "b": None}
            return fx

    handlers, _, log = _handlers(Scripted({}, PlannerSettings(), 1, lambda: T0))
    handlers.table["b"] = 0
    log.clear()
    await handlers.on_message(Event(Message(_users_topic(), user_event(3).model_dump_json().encode())))  # type: ignore[arg-type]
    assert log == ["send:operations", "write:a"] and "b" not in handlers.table


async def test_sends_waited_for_are_sent_at_once_and_the_others_may_linger() -> None:
    """A release waits for its acks before its table write: its records are sent without
    their linger (``send_now``); records nobody waits for are left to batch."""

    def scripted(acks_first: bool) -> Reconciler:
        class Scripted(Reconciler):
            def on_directory_event(self, *args: Any) -> Effects:
                fx = Effects(acks_first=acks_first)
                op = plan(None, user_event(3), Identities(), PlannerSettings(), now=T0).operations[0]
                fx.sends.append(Send("operations", "user:u1", op))
                fx.writes = {"a": 1}
                return fx

        return Scripted({}, PlannerSettings(), 1, lambda: T0)

    for acks_first, expected in (
        (True, ["send:operations", "send now", "write:a"]),
        (False, ["send:operations", "write:a"]),
    ):
        handlers, _, log = _handlers(scripted(acks_first))

        async def send_now(log: list[str] = log) -> None:
            log.append("send now")

        handlers.send_now = send_now
        await handlers.on_message(Event(Message(_users_topic(), user_event(3).model_dump_json().encode())))  # type: ignore[arg-type]
        assert log == expected, acks_first


async def test_cancellation_is_not_swallowed() -> None:
    class Slow(Reconciler):
        def on_directory_event(self, *args: Any) -> Effects:
            raise asyncio.CancelledError

    handlers, topics, _ = _handlers(Slow({}, PlannerSettings(), 1, lambda: T0))
    with pytest.raises(asyncio.CancelledError):
        await handlers.on_message(Event(Message(_users_topic(), user_event(3).model_dump_json().encode())))  # type: ignore[arg-type]
    assert topics.dlq.sent == []


class Recording(Reconciler):
    """Notes the offsets it is given, in order; plans nothing."""

    def __init__(self) -> None:
        super().__init__({}, PlannerSettings(), 1, lambda: T0)
        self.handled: list[tuple[int, int]] = []

    def on_directory_event(self, ev: Any, coords: Any, committed: Any, tx: Any = None) -> Effects:
        self.handled.append((coords.partition, coords.offset))
        return Effects()


async def test_offsets_that_never_reached_the_planner_are_read_from_the_broker_first() -> None:
    """faust-streaming can lose a delivery in a rebalance and then commit past it: the handler
    notices the jump, reads the offsets it never saw from the broker and handles them before
    the message in hand — in offset order, and without a seek that stale records could undo."""
    reconciler = Recording()
    handlers, _, _ = _handlers(reconciler)
    raw = user_event(3).model_dump_json().encode()
    asked: list[tuple[str, int, int, int]] = []
    failures = [KafkaTimeoutError("broker busy")]

    async def fetch(topic: str, partition: int, first: int, last: int) -> list[Record]:
        asked.append((topic, partition, first, last))
        if failures:
            raise failures.pop()
        return [Record(topic, partition, o, b"u1", raw) for o in range(first, last + 1)]

    handlers.fetch = fetch
    for offset in (4, 5, 8):  # 6 and 7 never delivered
        await handlers.on_message(Event(Message(_users_topic(), raw, offset=offset)))  # type: ignore[arg-type]
    assert asked == [(_users_topic(), 0, 6, 7)] * 2  # the first read failed: asked again
    assert reconciler.handled == [(0, 4), (0, 5), (0, 6), (0, 7), (0, 8)]
    # going back (Faust's seek after a rebalance) is not a loss; another partition is its own
    await handlers.on_message(Event(Message(_users_topic(), raw, offset=2)))  # type: ignore[arg-type]
    await handlers.on_message(Event(Message(_users_topic(), raw, partition=1, offset=50)))  # type: ignore[arg-type]
    assert len(asked) == 2 and reconciler.handled[-2:] == [(0, 2), (1, 50)]
    assert handlers.metrics.retries.labels(reason="undelivered")._value.get() == 2


async def test_offsets_compacted_away_are_asked_for_and_nothing_is_handled_twice() -> None:
    reconciler = Recording()
    handlers, _, _ = _handlers(reconciler)
    raw = user_event(3).model_dump_json().encode()

    async def fetch(topic: str, partition: int, first: int, last: int) -> list[Record]:
        return [Record(topic, partition, 13, b"u1", raw)]  # 11, 12 and 14 compacted away

    handlers.fetch = fetch
    for offset in (10, 15, 16):
        await handlers.on_message(Event(Message(_users_topic(), raw, offset=offset)))  # type: ignore[arg-type]
    assert reconciler.handled == [(0, 10), (0, 13), (0, 15), (0, 16)]
    assert handlers.metrics.retries.labels(reason="undelivered")._value.get() == 1


def test_the_agent_runs_with_concurrency_one_and_no_global_table(tmp_path: Path) -> None:
    import faust

    from processors.service import build_planner

    app = build_planner(Settings(home=tmp_path), "localhost:9092", CollectorRegistry())
    (agent,) = app.agents.values()
    assert agent.concurrency == 1
    tables = list(app.tables.values())
    assert [t.name for t in tables] == ["state"]
    assert not any(isinstance(t, faust.GlobalTable) for t in tables)
    assert app.conf.table_standby_replicas == 0 and app.conf.processing_guarantee.value == "at_least_once"


def test_each_planner_worker_names_its_component_and_itself_in_its_group(tmp_path: Path) -> None:
    """Replay's refusal and dry run list the group's members by client id: Faust's default,
    ``faust-<version>``, made every planner worker look the same."""
    from processors.app import create_app

    app = create_app(Settings(home=tmp_path, worker_name="worker-2"), "localhost:9092")
    assert app.conf.broker_client_id == "vudsync-planner-worker-2"


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


async def test_the_gate_is_ticked_only_by_its_partitions_owner_and_only_while_deletions_settle() -> None:
    """A window closes only when the gate's clock moves: the worker assigned partition 0 of the
    control topic stamps it while deletions settle; a worker that lost the partition (its table
    may still hold the old state) stays silent, and so does an idle gate."""
    from processors import keys
    from processors.control import GateTick
    from processors.deletions import GateState
    from schemas.codec import decode_model
    from schemas.topics import PLANNER_CONTROL

    handlers, topics, _ = _handlers()
    control = topics.by_role("control")
    owner = [TP(PLANNER_CONTROL.name, 0), TP(PLANNER_CONTROL.name, 3)]
    await handlers.tick_gate(owner)
    assert control.sent == [], "nothing settles: no tick"
    handlers.table[keys.GATE_STATE] = GateState(pending=2, last_arrival=T0.timestamp()).to_json()
    await handlers.tick_gate([TP(PLANNER_CONTROL.name, 3)])
    assert control.sent == [], "not the gate's partition: no tick"
    await handlers.tick_gate(owner)
    (sent,) = control.sent
    assert sent["partition"] == 0 and decode_model(GateTick, sent["value"]).at == T0


def _result(kind: str, outcome: ResultOutcome, cloud_id: str | None = None) -> OperationResult:
    op = plan(None, user_event(3), Identities(), PlannerSettings(), now=T0).operations[0]
    return OperationResult.for_operation(op, outcome, T0, kind=kind, cloud_id=cloud_id)


def test_only_applied_results_of_ids_catalogue_and_registry_teach_the_planner() -> None:
    """What the planner skips unread is what ``Facts.on_result`` would learn nothing from; and
    an assignment the sink could not resolve (*unresolved*), which it parks again."""
    applied = (ResultOutcome.APPLIED, ResultOutcome.ALREADY_APPLIED)
    for outcome in ResultOutcome:
        for kind in (
            "user.upsert",
            "user.deactivate",
            "company.upsert",
            "catalogue.upsert",
            "catalogue.remove",
            "application_instance.register",
        ):
            assert teaches(kind, outcome.value) is (outcome in applied), (kind, outcome)
        assert teaches("access.assign", outcome.value) is (outcome is ResultOutcome.UNRESOLVED)
        assert not teaches("access.revoke", outcome.value)
    # and on_result indeed learns nothing from what is skipped: no fact, no journal entry
    reconciler = Reconciler({}, PlannerSettings(), 2, lambda: T0)
    for kind, outcome in (("access.assign", ResultOutcome.APPLIED), ("user.upsert", ResultOutcome.PARKED)):
        fx = reconciler.on_result(_result(kind, outcome, "cloud-1"), Coords("r", 0, 0))
        assert fx.sends == [] and fx.writes == {}


async def test_results_that_teach_nothing_are_acked_before_the_stream_and_leave_no_hole() -> None:
    """The planner's own journal entries and applied access are acknowledged as Faust's drain
    loop takes them (``skip_before_stream``), by their headers; results without the headers and
    those that teach are delivered; the delivery tracker sees no hole where skips were."""
    reconciler = Recording()
    handlers, topics, _ = _handlers(reconciler)
    asked: list[tuple[str, int, int, int]] = []

    async def fetch(topic: str, partition: int, first: int, last: int) -> list[Record]:
        asked.append((topic, partition, first, last))
        return []

    handlers.fetch = fetch
    # what the planner itself writes carries the headers
    parked = _result("access.assign", ResultOutcome.PARKED)
    await handlers.perform(Effects(sends=[Send("results", "u1", parked)]))
    (sent,) = topics.topics["results"].sent
    assert handlers.skips(RESULTS.name, sent["headers"])

    delivered: list[int] = []
    acked: list[int] = []

    async def deliver(message: Any) -> None:
        delivered.append(message.offset)

    consumer = SimpleNamespace(callback=deliver, ack=lambda m: acked.append(m.offset))
    skip_before_stream(SimpleNamespace(consumer=consumer), handlers.skips, handlers.skipped)  # type: ignore[arg-type]
    user = _result("user.upsert", ResultOutcome.APPLIED, "cloud-1")
    records = [
        (10, result_headers(user)),  # teaches a cloud id
        (11, result_headers(parked)),  # the planner's own journal entry
        (12, result_headers(_result("access.assign", ResultOutcome.APPLIED))),
        (13, []),  # no headers (written before them): read in full
        (14, result_headers(_result("user.upsert", ResultOutcome.FAILED))),
        (15, result_headers(user)),
    ]
    for offset, headers in records:
        await consumer.callback(Message(RESULTS.name, encode(user), offset=offset, headers=headers))
    assert delivered == [10, 13, 15] and acked == [11, 12, 14]
    assert handlers.metrics.skipped.labels(input="results")._value.get() == 3
    # the stream hands the delivered ones over after the skips were acked: no hole is read
    for offset in delivered:
        await handlers.on_message(Event(Message(RESULTS.name, encode(user), offset=offset)))  # type: ignore[arg-type]
    assert asked == []
    # a skip behind a hole (16 lost) is read from the broker with the hole: nothing guessed
    await consumer.callback(Message(RESULTS.name, encode(user), offset=17, headers=result_headers(parked)))
    await handlers.on_message(Event(Message(RESULTS.name, encode(user), offset=18)))  # type: ignore[arg-type]
    assert asked == [(RESULTS.name, 0, 16, 17)]


def test_deliveries_count_skipped_offsets_as_delivered() -> None:
    d = Deliveries()
    assert d.observe("t", 0, 5) is None
    d.skipped("t", 0, 6)  # right after the last delivery: nothing before it is on its way
    assert d.observe("t", 0, 7) is None
    d.skipped("t", 0, 10)  # 8 and 9 still in the stream
    d.skipped("t", 0, 11)
    assert d.observe("t", 0, 8) is None and d.observe("t", 0, 9) is None
    assert d.observe("t", 0, 12) is None
    d.skipped("t", 0, 14)
    assert d.observe("t", 0, 16) == (13, 15)  # 13 and 15 never came: the hole is read (14 with it)
