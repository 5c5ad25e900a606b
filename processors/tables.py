"""Tables of the planner: the only state shared between events.

- ``entities``: last seen version and state per directory entity (co-partitioned with the
  directory topics);
- ``parked``: per user, the access operations waiting for cloud identities, and a per-partition
  index of the users that have some (co-partitioned with users and results);
- ``identities``: what is known of the cloud (cloud ids of users and companies, the
  registered application instances, the applications blocked by a mismatch). A global
  table: every worker needs every company.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust


@dataclass(frozen=True)
class PlannerTables:
    entities: faust.Table
    parked: faust.Table
    identities: faust.GlobalTable


def declare_tables(app: faust.App) -> PlannerTables:
    return PlannerTables(
        entities=app.Table("entities", key_type=str, value_type=dict),
        parked=app.Table("parked", key_type=str, value_type=list),
        # Same partition count as the source topics, written to the partition of the event
        # being processed. (partitions=1 + use_partitioner=True, faust's advice for global
        # tables, crashed: aiokafka's producer had no metadata for the changelog topic yet
        # and key_partition() raised, which dead-lettered the results carrying identities.)
        identities=app.GlobalTable("identities", key_type=str, value_type=str),
    )
