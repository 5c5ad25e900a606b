"""The planner's vocabulary: what it knows, what it decides. Plain frozen dataclasses, no I/O.

What a parked operation waits for — its *needs* — is :class:`processors.needs.Need`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from processors.needs import Need
from schemas.directory import ApplicationType, EntityType
from schemas.directory_operations import DirectoryOperation, GrantDirectoryAccess, RevokeDirectoryAccess
from schemas.operations import AssignAccess, CloudOperation, RevokeAccess, RevokeAccessEntry


class Outcome(StrEnum):
    """What became of one directory event (label of ``vudsync_planner_events_total``)."""

    PLANNED = "planned"  # operations sent (some may be parked beside them)
    PARKED = "parked"  # every operation waits for a prerequisite
    HELD = "held"  # a deletion waits for the accidental-delete gate
    BLOCKED = "blocked"  # nothing can go: the application does not match the cloud
    NO_CHANGE = "no_change"  # a newer version with the same state
    OBSERVED = "observed"  # an application instance: published as a fact, decided per partition
    STALE = "stale"  # version not newer than the one seen: a no-op
    REDELIVERED = "redelivered"  # an uncommitted event seen again: planned again, same ids


class VerdictStatus(StrEnum):
    OK = "ok"  # matches the cloud's registry, or there is no instance on premise
    REGISTER = "register"  # the cloud has none registered: the planner registers it
    UNVERIFIED = "unverified"  # the cloud's registry is not known yet (`vudsync connect`)
    MISMATCH = "mismatch"  # URI or license fingerprint differ


@dataclass(frozen=True)
class Verdict:
    status: VerdictStatus
    differing: tuple[str, ...] = ()  # field names ("uri", "license key"), never values

    @property
    def blocked(self) -> bool:
        return self.status in (VerdictStatus.UNVERIFIED, VerdictStatus.MISMATCH)


UNVERIFIED = Verdict(VerdictStatus.UNVERIFIED)
VERIFIED = Verdict(VerdictStatus.OK)


@dataclass(frozen=True)
class InstanceSeen:
    """The on-premise instance of one application (from events or ``connect``)."""

    uri: str
    license_fingerprint: str
    version: int
    present: bool = True


@dataclass(frozen=True)
class Registry:
    """The cloud's registered instance of one application (``present=False``: none)."""

    present: bool
    uri: str | None = None
    license_fingerprint: str | None = None


class Decision(StrEnum):
    """The accidental-delete gate's word on one deletion."""

    GRANTED = "granted"  # under the threshold
    APPROVED = "approved"  # held, then approved by an operator
    REJECTED = "rejected"  # held, then rejected: never applied

    @property
    def releases(self) -> bool:
        return self is not Decision.REJECTED


@dataclass(frozen=True)
class Identities:
    """What one partition knows of the cloud, learned from results, facts and ``connect``."""

    users: Mapping[str, str] = field(default_factory=dict)  # user id -> cloud id
    companies: Mapping[str, str] = field(default_factory=dict)  # company id -> cloud id
    catalogue: Mapping[str, bool] = field(default_factory=dict)  # <app>:<kind>:<name> -> exists
    applications: Mapping[ApplicationType, Verdict] = field(default_factory=dict)
    deletions: Mapping[str, Decision] = field(default_factory=dict)  # candidate -> decision
    # `vudsync connect` has succeeded (processors.connection); a plain Identities() in the pure
    # planner's tests stands for a connected installation, the reconciler always reads the table
    connected: bool = True
    reviews: Mapping[str, bool] = field(default_factory=dict)  # company id -> waits for review
    # writeback: "<user>|<company>" -> the pair's processors.writeback.PairState
    writeback: Mapping[str, Any] = field(default_factory=dict)

    def verdict(self, app: ApplicationType) -> Verdict:
        return self.applications.get(app, UNVERIFIED)


