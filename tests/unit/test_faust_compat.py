"""The upstream behaviour each workaround in :mod:`processors.faust_compat` relies on, probed on the
installed faust-streaming / aiokafka, and the start-up check of their versions.

When one of these fails after an upgrade, the workaround it names may no longer hold (or no
longer be needed): re-read the upstream code, then the workaround, then update the pins.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import warnings
from collections import defaultdict
from importlib import metadata
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.producer.message_accumulator import MessageAccumulator
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import Producer
from faust.types import TP

from kernel.errors import ConfigurationError
from kernel.settings import Settings
from processors.faust_compat import (
    ALLOW_UNTESTED_ENV,
    CHECKED_SOURCES,
    TESTED_VERSIONS,
    DirectTopic,
    check_versions,
    committed_offsets,
    deliver_without_tasks,
)

FACTS0 = TP("vud.planner.facts", 0)
FACTS1 = TP("vud.planner.facts", 1)


def _resolve(dotted: str) -> Any:
    module, _, qualname = dotted.rpartition(".")
    owner_name, _, attribute = module.rpartition(".")
    obj = importlib.import_module(owner_name)
    return getattr(getattr(obj, attribute), qualname)


@pytest.mark.parametrize("name", sorted(CHECKED_SOURCES))
def test_the_private_code_relied_on_is_the_code_checked(name: str) -> None:
    """Any change to a private function a workaround leans on fails here, by name."""
    source = inspect.getsource(_resolve(name))
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == CHECKED_SOURCES[name], (
        f"{name} changed upstream: re-check processors/faust_compat.py against it"
    )


def test_the_installed_versions_are_the_tested_ones() -> None:
    assert {p: metadata.version(p) for p in TESTED_VERSIONS} == TESTED_VERSIONS


# -- behaviour probes -------------------------------------------------------------------


def test_perform_seek_keeps_a_committed_zero_as_none() -> None:
    """``committed_offsets`` turns Faust's None back into 0 for the partitions it knows."""
    fake: Any = SimpleNamespace(
        _read_offset=defaultdict(lambda: None), _committed_offset=defaultdict(lambda: None)
    )

    async def seek_to_committed() -> dict[TP, int]:
        return {FACTS0: 0, FACTS1: 7}

    fake.seek_to_committed = seek_to_committed
    asyncio.run(Consumer.perform_seek(fake))
    assert dict(fake._committed_offset) == {FACTS0: None, FACTS1: 7}
    assert dict(fake._read_offset) == {FACTS0: 0, FACTS1: 7}
    committed = committed_offsets(SimpleNamespace(consumer=fake))  # type: ignore[arg-type]
    assert (committed(FACTS0.topic, 0), committed(FACTS1.topic, 1)) == (0, 7)
    assert committed("vud.planner.control", 0) is None  # not known: no check


def test_a_revocation_forgets_the_committed_offsets() -> None:
    """Faust drops the partitions' committed offsets (and read offsets) when they are revoked."""
    source = inspect.getsource(Consumer.on_partitions_revoked)
    assert "self._committed_offset.pop(tp, None)" in source
    assert "self._read_offset.pop(tp, None)" in source


def test_a_delivery_cancelled_by_a_rebalance_is_still_marked_read() -> None:
    """The loss ``prime_committed_offsets``, ``Deliveries`` and ``reread_if_stalled`` work around:
    the read offset is set after ``wait_first`` whether the callback or the suspension won."""
    lines = [line.strip() for line in inspect.getsource(Consumer._drain_messages).splitlines()]
    waited = lines.index("callback(message), self.suspend_flow.wait()")
    assert lines[waited + 1] == ")" and lines[waited + 2] == "set_read_offset(tp, offset)"


def test_fausts_buffer_flush_gives_up_after_a_tenth_of_a_second() -> None:
    """``drain_buffer_before_commit`` (tests/unit/test_planner_commit_flush.py runs it)."""
    assert "timeout=0.1" in inspect.getsource(
        _resolve("faust.transport.producer.ProducerBuffer.flush_atmost")
    )


def test_the_kafka_producer_is_reachable_and_can_send_what_it_holds() -> None:
    """``producer_send_now``: Faust's ``_ensure_producer`` and aiokafka's ``flush_for_commit``."""
    assert inspect.iscoroutinefunction(MessageAccumulator.flush_for_commit)
    assert list(inspect.signature(MessageAccumulator.flush_for_commit).parameters) == ["self"]
    assert list(inspect.signature(Producer._ensure_producer).parameters) == ["self"]


