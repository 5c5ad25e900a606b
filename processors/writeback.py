"""Writeback: which of the cloud's access changes the directory must hold. Pure.

``plan_writeback(previous, change, held, known, now=…)`` → :class:`Writeback`: the directory
operations for the directory sink, the journal entries, and the pair's new state. No I/O, no
clock: the same inputs always give the same decisions, with the same operation ids (a replay
of ``vud.cloud.changes`` plans nothing new: its events are at or below the pair's ``seq``).

What reaches the directory (issue 16, docs/domain.md rule 6):

- only **cloud-origin** entries (granted by anyone but vudsync's client) are written back, as
  rows of origin ``cloud``; an entry of origin ``directory`` in the cloud is vudsync's own
  write coming back through the feed — an *echo*: counted, never written back;
- an entry the cloud no longer holds is removed on premise if the store holds it as origin
  ``cloud``; one the directory granted itself only when the cloud's revoke is the later
  change (``any_origin``: the conflict rule below);
- an entry the cloud holds as the cloud's that the directory removed later is revoked in the
  cloud (``Writeback.revoke_in_cloud``: the rule gives it to the directory);
- only for a user known on premise (its directory state is on this partition) in a company
  known on premise and linked (the planner has its cloud id). A change that comes before
  either is known *waits* (outcome ``waiting``, :attr:`Writeback.waits_for`: the reconciler
  parks it and decides it again when the user's directory state or the company's link
  arrives — they come on other topics, in no order with ``vud.cloud.changes``) and leaves the
  pair's position where it was; a user removed on premise is a journal entry with a reason
  (``writeback_rejected`` + the metric), never a silent drop. Whether
  the role, layout group or module exists in the on-premise catalogue is decided by the
  directory sink, in the store's own transaction (the catalogue's rows are on other
  partitions);
- a change at or below the last feed position seen for the pair is ignored (replays, a full
  read after ``410``).

**Conflict rule** (one entry changed on both sides before either saw the other's change):
the later change by source time wins — the directory's by the entry's own change time in the
store (``UserChanged.access_changed_at``; the event's commit time for an event without it), the
cloud's by the entry's ``modified_at`` (a removal: the feed item's time) — and a tie goes to
the directory. Each conflict is a journal entry naming both sides (``writeback_conflict``,
``vudsync_writeback_conflicts_total``). :func:`winner` is the rule;
``tests/unit/test_writeback_interleavings.py`` checks the pipeline ends as it says, on both
sides, for any interleaving of the propagation steps; ``tests/unit/test_writeback.py`` that a
replay decides the same and any delivery order ends at the latest cloud state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from processors.model import JournalEntry
from processors.needs import Need
from schemas.cloud_changes import CloudAccessChanged, CloudAccessEntry
from schemas.directory import ApplicationType, EntityType, UserState
from schemas.directory_operations import (
    DirectoryOperation,
    GrantDirectoryAccess,
    RevokeDirectoryAccess,
    directory_operation_id,
)

Side = Literal["directory", "cloud"]
#: the store's kind of each ``ServiceAccess`` field
_KINDS = (("roles", "role"), ("layout_groups", "layout_group"), ("modules", "module"))

#: journal codes (and the planner's metric labels: ``reason`` is what follows the prefix)
REJECTED_UNKNOWN_USER = "writeback_rejected_unknown_user"
REJECTED_UNKNOWN_COMPANY = "writeback_rejected_unknown_company"  # no longer planned: it waits
WAITING_USER = "writeback_waiting_for_user"
WAITING_COMPANY = "writeback_waiting_for_company"
CONFLICT = "writeback_conflict"
ECHO = "writeback_echo_suppressed"
CLOUD_REMOVED_DIRECTORY_ENTRY = "writeback_directory_entry_removed_in_cloud"


@dataclass(frozen=True, slots=True)
class Change:
    """One side's last known change of one entry: held or not since ``at`` (source time)."""

    present: bool
    at: datetime
    origin: str = ""  # the cloud's side, held: directory | cloud
    version: int = 0  # the directory's side: the user event's version (change-log position)

    def to_json(self) -> list[Any]:
        return [self.present, self.at.isoformat(), self.origin, self.version]

    @staticmethod
    def from_json(raw: list[Any]) -> Change:
        origin = str(raw[2]) if len(raw) > 2 else ""
        version = int(raw[3]) if len(raw) > 3 else 0
        return Change(bool(raw[0]), datetime.fromisoformat(raw[1]), origin, version)


