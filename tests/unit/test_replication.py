"""How many replicas a new topic gets: from the cluster's configured size, not its live brokers."""

from __future__ import annotations

import pytest

from kernel.replication import ClusterSize, replication_config, replication_for


@pytest.mark.parametrize(
    ("size", "replicas"),
    [
        (ClusterSize(registered=(1,)), 1),
        (ClusterSize(registered=(1, 2)), 2),
        (ClusterSize(registered=(1, 2, 3)), 3),
        (ClusterSize(registered=(1, 2, 3, 4, 5)), 3),
        # a broker that is down but has run once stays registered, fenced
        (ClusterSize(registered=(1, 2, 3), fenced=(3,)), 3),
        (ClusterSize(registered=(1, 2, 3), fenced=(2, 3)), 3),
        # a combined node that never started is known from the quorum's voters only
        (ClusterSize(registered=(1, 2), combined_voters=(1, 2, 3)), 3),
        # dedicated controllers (not counted) in front of one broker
        (ClusterSize(registered=(1,), combined_voters=()), 1),
    ],
)
def test_brokers_that_are_down_count(size: ClusterSize, replicas: int) -> None:
    assert replication_for(size) == replicas


def test_a_configured_factor_wins() -> None:
    assert replication_for(ClusterSize(registered=(1, 2, 3)), configured=2) == 2
    assert replication_for(ClusterSize(registered=(1,)), configured=3) == 3


def test_missing_brokers_are_the_fenced_and_the_never_registered() -> None:
    size = ClusterSize(registered=(1, 2, 4), fenced=(4,), combined_voters=(1, 2, 3))
    assert size.known == (1, 2, 3, 4)
    assert size.missing == (3, 4)
    assert ClusterSize(registered=(1, 2, 3)).missing == ()


def test_three_replicas_need_two_in_sync() -> None:
    assert replication_config(3) == {"min.insync.replicas": "2"}
    assert replication_config(2) == {}
    assert replication_config(1) == {}
