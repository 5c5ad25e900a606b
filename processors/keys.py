"""The planner table's key layout: typed keys, their builders and their parser. Pure.

One table per partition (:mod:`processors.tables`), key prefixes:

=====================  ===============================================================
``e|<entity>:<id>``    last seen version and state, and the *uncommitted history*
``p|<entity>:<id>``    operations parked for that entity, with their needs
``k|<p>|<fact key>``   partition ``p``'s copy of a fact (cloud ids, registry, catalogue, …)
``n|<p>|<need>[|i]``   which entities have operations waiting for ``need`` (in buckets)
``c|<p>|live``         live entities on partition ``p`` (for the percentage threshold)
``g|…``                the accidental-delete gate (partition 0 only)
``w|<user>|<company>`` the writeback's state of the pair: last feed position, both sides' changes
=====================  ===============================================================

``k|<p>|`` holds, besides the facts (``<kind>:<subject>`` as ``PlannerFact.key`` spells it),
the gate's decisions copied to the partition (``deletion:<candidate>``) and what the
partition last said of each application instance (``reviewed:<application>``). The connection
(``connect:installation``) and the companies waiting for review (``review:<company id>``) are
facts like the others. The gate's
keys: ``g|gate`` (its state), ``g|seq`` (the range of held requests), ``g|h|<n>`` (held
request ``n``), ``g|hc|<candidate>`` (the number under which a candidate is held) and
``g|d|<candidate>`` (the decision on a candidate, for a request asked again).

These strings are the on-disk format: the planner's changelog topics hold them and an
existing installation must read them back, so every builder here produces exactly the bytes
it always did (``tests/unit/test_planner_keys.py`` pins them). The builders are plain
functions over strings because they run several times per event; the typed keys
(:func:`parse`, ``encode()``) are for inspection and tests. The one ambiguity of the layout:
a need whose subject ends in ``|<digits>`` reads back as a bucket key.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from processors.needs import Need
from schemas.directory import ApplicationType, EntityType

ENTITY = "e|"
PARKED = "p|"
KNOWN = "k|"
INDEX = "n|"
COUNT = "c|"
GATE = "g|"
WRITEBACK = "w|"

GATE_STATE = "g|gate"
GATE_SEQ = "g|seq"


class Known(StrEnum):
    """What a ``k|`` key holds: a fact's kind (``FactKind``'s values), or the partition's own
    records of the gate's decisions and of its reviews."""

    USER = "user"
    COMPANY = "company"
    CATALOGUE = "catalogue"
    REGISTRY = "registry"
    INSTANCE = "instance"
    DELETION = "deletion"
    REVIEWED = "reviewed"
    CONNECT = "connect"
    REVIEW = "review"


# -- builders (the hot path) ----------------------------------------------------------------


def entity_ref(entity: EntityType, entity_id: str) -> str:
    """``<entity>:<id>``: what ``e|`` and ``p|`` keys name, and what the need index lists."""
    return f"{entity._value_}:{entity_id}"


def entity_key(ref: str) -> str:
    return ENTITY + ref


def parked_key(ref: str) -> str:
    return PARKED + ref


def known_prefix(partition: int, kind: Known) -> str:
    """The prefix of partition ``partition``'s ``kind`` keys (subject follows)."""
    return f"k|{partition}|{kind._value_}:"


def known_key(partition: int, kind: Known, subject: str) -> str:
    return f"k|{partition}|{kind._value_}:{subject}"


def fact_key(partition: int, key: str) -> str:
    """Partition ``partition``'s copy of the fact keyed ``key`` (``PlannerFact.key``)."""
    return f"k|{partition}|{key}"


def instance_key(partition: int, app: ApplicationType) -> str:
    return known_key(partition, Known.INSTANCE, app._value_)


def registry_key(partition: int, app: ApplicationType) -> str:
    return known_key(partition, Known.REGISTRY, app._value_)


def index_key(partition: int, need: str) -> str:
    """The bucket count of the index of entities waiting for ``need`` (encoded)."""
    return f"n|{partition}|{need}"


def bucket_key(partition: int, need: str, bucket: int) -> str:
    return f"n|{partition}|{need}|{bucket}"


def live_key(partition: int) -> str:
    return f"c|{partition}|live"


def gate_held_key(seq: int) -> str:
    return f"g|h|{seq}"


