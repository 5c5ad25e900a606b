"""The table keys the planner's gauges read, kept as they are written. Pure.

Every few seconds the gauges count what waits in the table (``p|`` keys) and the companies
waiting for review (``k|0|review:``). Finding those keys by walking the whole table cost a
Python call per key — half a million keys at 100,000 users, two walks per refresh — and
classifying every parked item again (its needs, the parse of its commit time) cost as much
again while tens of thousands of assignments wait in an initial sync (~6 % of the planner's
profile together). Instead:

- :class:`WatchedKeys` holds a *superset* of the watched keys: every such key the agent
  writes (:meth:`WatchedKeys.wrote`), and the keys found by one walk of the table whenever the
  table may have gained keys behind the agent's back — at start, after a recovery from the
  changelog, after a rebalance (:meth:`WatchedKeys.stale`). A key in the set that the table no
  longer holds reads as nothing: the counts never depend on the set being exact.
- :class:`WaitingSummaries` remembers what each ``p|`` value came to (its :class:`Waiting`
  counts and oldest commit time) *by the value object*: a value is summarised again only when
  the table holds another object under the key (the agent wrote it, or a recovery did — the
  memory store keeps the object written; a store that deserialises on every read, RocksDB,
  simply gets no hits). No invalidation to forget.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from processors.parking import Waiting, count_waiting


class WatchedKeys:
    """A superset of the table's keys that start with one of ``prefixes``."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        self.prefixes = tuple(prefixes)
        self._keys: set[str] = set()
        self._stale = True  # nothing seen yet: the first read walks the table

    def watches(self, key: str) -> bool:
        return key.startswith(self.prefixes)

    def wrote(self, key: str, deleted: bool) -> None:
        """The agent wrote ``key`` (None: deleted it)."""
        if not key.startswith(self.prefixes):
            return
        if deleted:
            self._keys.discard(key)
        else:
            self._keys.add(key)

    def stale(self) -> None:
        """The table may hold keys the agent did not write (a recovery, a rebalance): the next
        read walks it once."""
        self._stale = True

    def keys(self, store: Iterable[str], prefix: str) -> list[str]:
        """The watched keys that start with ``prefix`` (one of :attr:`prefixes` or longer);
        ``store``: the table's keys, walked only when stale."""
        if self._stale:
            prefixes = self.prefixes
            self._keys = {k for k in store if k.startswith(prefixes)}
            self._stale = False
        return [k for k in self._keys if k.startswith(prefix)]


class WaitingSummaries:
    """What each parked value comes to, remembered by the value object (see the module)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[Any, Waiting, datetime | None]] = {}

    def summarise(self, store: Mapping[str, Any], keys: Iterable[str]) -> tuple[Waiting, datetime | None]:
        """The operations waiting under ``keys`` (held, blocked, parked) and the commit time of
        the change behind the oldest of them (None: nothing waits)."""
        parked = held = blocked = 0
        oldest: datetime | None = None
        seen = self._seen
        now_seen: dict[str, tuple[Any, Waiting, datetime | None]] = {}
        for key in keys:
            value = store.get(key)
            if not value:
                continue
            known = seen.get(key)
            if known is None or known[0] is not value:
                known = (value, count_waiting((value,)), oldest_committed(value))
            now_seen[key] = known
            _, counts, at = known
            parked += counts.parked
            held += counts.held
            blocked += counts.blocked
            if at is not None and (oldest is None or at < oldest):
                oldest = at
        self._seen = now_seen  # forget the keys no longer asked about (released, revoked)
        return Waiting(parked, held, blocked), oldest


def oldest_committed(items: Iterable[Mapping[str, Any]]) -> datetime | None:
    """When the change behind the oldest of a ``p|`` value's items was committed: on premise
    for a cloud operation, in the cloud for a writeback's directory operation."""
    oldest: datetime | None = None
    for item in items:
        op = item["op"]
        at = datetime.fromisoformat(op.get("source_committed_at") or op["cloud_changed_at"])
        if oldest is None or at < oldest:
            oldest = at
    return oldest
