"""What one partition knows of the cloud, read from its copies of the facts. Pure.

The planner's rules take :class:`~processors.model.Identities` (plain mappings); here they are
views over the partition's ``k|`` keys, read through the message's :class:`~processors.effects.Tx`
so that a fact written while handling the message is seen at once. An application's *verdict*
(does the on-premise instance match the cloud's registry?) is computed from two of those keys
when the planner asks — most events never do — and cached on the very values it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from processors import connection, keys, planner
from processors import reviews as reviews_rule
from processors.effects import Tx
from processors.keys import Known
from processors.model import Decision, Identities, InstanceSeen, Registry, Verdict
from processors.writeback import PairState
from schemas.directory import ApplicationType


class FactView(Mapping[str, Any]):
    """One partition's facts of one kind, as the planner's ``Identities`` mappings."""

    __slots__ = ("_convert", "_prefix", "_tx")

    def __init__(self, tx: Tx, prefix: str, convert: Callable[[Any], Any] | None = None) -> None:
        self._tx, self._prefix, self._convert = tx, prefix, convert

    def __getitem__(self, key: str) -> Any:
        value = self._tx.get(self._prefix + key)
        if value is None:
            raise KeyError(key)
        return self._convert(value) if self._convert else value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._tx.get(self._prefix + key) is not None

    def get(self, key: str, default: Any = None) -> Any:  # Mapping.get goes through KeyError
        value = self._tx.get(self._prefix + key)
        if value is None:
            return default
        return self._convert(value) if self._convert else value

    def __iter__(self) -> Iterator[str]:  # slow: for inspection, never on the hot path
        n = len(self._prefix)
        stored = {*self._tx.store.keys(), *self._tx.writes, *self._tx.late}
        return iter(
            sorted(k[n:] for k in stored if k.startswith(self._prefix) and self._tx.get(k) is not None)
        )

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Verdicts(Mapping[ApplicationType, Verdict]):
    """The verdict on each application, computed when the planner asks (most events never do)."""

    __slots__ = ("_knowledge", "_p", "_tx")

    def __init__(self, knowledge: Knowledge, tx: Tx, p: int) -> None:
        self._knowledge, self._tx, self._p = knowledge, tx, p

    def __getitem__(self, app: ApplicationType) -> Verdict:
        return self._knowledge.verdict(self._tx, self._p, app)

    def get(self, app: ApplicationType, default: Any = None) -> Any:  # every key is present
        return self._knowledge.verdict(self._tx, self._p, app)

    def __iter__(self) -> Iterator[ApplicationType]:
        return iter(ApplicationType)

    def __len__(self) -> int:
        return len(ApplicationType)


class Knowledge:
    """Reads of a partition's facts; holds the verdict cache (one per worker)."""

    def __init__(self) -> None:
        self._verdicts: dict[tuple[int, ApplicationType], tuple[Any, Any, Verdict]] = {}
        self._verdict_keys: dict[tuple[int, ApplicationType], tuple[str, str]] = {}
        self._prefixes: dict[int, tuple[str, ...]] = {}

    def instance(self, tx: Tx, p: int, app: ApplicationType) -> InstanceSeen | None:
        raw = tx.get(keys.instance_key(p, app))
        if raw is None:
            return None
        return InstanceSeen(raw["uri"], raw["fp"], raw["version"], raw["present"])

    def registry(self, tx: Tx, p: int, app: ApplicationType) -> Registry | None:
        raw = tx.get(keys.registry_key(p, app))
        return None if raw is None else Registry(raw["present"], raw["uri"], raw["fp"])

    def verdict(self, tx: Tx, p: int, app: ApplicationType) -> Verdict:
        # cached on the very table values it was computed from (a hit is an identity check)
        pair = self._verdict_keys.get((p, app))
        if pair is None:
            pair = self._verdict_keys[(p, app)] = (keys.instance_key(p, app), keys.registry_key(p, app))
        raw_instance = tx.get(pair[0])
        raw_registry = tx.get(pair[1])
        cached = self._verdicts.get((p, app))
        if cached is not None and cached[0] is raw_instance and cached[1] is raw_registry:
            return cached[2]
        verdict = planner.instance_verdict(self.instance(tx, p, app), self.registry(tx, p, app))
        self._verdicts[(p, app)] = (raw_instance, raw_registry, verdict)
        return verdict

    def identities(self, tx: Tx, p: int) -> Identities:
        # one per event: the partition's prefixes are built once
        prefixes = self._prefixes.get(p)
        if prefixes is None:
            prefixes = self._prefixes[p] = tuple(keys.known_prefix(p, k) for k in _IDENTITIES)
        users, companies, catalogue, deletions, reviews = prefixes
        return Identities(
            users=FactView(tx, users),
            companies=FactView(tx, companies),
            catalogue=FactView(tx, catalogue, _present),
            applications=_Verdicts(self, tx, p),
            deletions=FactView(tx, deletions, Decision),
            connected=connection.is_connected(tx, p),
            reviews=FactView(tx, reviews, reviews_rule.is_waiting),
            writeback=FactView(tx, keys.WRITEBACK, PairState.from_json),
        )


_IDENTITIES = (Known.USER, Known.COMPANY, Known.CATALOGUE, Known.DELETION, Known.REVIEW)


def _present(value: Any) -> bool:
    return bool(value["present"])