def winner(directory: Change | None, cloud: Change) -> Side:
    """The rule: the later change by source time wins, a tie goes to the directory; a side
    with no change of the entry since the pair is tracked never wins against one that has."""
    if directory is None:
        return "cloud"
    return "cloud" if cloud.at > directory.at else "directory"


@dataclass(frozen=True)
class PairState:
    """What the planner keeps per (user, company) (table key ``w|<user>|<company>``): the last
    feed position seen; the cloud's last known change of each entry; the directory's changes of
    entries since the pair is tracked (``directory``, :func:`directory_changed`); the
    writeback's own operations not yet seen in a directory event (``pending``: entry → True
    granted, False revoked: until the store's next change of the entry shows it, the planner's
    view of the store lags behind them); and the cloud change each entry was last written back
    from (``seen``: its time — a later cloud change the directory has not seen).

    Serialised compactly (``c``, ``d``, ``w``, ``s``); a value without the newer keys reads as
    empty."""

    seq: int
    cloud: Mapping[str, Change] = field(default_factory=dict)
    directory: Mapping[str, Change] = field(default_factory=dict)
    pending: Mapping[str, bool] = field(default_factory=dict)
    seen: Mapping[str, datetime] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "c": {k: v.to_json() for k, v in sorted(self.cloud.items())},
            "d": {k: v.to_json() for k, v in sorted(self.directory.items())},
            "w": dict(sorted(self.pending.items())),
            "s": {k: v.isoformat() for k, v in sorted(self.seen.items())},
        }

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> PairState:
        return PairState(
            int(raw["seq"]),
            {k: Change.from_json(v) for k, v in raw.get("c", {}).items()},
            {k: Change.from_json(v) for k, v in raw.get("d", {}).items()},
            {k: bool(v) for k, v in raw.get("w", {}).items()},
            {k: datetime.fromisoformat(v) for k, v in raw.get("s", {}).items()},
        )

    def held_as_cloud(self, key: str, held: Mapping[str, str]) -> bool:
        """Does the store hold ``key`` as the cloud's, counting the writeback's operations on
        their way (the last directory event may not show them yet)?"""
        pending = self.pending.get(key)
        return pending if pending is not None else held.get(key) == "cloud"

    def is_unseen(self, key: str, cloud: Change) -> bool:
        """Is ``cloud`` a change of the entry the directory has not seen (later than the one
        it was written back from)?"""
        seen = self.seen.get(key)
        return seen is not None and cloud.at > seen


@dataclass(frozen=True)
class Writeback:
    """What one cloud change comes to: ``outcome`` is ``stale`` (at or below the pair's
    position: nothing else), ``waiting`` (for ``waits_for``: no state, the position is not
    advanced), ``rejected``, ``planned`` or ``no_change``."""

    outcome: str
    state: PairState | None
    operations: tuple[DirectoryOperation, ...] = ()
    journal: tuple[JournalEntry, ...] = ()
    #: entries the cloud holds as the cloud's that the directory removed later (the rule gives
    #: them to the directory): revoke them in the cloud — (entry, the directory's change)
    revoke_in_cloud: tuple[tuple[str, Change], ...] = ()
    #: ``waiting``: what the change waits for — the user's directory state
    #: (``on_premise:<user>``) or the company's link (``company:<company>``)
    waits_for: Need | None = None


def entry_key(application: str, kind: str, name: str) -> str:
    """``<application>/<kind>/<name>``, the store's kind (``role`` …)."""
    return f"{application}/{kind}/{name}"