@dataclass(frozen=True)
class EntityView:
    """The last seen state of one entity (the processor's table value)."""

    version: int
    state: object | None
    deleted: bool = False


@dataclass(frozen=True)
class JournalEntry:
    entity: EntityType
    entity_id: str
    code: str
    message: str  # names fields, never secrets or personal data beyond ids
    level: str = "info"  # info | warning | error
    version: int = 0
    committed_at: datetime | None = None
    ref: str = ""  # distinguishes entries of one entity version (e.g. the registry they saw)


#: what the planner plans: cloud operations, and the writeback's directory operations (which wait
#: in the table only for the accidental-delete gate: a cloud revoke written back to the store)
Planned = CloudOperation | DirectoryOperation
DeletesFrom = Literal["cloud", "directory"]


@dataclass(frozen=True)
class Parked:
    """An operation held until its needs are met. ``apps`` are the applications it touches,
    ``deletion`` the gate candidate it waits for (deletions only), ``tag`` the repair it belongs
    to (``vudsync verify --repair``; its ids are derived from it). ``behind``: an assignment
    planned in the same step as its user's upsert, which was sent then — it goes behind that
    upsert on the user's aggregate and never waits for the user's cloud id
    (:func:`processors.planner.needs_of`)."""

    operation: Planned
    needs: tuple[Need, ...]
    apps: tuple[ApplicationType, ...] = ()
    deletion: str | None = None
    tag: str = ""
    behind: bool = False


@dataclass(frozen=True)
class DeletionRequest:
    """A deletion for the accidental-delete gate: one on premise (deletes from the cloud), or a
    revoke in the cloud the writeback would apply to the store (deletes from the directory)."""

    candidate: str
    entity: EntityType
    entity_id: str
    version: int
    committed_at: datetime
    deletes_from: DeletesFrom = "cloud"  # the writeback's revokes in the store: "directory"


@dataclass(frozen=True)
class Plan:
    """The planner's answer to one event. ``view`` is the new table value (None: keep)."""

    outcome: Outcome
    view: EntityView | None
    operations: tuple[CloudOperation, ...] = ()
    parked: tuple[Parked, ...] = ()
    journal: tuple[JournalEntry, ...] = ()
    instance: tuple[ApplicationType, InstanceSeen] | None = None  # publish to every partition
    deletion: DeletionRequest | None = None
    dropped: tuple[CloudOperation, ...] = ()  # rejected deletions: never sent
    directory_ops: tuple[DirectoryOperation, ...] = ()  # writeback: to the directory sink


@dataclass(frozen=True)
class PlannerSettings:
    """The planner's knobs (from ``kernel.settings.Settings``)."""

    deletes_threshold: int = 500  # more deletions than this in the window are held
    deletes_threshold_percent: float | None = None  # … or more than this % of live entities
    deletes_window_seconds: float = 3600.0  # … counted by commit time
    deletes_settle_seconds: float = 5.0  # deletions wait until none came for this long (0: at once)
    staging: bool = False  # plan as ever, but stage what would be sent (processors.staging)


ACCESS_OPS = (
    AssignAccess,
    RevokeAccess,
    RevokeAccessEntry,
)  # isinstance() against a tuple: no union per call


DIRECTORY_OPERATIONS = (GrantDirectoryAccess, RevokeDirectoryAccess)


def slot_of(op: Planned) -> str:
    """Operations in one slot of one entity supersede each other (the newest wins)."""
    if isinstance(op, RevokeAccessEntry):  # one entry: never superseded by the whole set's plan
        return f"access:{op.company_id}|{op.application.value}/{op.catalogue}/{op.name}"
    if isinstance(op, ACCESS_OPS):
        return f"access:{op.company_id}"
    if isinstance(op, DIRECTORY_OPERATIONS):  # the writeback's: one entry in the store
        return f"directory:{op.company_id}|{op.entry}"
    return op.kind.split(".", 1)[0]