def gate_candidate_key(candidate: str) -> str:
    """The number ``candidate`` is held under."""
    return f"g|hc|{candidate}"


def gate_decided_key(candidate: str) -> str:
    return f"g|d|{candidate}"


def writeback_key(user_id: str, company_id: str) -> str:
    """``w|<user>|<company>``: the writeback's state of the pair (:mod:`processors.writeback`),
    on the user's partition (``vud.cloud.changes`` is keyed and partitioned like the users)."""
    return f"{WRITEBACK}{user_id}|{company_id}"


def is_parked(key: str) -> bool:
    return key.startswith(PARKED)


# -- typed keys -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntityKey:
    entity: EntityType
    entity_id: str

    def encode(self) -> str:
        return entity_key(entity_ref(self.entity, self.entity_id))


@dataclass(frozen=True, slots=True)
class ParkedKey:
    entity: EntityType
    entity_id: str

    def encode(self) -> str:
        return parked_key(entity_ref(self.entity, self.entity_id))


@dataclass(frozen=True, slots=True)
class KnownKey:
    partition: int
    kind: Known
    subject: str

    def encode(self) -> str:
        return known_key(self.partition, self.kind, self.subject)


@dataclass(frozen=True, slots=True)
class IndexKey:
    """The need index: its bucket count (``bucket`` None) or one bucket of entity refs."""

    partition: int
    need: Need
    bucket: int | None = None

    def encode(self) -> str:
        if self.bucket is None:
            return index_key(self.partition, self.need.encode())
        return bucket_key(self.partition, self.need.encode(), self.bucket)


@dataclass(frozen=True, slots=True)
class LiveKey:
    partition: int

    def encode(self) -> str:
        return live_key(self.partition)


@dataclass(frozen=True, slots=True)
class GateKey:
    """A key of the gate: ``name`` is ``gate`` or ``seq`` (no ``arg``), ``h`` (arg: the held
    request's number), ``hc`` or ``d`` (arg: the candidate)."""

    name: str
    arg: str | None = None

    def encode(self) -> str:
        return f"{GATE}{self.name}" if self.arg is None else f"{GATE}{self.name}|{self.arg}"


@dataclass(frozen=True, slots=True)
class WritebackKey:
    user_id: str
    company_id: str

    def encode(self) -> str:
        return writeback_key(self.user_id, self.company_id)


TableKey = EntityKey | ParkedKey | KnownKey | IndexKey | LiveKey | GateKey | WritebackKey
_GATE_SINGLE = {"gate", "seq"}
_GATE_ARG = {"h", "hc", "d"}


def _ref(text: str) -> tuple[EntityType, str]:
    entity, sep, entity_id = text.partition(":")
    if not sep or not entity_id:
        raise ValueError(f"not an entity ref: {text!r}")
    return EntityType(entity), entity_id


def _partition(text: str) -> tuple[int, str]:
    p, sep, rest = text.partition("|")
    if not sep or not p.isdigit():
        raise ValueError(f"no partition in {text!r}")
    return int(p), rest


def parse(key: str) -> TableKey:
    """The typed key ``key`` encodes (``parse(k).encode() == k``); ValueError when it is none."""
    prefix, rest = key[:2], key[2:]
    if prefix == ENTITY:
        return EntityKey(*_ref(rest))
    if prefix == PARKED:
        return ParkedKey(*_ref(rest))
    if prefix == KNOWN:
        p, rest = _partition(rest)
        kind, sep, subject = rest.partition(":")
        if not sep or not subject:
            raise ValueError(f"not a table key: {key!r}")
        return KnownKey(p, Known(kind), subject)
    if prefix == INDEX:
        p, rest = _partition(rest)
        need, sep, bucket = rest.rpartition("|")
        if sep and bucket.isdigit():
            return IndexKey(p, Need.decode(need), int(bucket))
        return IndexKey(p, Need.decode(rest))
    if prefix == COUNT:
        p, rest = _partition(rest)
        if rest == "live":
            return LiveKey(p)
    if prefix == WRITEBACK:
        user_id, sep, company_id = rest.partition("|")
        if sep and user_id and company_id:
            return WritebackKey(user_id, company_id)
    if prefix == GATE:
        if rest in _GATE_SINGLE:
            return GateKey(rest)
        name, sep, arg = rest.partition("|")
        if sep and arg and name in _GATE_ARG:
            return GateKey(name, arg)
    raise ValueError(f"not a table key: {key!r}")