def held_entries(state: UserState | None, company_id: str) -> dict[str, str]:
    """What the store holds for the user in the company: entry → origin."""
    held: dict[str, str] = {}
    for company in state.access if state is not None else ():
        if company.company_id != company_id:
            continue
        for origin, services in (("directory", company.services), ("cloud", company.cloud_origin)):
            for app, svc in services.items():
                for attr, kind in _KINDS:
                    for name in getattr(svc, attr):
                        held.setdefault(entry_key(app.value, kind, name), origin)
    return held


def plan_writeback(
    previous: PairState | None,
    change: CloudAccessChanged,
    held: Mapping[str, str] | None,
    *,
    company_known: bool,
    now: datetime,
    user_removed: bool = False,
) -> Writeback:
    """Decide one cloud change of (user, company). ``held``: the store's entries of the pair
    (entry → origin) as the planner last saw them, None when the user is not known on
    premise (yet: the change waits for it); ``company_known``: the company is known on premise
    and linked (else the change waits for it); ``user_removed``: the user was removed on
    premise (rejected)."""
    if previous is not None and change.feed_seq <= previous.seq:
        return Writeback("stale", None)

    def note(code: str, message: str, level: str, ref: str = "") -> JournalEntry:
        return JournalEntry(
            EntityType.USER, change.user_id, code, message, level, change.feed_seq, change.changed_at, ref
        )

    if not user_removed and (held is None or not company_known):
        # the link comes on another topic: wait for it, the pair's position untouched, so the
        # change is decided in full once it is known (a rejection here would advance the
        # position past a grant that must reach the store)
        need, code, what = (
            (
                Need.on_premise(change.user_id),
                WAITING_USER,
                f"user {change.user_id} is not known on premise yet",
            )
            if held is None
            else (
                Need.company(change.company_id),
                WAITING_COMPANY,
                f"company {change.company_id} is not known on premise or not linked yet",
            )
        )
        message = f"the cloud's access of {change.user_id} in {change.company_id} waits: {what}"
        return Writeback(
            "waiting", None, (), (note(code, message, "info", change.company_id),), waits_for=need
        )

    old_cloud = dict(previous.cloud) if previous is not None else {}
    directory = dict(previous.directory) if previous is not None else {}
    pending = dict(previous.pending) if previous is not None else {}
    seen = dict(previous.seen) if previous is not None else {}
    now_cloud: dict[str, tuple[Change, CloudAccessEntry]] = {}
    for e in () if change.deleted else change.entries:
        now_cloud[entry_key(e.application.value, e.kind, e.name)] = (Change(True, e.modified_at, e.origin), e)
    cloud: dict[str, Change] = {k: c for k, (c, _) in now_cloud.items()}
    for key, was in old_cloud.items():
        if key not in cloud:  # removed in the cloud by this change (or known removed before)
            cloud[key] = was if not was.present else Change(False, change.changed_at)
    state = PairState(change.feed_seq, cloud, directory, pending, seen)

    if user_removed or held is None:
        message = (
            f"the cloud's access of {change.user_id} in {change.company_id} cannot reach the "
            f"directory: user {change.user_id} was removed on premise"
        )
        return Writeback(
            "rejected", state, (), (note(REJECTED_UNKNOWN_USER, message, "warning", change.company_id),)
        )

    ops: list[DirectoryOperation] = []
    journal: list[JournalEntry] = []
    revoke_in_cloud: list[tuple[str, Change]] = []
    for key in sorted(cloud):
        now_side = cloud[key]
        if old_cloud.get(key) == now_side:
            continue  # the cloud did not change this entry
        entry = now_cloud.get(key)
        if entry is not None and entry[1].origin == "directory":
            journal.append(
                note(ECHO, f"{key} is the directory's own write", "info", f"{change.company_id}|{key}")
            )
            continue
        origin = held.get(key)
        as_cloud = state.held_as_cloud(key, held)
        if now_side.present and (origin == "directory" or as_cloud):
            continue  # held already, whatever its origin
        if not now_side.present and not as_cloud and origin != "directory":
            continue  # not held: nothing to remove
        theirs = directory.get(key)
        if theirs is not None and theirs.present != now_side.present:
            side = winner(theirs, now_side)
            journal.append(
                note(
                    CONFLICT,
                    f"{key} of {change.company_id}: the directory "
                    f"{'granted' if theirs.present else 'removed'} it at {theirs.at.isoformat()}, "
                    f"the cloud {'granted' if now_side.present else 'removed'} it at "
                    f"{now_side.at.isoformat()}; the {side} wins (the later change, ties to the directory)",
                    "warning",
                    f"{change.company_id}|{key}",
                )
            )
            if side == "directory":
                if now_side.present and theirs.version:  # the cloud still holds what the directory removed
                    revoke_in_cloud.append((key, theirs))
                continue
        any_origin = not now_side.present and origin == "directory"
        if any_origin:  # the cloud revoked an entry the directory granted: the later change wins
            journal.append(
                note(
                    CLOUD_REMOVED_DIRECTORY_ENTRY,
                    f"{key} of {change.company_id} was granted on premise and revoked in the cloud at "
                    f"{now_side.at.isoformat()}: removed on premise too",
                    "info",
                    f"{change.company_id}|{key}",
                )
            )
        ops.append(_operation(change, key, grant=now_side.present, now=now, any_origin=any_origin))
        pending[key] = now_side.present
        if now_side.present:
            seen[key] = now_side.at
    outcome = "planned" if ops or revoke_in_cloud else "no_change"
    return Writeback(outcome, state, tuple(ops), tuple(journal), tuple(revoke_in_cloud))


