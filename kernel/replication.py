"""How many replicas a new topic gets: decided from what the cluster says of its size (pure).

The cluster's *configured* size, not its live brokers, decides: a topic created while a broker
is down must not silently get fewer replicas than its siblings. What the cluster tells
(:func:`kernel.admin.cluster_size` asks):

* the **registered** brokers, fenced ones included (DescribeCluster v2, ``IncludeFencedBrokers``,
  KIP-1073): a broker that is down but has run once stays registered, fenced; KRaft places
  replicas on it when it must, and they catch up when it is back;
* the **controller quorum's voters** (DescribeQuorum), counted as brokers only when the brokers
  are combined broker/controller nodes (``process.roles``): then a node that never started
  (never registered) is still known. With dedicated controllers the voters say nothing of the
  brokers and are not counted.

Neither is always readable (a principal without DESCRIBE on the cluster, an older broker):
what could not be read is empty, and the registered brokers decide alone.
"""

from __future__ import annotations

from typing import NamedTuple

#: replicas on a cluster large enough; a write then needs two in-sync (``min.insync.replicas``)
FULL_REPLICATION = 3


class ClusterSize(NamedTuple):
    """What the cluster said of its brokers (ids)."""

    registered: tuple[int, ...]
    fenced: tuple[int, ...] = ()
    combined_voters: tuple[int, ...] = ()  # empty: dedicated controllers, or not readable

    @property
    def known(self) -> tuple[int, ...]:
        """Every broker the cluster is configured with, as far as it can tell."""
        return tuple(sorted(set(self.registered) | set(self.combined_voters)))

    @property
    def missing(self) -> tuple[int, ...]:
        """Known brokers that are not live: fenced, or voters that never registered."""
        return tuple(b for b in self.known if b in self.fenced or b not in self.registered)


def replication_for(size: ClusterSize, configured: int = 0) -> int:
    """``configured`` when set (> 0); else 3 replicas when the cluster knows three brokers or
    more (whether they are up or not), else one per known broker (at least 1)."""
    if configured > 0:
        return configured
    return max(1, min(FULL_REPLICATION, len(size.known)))


def replication_config(replication: int) -> dict[str, str]:
    """The topic configuration that goes with ``replication`` replicas: with three or more, a
    write needs two in-sync replicas (acks=all), so one broker may be down without data loss."""
    return {"min.insync.replicas": "2"} if replication >= FULL_REPLICATION else {}


def too_few_brokers_hint(replication: int) -> str:
    """What to do when the cluster cannot place ``replication`` replicas of a new topic."""
    return (
        f"new topics need {replication} replicas on distinct brokers: start the brokers that are "
        "missing (each must have run once to be registered) and run `vudsync topics ensure` again; "
        "or set VUDSYNC_TOPIC_REPLICATION to the replicas you want on purpose (0 = from the cluster's size)"
    )
