"""The sink's policy: what a call says about the cloud, and what becomes of each operation."""

from __future__ import annotations

import pytest

from kernel.errors import VudsyncError
from sinks.errors import AuthenticationFailed, CircuitOpen, CloudRejected, CloudUnavailable, RateLimited
from sinks.policy import SinkPolicy, Step, Verdict
from sinks.ports import Applied

POLICY = SinkPolicy(max_attempts=8, retry_timeout=300.0, auth_cooldown=30.0)


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (None, Verdict("ok", cloud_up=True)),
        (CloudRejected("422", status=422, excerpt=""), Verdict("rejected", cloud_up=True)),
        (RateLimited("429", retry_after=2.0), Verdict("rate_limited", cloud_up=True)),
        (CloudUnavailable("503"), Verdict("server_error", cloud_up=False)),
        (CloudUnavailable("slow", reason="timeout"), Verdict("timeout", cloud_up=False)),
        (AuthenticationFailed("401"), Verdict("unauthorized", cloud_up=False, open_for=30.0)),
        (
            AuthenticationFailed("401", retry_after=90.0),
            Verdict("unauthorized", cloud_up=False, open_for=90.0),
        ),
    ],
)
def test_judge_tells_the_breaker_whether_the_cloud_is_up(
    error: VudsyncError | None, verdict: Verdict
) -> None:
    assert POLICY.judge(error) == verdict


def test_only_a_batch_refused_as_a_whole_is_split() -> None:
    refused = CloudRejected("400", status=400, excerpt="")
    assert POLICY.split(refused, 2)
    assert not POLICY.split(refused, 1)  # a single operation refused: dead-letter it
    assert not POLICY.split(CloudUnavailable("503"), 5)  # a batch failed: retried as a batch
    assert not POLICY.split(None, 5)


def test_each_outcome_has_its_step() -> None:
    assert POLICY.next_step(Applied("created"), 1, 0.0, False) is Step.RECORD
    assert POLICY.next_step(None, 1, 0.0, False) is Step.ALONE
    assert POLICY.next_step(CloudRejected("422", status=422, excerpt=""), 1, 0.0, False) is Step.DEAD_LETTER
    assert POLICY.next_step(CloudUnavailable("503"), 1, 0.0, False) is Step.RETRY


def test_give_up_only_after_enough_attempts_and_enough_time_while_the_cloud_answers() -> None:
    down = CloudUnavailable("503")
    assert POLICY.next_step(down, 8, 300.0, circuit_open=False) is Step.GIVE_UP
    assert POLICY.next_step(down, 7, 10_000.0, circuit_open=False) is Step.RETRY  # too few attempts
    assert POLICY.next_step(down, 100, 299.0, circuit_open=False) is Step.RETRY  # too soon
    assert POLICY.next_step(down, 100, 10_000.0, circuit_open=True) is Step.RETRY  # the cloud is down


@pytest.mark.parametrize("error", [AuthenticationFailed("401"), CircuitOpen("open")])
def test_never_give_up_on_refused_credentials_or_an_open_circuit(error: VudsyncError) -> None:
    assert POLICY.next_step(error, 1000, 1e6, circuit_open=False) is Step.RETRY


def test_retry_after_is_the_floor_except_for_refused_credentials() -> None:
    assert POLICY.retry_floor(RateLimited("429", retry_after=2.5)) == 2.5
    assert POLICY.retry_floor(CloudUnavailable("503", retry_after=1.0)) == 1.0
    assert POLICY.retry_floor(CloudUnavailable("503")) is None
    assert POLICY.retry_floor(AuthenticationFailed("401", retry_after=60.0)) is None  # the probe decides


def test_a_failing_operation_is_warned_about_twice_not_at_every_retry() -> None:
    assert [n for n in range(1, 100) if POLICY.warns(n)] == [8, 32]


@pytest.mark.parametrize(
    ("version", "applied", "superseded"),
    [(10, None, False), (10, 12, True), (12, 12, False), (13, 12, False), (0, 1, True)],
)
def test_an_operation_older_than_what_its_slot_has_applied_is_superseded(
    version: int, applied: int | None, superseded: bool
) -> None:
    """Equal goes: the same plan again (a redelivery, a released remainder of a parked plan)."""
    assert SinkPolicy.superseded(version, applied) is superseded