def test_fausts_flush_before_a_commit_flushes_the_kafka_producer_too() -> None:
    """``DirectTopic``: records handed straight to aiokafka are flushed by the ``Producer.flush``
    that ``Consumer._commit_offsets`` awaits before it commits, after Faust's own buffer."""
    flushed: list[str] = []

    async def flush_buffer() -> None:
        flushed.append("faust buffer")

    async def flush_kafka_producer() -> None:
        flushed.append("aiokafka producer")

    fake: Any = SimpleNamespace(
        buffer=SimpleNamespace(flush=flush_buffer),
        _producer=SimpleNamespace(flush=flush_kafka_producer),
        _transaction_producers={},
    )
    asyncio.run(Producer.flush(fake))
    assert flushed == ["faust buffer", "aiokafka producer"]
    assert "await self.app.producer.flush()" in inspect.getsource(Consumer._commit_offsets)


def test_a_direct_topic_hands_its_record_to_the_kafka_producer_as_is() -> None:
    """``DirectTopic.send``: the topic's name, the raw key, value, partition and headers, and
    the producer's own future (the broker's acknowledgement) back."""
    calls: list[tuple[Any, ...]] = []

    async def main() -> None:
        acked: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def send(topic: str, value: bytes, **kw: Any) -> asyncio.Future[str]:
            calls.append((topic, value, kw))
            return acked

        kafka_producer = SimpleNamespace(send=send)
        app: Any = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: kafka_producer))
        topic: Any = SimpleNamespace(get_topic_name=lambda: "vud.cloud.operations")
        direct = DirectTopic(app, topic)
        fut = await direct.send(key=b"user:u1", value=b"{}", partition=3, headers=[("kind", b"x")])
        acked.set_result("acknowledged")
        assert await fut == "acknowledged"

    asyncio.run(main())
    assert calls == [
        ("vud.cloud.operations", b"{}", {"key": b"user:u1", "partition": 3, "headers": [("kind", b"x")]})
    ]


class _Consumer:
    """What ``deliver_without_tasks`` reads of Faust's consumer: a mode service (its own
    ``wait_first``, ``stopped`` and ``crashed``) with Faust's ``suspend_flow`` event; mode's
    ``wait_first`` calls are counted."""

    def __init__(self) -> None:
        import mode

        self.service = mode.Service()
        self._stopped = self.service._stopped
        self._crashed = self.service._crashed
        self.suspend_flow = asyncio.Event()
        self.raced: list[int] = []

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        self.raced.append(len(coros))
        return await self.service.wait_first(*coros, timeout=timeout)


def test_a_delivery_that_does_not_wait_runs_in_the_drain_loops_task() -> None:
    """``deliver_without_tasks``: no race (no task) for a delivery that finishes at once; the
    suspension's coroutine is closed unstarted (no 'never awaited' warning)."""

    async def main() -> None:
        consumer = _Consumer()
        deliver_without_tasks(SimpleNamespace(consumer=consumer))  # type: ignore[arg-type]
        delivered: list[str] = []

        async def deliver(record: str) -> None:
            delivered.append(record)

        suspended = consumer.suspend_flow.wait()
        await consumer.wait_first(deliver("r1"), suspended)  # type: ignore[call-arg]
        assert delivered == ["r1"] and consumer.raced == []
        assert suspended.cr_frame is None  # closed

        async def refuse(record: str) -> None:
            raise ValueError(record)

        with pytest.raises(ValueError, match="r2"):
            await consumer.wait_first(refuse("r2"), consumer.suspend_flow.wait())  # type: ignore[call-arg]
        assert consumer.raced == []

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(main())


def test_a_delivery_that_waits_is_raced_against_a_rebalance_as_before() -> None:
    """The rest of a delivery that waits (a full stream queue) goes to mode's ``wait_first``:
    it finishes when its wait ends, or is cancelled when the flow is suspended first; with the
    flow already suspended mode's ``wait_first`` does it all."""

    async def main() -> None:
        consumer = _Consumer()
        deliver_without_tasks(SimpleNamespace(consumer=consumer))  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        steps: list[str] = []

        async def deliver(record: str, room: asyncio.Future[None]) -> str:
            steps.append(f"{record} waits")
            try:
                await room
            except asyncio.CancelledError:
                steps.append(f"{record} cancelled")
                raise
            steps.append(f"{record} delivered")
            return record

        room: asyncio.Future[None] = loop.create_future()
        loop.call_later(0.01, room.set_result, None)
        result = await consumer.wait_first(deliver("r1", room), consumer.suspend_flow.wait())  # type: ignore[call-arg]
        assert steps == ["r1 waits", "r1 delivered"] and consumer.raced == [2]
        assert result.results == ["r1"]

        steps.clear()
        loop.call_later(0.01, consumer.suspend_flow.set)
        never: asyncio.Future[None] = loop.create_future()
        await consumer.wait_first(deliver("r2", never), consumer.suspend_flow.wait())  # type: ignore[call-arg]
        await asyncio.sleep(0)  # the cancelled delivery's task runs its except clause
        assert steps == ["r2 waits", "r2 cancelled"] and consumer.raced == [2, 2]

        steps.clear()  # suspended already: mode's wait_first from the start
        await consumer.wait_first(deliver("r3", loop.create_future()), consumer.suspend_flow.wait())  # type: ignore[call-arg]
        await asyncio.sleep(0)
        assert consumer.raced == [2, 2, 2] and "r3 delivered" not in steps

    asyncio.run(main())


