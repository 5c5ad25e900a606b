"""Ready or not, and why (kernel.health), and the pure parts of kernel.http_status (the
broker check's caching, figures from a registry). The endpoints themselves:
tests/integration/test_status_endpoints.py."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge

from kernel.health import (
    LagExporterFacts,
    PlannerFacts,
    ProducerFacts,
    Since,
    SinkFacts,
    lag_exporter_readiness,
    planner_readiness,
    producer_readiness,
    sink_readiness,
)
from kernel.http_status import BrokerCheck, registry_by_label, registry_total

B = "kafka:9092"


def test_producer_ready_when_broker_answers_and_store_was_read_recently() -> None:
    assert producer_readiness(ProducerFacts(B, True, 0.4)).ready


def test_producer_not_ready_says_every_reason() -> None:
    r = producer_readiness(ProducerFacts(B, False, 45.0), read_stale_after=30.0)
    assert not r.ready
    assert r.reasons[0] == "the Kafka broker does not answer at kafka:9092"
    assert "last read the directory store 45s ago" in r.reasons[1]
    assert "not read the directory store yet" in producer_readiness(ProducerFacts(B, True, None)).reasons[0]


def test_planner_ready_as_a_member_even_without_partitions() -> None:
    assert planner_readiness(PlannerFacts(B, True, joined=True, rebalancing=False, recovering=False)).ready


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (PlannerFacts(B, True, joined=False, rebalancing=False, recovering=False), "not a member"),
        (PlannerFacts(B, True, joined=True, rebalancing=True, recovering=False), "rebalancing"),
        (PlannerFacts(B, True, joined=True, rebalancing=False, recovering=True), "recovering"),
        (PlannerFacts(B, False, joined=True, rebalancing=False, recovering=False), "broker does not answer"),
    ],
)
def test_planner_not_ready(facts: PlannerFacts, reason: str) -> None:
    r = planner_readiness(facts)
    assert not r.ready
    assert len(r.reasons) == 1
    assert reason in r.reasons[0]


def test_sink_readiness() -> None:
    assert sink_readiness(SinkFacts(B, True, circuit_open=False, paused_for=None)).ready
    assert sink_readiness(SinkFacts(B, True, circuit_open=False, paused_for=30.0), paused_too_long=60).ready
    open_ = sink_readiness(SinkFacts(B, True, circuit_open=True, paused_for=None))
    assert open_.reasons == ("the circuit to the cloud is open: the cloud fails or refuses our credentials",)
    paused = sink_readiness(SinkFacts(B, True, circuit_open=False, paused_for=61.0), paused_too_long=60)
    assert paused.reasons == ("paused for back-pressure for 61s: the cloud is slow or throttles",)


def test_lag_exporter_readiness() -> None:
    assert lag_exporter_readiness(LagExporterFacts(5.0), stale_after=15).ready
    assert "no successful read" in lag_exporter_readiness(LagExporterFacts(None), stale_after=15).reasons[0]
    assert "20s ago" in lag_exporter_readiness(LagExporterFacts(20.0), stale_after=15).reasons[0]


def test_since_measures_from_the_first_observation_and_forgets() -> None:
    since = Since()
    assert since.observe(False, 1.0) is None
    assert since.observe(True, 2.0) == 0.0
    assert since.observe(True, 9.5) == 7.5
    assert since.observe(False, 10.0) is None
    assert since.observe(True, 11.0) == 0.0


def test_broker_check_asks_at_most_every_ttl() -> None:
    now = [0.0]
    asked: list[str] = []
    answer = [True]

    def answers(bootstrap: str, timeout: float) -> bool:
        asked.append(bootstrap)
        return answer[0]

    check = BrokerCheck(B, ttl=5.0, clock=lambda: now[0], answers=answers)
    assert check() and check()
    assert asked == [B]
    answer[0] = False
    now[0] = 4.9
    assert check()
    now[0] = 5.0
    assert not check()
    assert asked == [B, B]


def test_registry_figures() -> None:
    registry = CollectorRegistry()
    lag = Gauge("lag_messages", "lag", ["group", "partition"], registry=registry)
    lag.labels("planner", "0").set(3)
    lag.labels("planner", "1").set(4)
    lag.labels("sink", "0").set(1)
    assert registry_total(registry, "lag_messages") == 8
    assert registry_total(registry, "missing") is None
    assert registry_by_label(registry, "lag_messages", "group") == {"planner": 7.0, "sink": 1.0}
