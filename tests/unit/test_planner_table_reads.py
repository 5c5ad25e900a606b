"""TableReads: the reconciler's reads of the Faust table, straight from its store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import faust

from processors.tables import TableReads, declare_table


class _Table:
    def __init__(self, data: Any) -> None:
        self.data = data


class _KeyErrorStore(dict[str, Any]):
    """A store without an inner dict (as RocksDB's): read through its own get."""


def test_the_memory_store_is_read_through_its_dict_and_a_missing_key_gives_the_default() -> None:
    app = faust.App("test-table-reads", store="memory://", autodiscover=False)
    table = declare_table(app)
    table.data["k|0|user:u1"] = "cu-1"
    reads = TableReads(table)
    assert reads.get("k|0|user:u1") == "cu-1"
    assert reads.get("k|0|review:c1") is None
    assert reads.get("k|0|review:c1", False) is False
    assert reads["k|0|user:u1"] == "cu-1" and list(reads) == ["k|0|user:u1"] and len(reads) == 1


def test_a_store_without_an_inner_dict_is_read_through_its_own_get() -> None:
    class Store(_KeyErrorStore):
        reads: list[str] = []

        def get(self, key: str, default: Any = None) -> Any:
            self.reads.append(key)
            return super().get(key, default)

        def __iter__(self) -> Iterator[str]:
            return super().__iter__()

    store = Store({"e|user:u1": {"v": 1}})
    reads = TableReads(_Table(store))  # type: ignore[arg-type]
    assert reads.get("e|user:u1") == {"v": 1} and reads.get("e|user:u2", 0) == 0
    assert store.reads == ["e|user:u1", "e|user:u2"]
