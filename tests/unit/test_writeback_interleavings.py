"""The conflict rule end to end, for any interleaving: one entry changed on both sides before
either saw the other's change, then every propagation step — capture, the cloud's feed, the
planner, the cloud sink, the directory sink — in any order. Both sides end the same, and as the
rule says: the later change by source time wins, a tie goes to the directory.

Pure: the real reconciler over a dict; the store, the cloud (``scope=directory`` whole-set
writes, per-entry revokes that yield to a later change) and both sinks are small models here.
One change per side, and the directory's may be folded by capture with a later edit of the
same user into one event (committed at the edit's time): the entry is judged at its own change
time, which the store keeps per entry and the event carries (``access_changed_at``; docs/domain.md,
rule 6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.engine import Coords, Reconciler
from processors.model import PlannerSettings
from schemas.cloud_changes import CloudAccessChanged, CloudAccessEntry
from schemas.directory import ApplicationType, CompanyAccess, ServiceAccess
from schemas.directory_operations import GrantDirectoryAccess
from schemas.events import Source, access_entry_key
from schemas.operations import AssignAccess, RevokeAccess, RevokeAccessEntry
from schemas.results import FactKind, PlannerFact
from tests.factories import T0, connected_table, user_event, user_state
from tests.fakes import apply_writes

BUSINESS = ApplicationType.BUSINESS
X = "Lønn"


@dataclass
class World:
    """One entry of user u1 in company c1 on both sides, and everything on its way."""

    store: str | None = None  # origin of the row, None: not held
    store_seq: int = 0
    store_at: float = 0.0  # the store's last change of the user (the event's commit time)
    entry_at: float = 0.0  # the entry's own last change (access_entry_times), 0: never changed
    captured: int = 0
    cloud: tuple[str, float] | None = None  # (origin, modified_at)
    cloud_seq: int = 0
    cloud_at: float = 0.0
    fed: int = 0
    clock: float = 0.0
    cloud_ops: list[Any] = field(default_factory=list)
    dir_ops: list[Any] = field(default_factory=list)

    def tick(self) -> float:
        self.clock += 1.0
        return self.clock

    # -- the two sides ----------------------------------------------------------------

    def store_write(self, origin: str | None, at: float) -> None:
        if origin != self.store:
            self.store, self.store_seq, self.store_at, self.entry_at = origin, self.store_seq + 1, at, at

    def edit_user(self, at: float) -> None:
        """Another change of the user (its name), not of the entry."""
        self.store_seq, self.store_at = self.store_seq + 1, at

    def cloud_write(self, value: tuple[str, float] | None, at: float) -> None:
        if value != self.cloud:
            self.cloud, self.cloud_seq, self.cloud_at = value, self.cloud_seq + 1, at

    def apply_cloud_op(self, op: Any) -> None:
        now = self.tick()
        if isinstance(op, AssignAccess):  # the directory's set, scope=directory
            named = X in (op.services.get(BUSINESS) or ServiceAccess()).roles
            if named:
                keep = self.cloud is not None and self.cloud[0] == "directory"
                self.cloud_write(self.cloud if keep else ("directory", now), now)
            elif self.cloud is not None and self.cloud[0] == "directory":
                self.cloud_write(None, now)
        elif isinstance(op, RevokeAccess):
            if self.cloud is not None and self.cloud[0] == "directory":
                self.cloud_write(None, now)
        elif isinstance(op, RevokeAccessEntry):
            since = op.unless_changed_after
            later = (
                self.cloud is not None and since is not None and T0 + timedelta(seconds=self.cloud[1]) > since
            )
            if not later:
                self.cloud_write(None, now)

    def apply_dir_op(self, op: Any) -> None:
        now = self.tick()
        if isinstance(op, GrantDirectoryAccess):
            if self.store is None:
                self.store_write("cloud", now)
        elif self.store == "cloud" or (self.store is not None and op.any_origin):
            self.store_write(None, now)


class Pipeline:
    def __init__(self, world: World) -> None:
        self.w = world
        self.table: dict[str, Any] = connected_table()  # after `vudsync connect`
        self.r = Reconciler(self.table, PlannerSettings(deletes_settle_seconds=0), 1, lambda: T0)
        self.offset = 0
        for kind, subject, cloud_id, present in (
            (FactKind.COMPANY, "c1", "cc-1", True),
            (FactKind.USER, "u1", "cu-1", True),
            (FactKind.REGISTRY, "business", None, False),
            (FactKind.CATALOGUE, f"business:roles:{X}", None, True),
        ):
            fact = PlannerFact(
                kind=kind,
                subject=subject,
                cloud_id=cloud_id,
                present=present,
                observed_at=T0,
                source="connect",
            )
            self.perform(self.r.on_fact(fact, self.coords("facts")))
        world.store_seq, world.store_at = 1, world.tick()  # the user exists on premise
        self.capture()

    def coords(self, topic: str) -> Coords:
        self.offset += 1
        return Coords(topic, 0, self.offset)

    def perform(self, fx: Any) -> None:
        apply_writes(self.table, fx.writes)
        for s in fx.sends:
            if s.role == "operations":
                self.w.cloud_ops.append(s.value)
            elif s.role == "directory_operations":
                self.w.dir_ops.append(s.value)
            elif s.role == "control":
                self.perform(self.r.on_control(s.value, self.coords("control")))
            elif s.role == "facts":
                self.perform(self.r.on_fact(s.value, self.coords("facts")))
        tick = self.r.gate_tick()
        if tick is not None:
            self.perform(self.r.on_control(tick, self.coords("control")))

    # -- propagation steps: each returns whether it did something -----------------------

    def capture(self) -> bool:
        w = self.w
        if w.captured == w.store_seq:
            return False
        w.captured = w.store_seq
        part = {BUSINESS: ServiceAccess(roles=(X,))}
        access = ()
        if w.store is not None:
            fields = {"services": part} if w.store == "directory" else {"cloud_origin": part}
            access = (CompanyAccess(company_id="c1", **fields),)
        ev = user_event(w.store_seq, state=user_state(access=access))
        times = {access_entry_key("c1", BUSINESS.value, "role", X): T0 + timedelta(seconds=w.entry_at)}
        ev = ev.model_copy(
            update={
                "source": Source(
                    store="sqlite", db="t", seq=w.store_seq, committed_at=T0 + timedelta(seconds=w.store_at)
                ),
                "access_changed_at": times if w.entry_at else {},
            }
        )
        self.perform(self.r.on_directory_event(ev, self.coords("users"), None))
        return True

    def feed(self) -> bool:
        w = self.w
        if w.fed == w.cloud_seq:
            return False
        w.fed = w.cloud_seq
        entries = ()
        if w.cloud is not None:
            origin, modified = w.cloud
            entries = (
                CloudAccessEntry(
                    application=BUSINESS,
                    kind="role",
                    name=X,
                    origin=origin,  # type: ignore[arg-type]
                    modified_at=T0 + timedelta(seconds=modified),
                ),
            )
        change = CloudAccessChanged(
            event_id=CloudAccessChanged.make_event_id(w.cloud_seq, "u1", "c1"),
            feed_seq=w.cloud_seq,
            user_id="u1",
            company_id="c1",
            cloud_user_id="cu-1",
            cloud_company_id="cc-1",
            entries=entries,
            changed_at=T0 + timedelta(seconds=w.cloud_at),
        )
        self.perform(self.r.on_cloud_change(change, self.coords("cloud")))
        return True

    def cloud_sink(self) -> bool:
        if not self.w.cloud_ops:
            return False
        self.w.apply_cloud_op(self.w.cloud_ops.pop(0))
        return True

    def dir_sink(self) -> bool:
        if not self.w.dir_ops:
            return False
        self.w.apply_dir_op(self.w.dir_ops.pop(0))
        return True

    def steps(self) -> list[Any]:
        return [self.capture, self.feed, self.cloud_sink, self.dir_sink]

    def settle(self, choices: list[int] = ()) -> None:  # type: ignore[assignment]
        """The chosen steps (an index among those that can do something), then all until quiet."""
        for choice in choices:
            ready = [s for s in self.steps() if self._ready(s)]
            if not ready:
                break
            ready[choice % len(ready)]()
        for _ in range(200):
            if not any(step() for step in self.steps()):
                return
        raise AssertionError("no quiescence: the two sides keep writing to each other")

    def _ready(self, step: Any) -> bool:
        w = self.w
        return {
            self.capture: w.captured != w.store_seq,
            self.feed: w.fed != w.cloud_seq,
            self.cloud_sink: bool(w.cloud_ops),
            self.dir_sink: bool(w.dir_ops),
        }[step]


@settings(max_examples=800, deadline=None)
@given(
    initial=st.sampled_from(["absent", "cloud", "directory"]),
    directory_change=st.booleans(),
    cloud_change=st.sampled_from(["none", "toggle", "touch"]),
    directory_at=st.integers(0, 4),
    cloud_at=st.integers(0, 4),
    folded_edit=st.none() | st.integers(1, 5),
    choices=st.lists(st.integers(0, 3), max_size=30),
)
def test_any_interleaving_ends_the_same_on_both_sides_and_as_the_rule_says(
    initial: str,
    directory_change: bool,
    cloud_change: str,
    directory_at: int,
    cloud_at: int,
    folded_edit: int | None,
    choices: list[int],
) -> None:
    """``folded_edit``: the user is edited on premise that many seconds after the directory's
    change of the entry, before capture reads it: one event, at the edit's time."""
    w = World()
    p = Pipeline(w)
    # the starting point, synced: held by both sides as the directory's or the cloud's, or by neither
    if initial == "directory":
        w.store_write("directory", w.tick())
    elif initial == "cloud":
        w.cloud_write(("cloud", w.tick()), w.clock)
    p.settle()
    present = w.store is not None
    assert (w.cloud is not None) == present
    base = w.clock + 10  # both changes happen after that, before either side sees the other's

    changes: list[tuple[float, int, bool]] = []  # (source time, 0 directory / 1 cloud, present after)
    if directory_change:
        at = base + directory_at
        w.store_write(None if present else "directory", at)
        changes.append((at, 0, not present))
        if folded_edit is not None:
            w.edit_user(at + folded_edit)  # folded with the entry's change: the event is at the edit's time
    if cloud_change == "toggle" or (cloud_change == "touch" and present):
        at = base + cloud_at
        target = not present if cloud_change == "toggle" else True  # touch: revoked and granted again
        w.cloud_write(("cloud", at) if target else None, at)
        changes.append((at, 1, target))
    w.clock = base + 10
    p.settle(choices)

    # the rule: the later change wins, a tie goes to the directory (sorted: time, then side 0 first)
    expected = present if not changes else sorted(changes, key=lambda c: (c[0], -c[1]))[-1][2]
    case = (
        initial,
        directory_change,
        cloud_change,
        directory_at,
        cloud_at,
        folded_edit,
        choices,
        changes,
        w.store,
        w.cloud,
    )
    assert (w.store is not None) == (w.cloud is not None), case
    assert (w.store is not None) == expected, case
