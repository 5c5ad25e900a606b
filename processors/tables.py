"""The planner's table: the only state shared between messages.

One table, ``state``, co-partitioned with every input topic; the key prefixes and what they
hold are described in :mod:`processors.keys`. One table rather than several so that all of
a partition's state changes go through *one* changelog partition, in the order they were made.

No ``GlobalTable``: facts every partition needs are copied into each partition's own keys
(see :mod:`processors.facts` for why).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import faust
from faust.types import TableT

from kernel.replication import replication_config


def declare_table(app: faust.App) -> TableT[str, Any]:
    """The table; its changelog gets the app's replication factor (Faust's) and, with three or
    more replicas, ``min.insync.replicas=2`` (ours), as the catalogue's topics do: a write of
    the planner's state survives the loss of a broker. Faust sets both only when it creates
    the changelog; an existing one keeps its own (``kafka-configs.sh`` changes it)."""
    return app.Table(
        "state",
        key_type=str,
        value_type=None,
        partitions=app.conf.topic_partitions,
        extra_topic_configs=replication_config(app.conf.topic_replication_factor),
    )


class TableReads(Mapping[str, Any]):
    """Reads of a Faust table straight from its store, for the reconciler.

    ``Table.get`` goes through the sensors and, for a missing key, through ``__missing__`` and
    a ``KeyError``: several Python calls per read, and an event reads about ten keys. Reads
    need neither (only writes go to the changelog), so they go to the store, which holds the
    same values. Writes still go through the table itself (:mod:`processors.handlers`).
    """

    def __init__(self, table: TableT[str, Any]) -> None:
        self._table = table

    def get(self, key: str, default: Any = None) -> Any:
        store = self._table.data
        # the memory store keeps a plain dict: its get answers a missing key without the
        # KeyError that Mapping.get (the store's own) raises and catches — most reads of a
        # release miss (a company's review, a user's id before it is known), and that
        # exception was an eighth of the planner's samples while it released parked operations
        inner = getattr(store, "data", None)
        if type(inner) is dict:
            return inner.get(key, default)
        return store.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._table.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.data.keys())

    def __len__(self) -> int:
        return len(self._table.data)
