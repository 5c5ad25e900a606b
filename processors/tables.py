"""The planner's table: the only state shared between messages.

One table, ``state``, co-partitioned with every input topic; the key prefixes and what they
hold are described in :mod:`processors.engine`. One table rather than several so that all of
a partition's state changes go through *one* changelog partition, in the order they were made.

No ``GlobalTable``: facts every partition needs are copied into each partition's own keys
(see :mod:`processors.engine` for why).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.types import TableT


def declare_table(app: faust.App) -> TableT[str, Any]:
    return app.Table("state", key_type=str, value_type=None, partitions=app.conf.topic_partitions)