def directory_changed(
    previous: PairState,
    before: Mapping[str, str],
    after: Mapping[str, str],
    committed_at: datetime,
    version: int = 0,
    times: Mapping[str, datetime] | None = None,
) -> PairState:
    """The pair's state after a directory event of the user changed which entries the store
    holds (``before`` → ``after``, entry → origin): the directory's side of the conflict rule,
    each entry at its own change time in the store (``times``, entry → time: the event's
    ``access_changed_at`` for this company), an entry without one at the event's
    ``committed_at`` (an event of a store or producer that kept no such times). A change that
    makes the store agree with the cloud's known state is no change of the directory's (the
    writeback's own write, or the directory catching up). Any
    change of an entry ends the writeback's operation on it that was on its way (``pending``):
    the store's view is the truth again."""
    at = times or {}
    # a written-back grant the store held and the directory removed before capture read it (one
    # event shows neither): the entry's removal is later than the cloud change it came from
    folded = {
        k
        for k, granted in previous.pending.items()
        if granted
        and k not in before
        and k not in after
        and k in at
        and k in previous.seen
        and at[k] > previous.seen[k]
    }
    flipped = (before.keys() ^ after.keys()) | folded
    if not flipped:
        return previous
    changed = {
        k: Change(k in after, at.get(k, committed_at), version=version)
        for k in flipped
        # what agrees with the cloud is the writeback's own write, or the directory catching up
        if (k in after) != (previous.cloud[k].present if k in previous.cloud else False)
    }
    pending = {k: v for k, v in previous.pending.items() if k not in flipped}
    return PairState(previous.seq, previous.cloud, {**previous.directory, **changed}, pending, previous.seen)


def _operation(
    change: CloudAccessChanged, key: str, *, grant: bool, now: datetime, any_origin: bool = False
) -> DirectoryOperation:
    application, kind, name = key.split("/", 2)
    cls: type[GrantDirectoryAccess] | type[RevokeDirectoryAccess] = (
        GrantDirectoryAccess if grant else RevokeDirectoryAccess
    )
    op_kind = cls.model_fields["kind"].default
    fields: dict[str, Any] = {
        "operation_id": directory_operation_id(
            op_kind, change.user_id, change.company_id, key, change.feed_seq
        ),
        "user_id": change.user_id,
        "company_id": change.company_id,
        "application": ApplicationType(application),
        "entry_kind": kind,
        "name": name,
        "feed_seq": change.feed_seq,
        "cloud_changed_at": change.changed_at,
        "planned_at": now,
    }
    if any_origin:
        fields["any_origin"] = True
    return cls.model_validate(fields)