# -- the start-up check -----------------------------------------------------------------


def _installed(**versions: str) -> Any:
    def version(package: str) -> str:
        if package not in versions:
            raise metadata.PackageNotFoundError(package)
        return versions[package]

    return version


def test_the_tested_versions_start() -> None:
    assert check_versions(installed=_installed(**TESTED_VERSIONS)) == {}


def test_an_untested_version_is_refused_with_the_tested_ones_and_the_override_named() -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_versions(installed=_installed(**{**TESTED_VERSIONS, "faust-streaming": "0.16.0"}))
    text = f"{caught.value} {caught.value.hint}"
    assert "faust-streaming 0.16.0" in text and "faust-streaming 0.15.3" in text
    assert "aiokafka 0.14.0" in text and ALLOW_UNTESTED_ENV in text


def test_a_missing_package_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="aiokafka not installed"):
        check_versions(installed=_installed(**{"faust-streaming": TESTED_VERSIONS["faust-streaming"]}))


def test_the_override_starts_an_untested_version_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    differ = check_versions(
        allow_untested=True, installed=_installed(**{**TESTED_VERSIONS, "aiokafka": "0.15.0"})
    )
    assert differ == {"aiokafka": "0.15.0"}
    assert "untested aiokafka 0.15.0" in caplog.text


def test_the_override_is_the_setting_its_error_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_UNTESTED_ENV, "true")
    assert Settings().planner_allow_untested_faust is True


def test_current_event_as_makes_the_event_the_one_table_writes_go_to() -> None:
    """A batch's table writes are made under an event of their partition: Faust's table and
    store take the partition from ``faust.streams.current_event()``."""
    from faust.streams import current_event

    from processors.faust_compat import current_event_as

    class Event:
        pass

    outer, inner = Event(), Event()
    with current_event_as(outer):
        assert current_event() is outer
        with current_event_as(inner):
            assert current_event() is inner
        assert current_event() is outer
    assert current_event() is None


class _AckingConsumer:
    """What ``Message.ack`` calls when a message's last reference is dropped."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, message: Any) -> bool:
        self.acked.append(message.offset)
        return True


def _batch(n: int) -> list[Any]:
    from faust.transport.consumer import ConsumerMessage

    # one reference each, as a stream with one subscriber delivers them
    messages = [
        ConsumerMessage("vud.directory.users", 0, offset, 0.0, 0, None, b"k", b"v", None)
        for offset in range(n)
    ]
    for message in messages:
        message.incref()
    return [SimpleNamespace(message=message) for message in messages]


def _take_events_finally(events: list[Any], consumer: _AckingConsumer) -> None:
    """What ``Stream.take_events`` does with a yielded batch in its ``finally``, whatever
    happened to the agent (``Stream.ack`` → ``Event.ack`` → ``Message.ack(app.consumer)``)."""
    for event in events:
        event.message.ack(consumer)


def test_a_batch_the_agent_finished_is_acknowledged() -> None:
    from processors.faust_compat import ack_only_when_handled

    events, consumer = _batch(3), _AckingConsumer()
    with ack_only_when_handled(events):
        pass
    _take_events_finally(events, consumer)
    assert consumer.acked == [0, 1, 2]


def test_a_batch_cancelled_mid_way_is_not_acknowledged() -> None:
    """A SIGTERM while the planner waits for the broker: take_events still acks the batch in its
    finally; with the guard, no message reaches the consumer as acknowledged."""
    from processors.faust_compat import ack_only_when_handled

    events, consumer = _batch(3), _AckingConsumer()
    with pytest.raises(asyncio.CancelledError), ack_only_when_handled(events):
        raise asyncio.CancelledError
    _take_events_finally(events, consumer)
    assert consumer.acked == []
    assert not any(event.message.acked for event in events)


def test_without_the_guard_take_events_acknowledges_an_unfinished_batch() -> None:
    """The upstream behaviour the guard works around: one reference, one ack, offset done."""
    events, consumer = _batch(2), _AckingConsumer()
    _take_events_finally(events, consumer)
    assert consumer.acked == [0, 1]


def test_take_events_acknowledges_in_a_finally_around_its_yield() -> None:
    from faust.streams import Stream

    source = inspect.getsource(Stream.take_events)
    after_yield = source.split("yield list(events)", 1)[1]
    assert after_yield.lstrip().startswith("finally:") and "await self.ack(event)" in after_yield
