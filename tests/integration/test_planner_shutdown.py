"""A planner worker whose broker is gone still stops on SIGTERM, within its deadline.

Faust's graceful stop flushes the producer and commits offsets; with the broker gone it waits
for good (a worker was once found still running an hour after its SIGTERM). The worker exits
on its own after ``planner_shutdown_deadline`` — without the last commit, which loses nothing:
uncommitted messages are read again by the next worker. Its own broker, so that the session's
can stay up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from devtools.broker import LocalKafkaBroker
from devtools.processes import wait_until
from kernel.settings import Settings
from processors.service import EXIT_SHUTDOWN_STUCK
from schemas.directory import EntityType
from schemas.topics import DIRECTORY_TOPICS, OPERATIONS
from tests.factories import user_event
from tests.kafka_read import read_all
from tests.pipeline import alive_or_fail, components, connected
from vudsync.topics import ensure_catalogue

DEADLINE = 5.0


@pytest.fixture
def doomed_broker(tmp_path: Path) -> Iterator[str]:
    """A broker of this test alone (the jar cache is shared); stopped by the test or after it."""
    broker = LocalKafkaBroker(
        tmp_path / "broker-home", version=Settings().kafka_version, heap="256m", bind_to_parent=True
    )
    try:
        status = broker.up(timeout=120)
        assert status.bootstrap is not None
        yield status.bootstrap
    finally:
        broker.down()


def test_a_planner_whose_broker_is_gone_exits_within_its_deadline_after_sigterm(
    doomed_broker: str, tmp_path: Path, unique_topic_prefix: str
) -> None:
    bootstrap = doomed_broker
    settings = Settings(home=tmp_path, kafka_bootstrap=bootstrap, topic_prefix=unique_topic_prefix)
    ensure_catalogue(settings, bootstrap)
    connected(settings, bootstrap)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        users = settings.topic(DIRECTORY_TOPICS[EntityType.USER].name)
        producer.send(users, key=b"u1", value=user_event(3, uid="u1").model_dump_json().encode())
        producer.flush()
    finally:
        producer.close()
    with components(settings, bootstrap, "planner", VUDSYNC_PLANNER_SHUTDOWN_DEADLINE=str(DEADLINE)) as procs:
        planner = procs["planner"]
        # planning: it joined its group and reads and writes
        read_all(
            bootstrap,
            settings.topic(OPERATIONS.name),
            timeout=120,
            until=lambda rs: alive_or_fail(procs) and len(rs) >= 1,
        )
        # the broker goes away for good, then the operator stops the worker
        LocalKafkaBroker(tmp_path / "broker-home", version=settings.kafka_version).down()
        code = planner.stop(grace=DEADLINE + 60)  # SIGTERM; SIGKILL only after the grace
        assert code in (0, EXIT_SHUTDOWN_STUCK), (code, planner.tail(40))
        if code == EXIT_SHUTDOWN_STUCK:
            assert "stop not finished" in planner.tail(40)
        wait_until(lambda: not planner.alive(), 10, what="the planner gone")
