"""``vudsync status`` in one picture: assembled from what the adapters read. Pure.

Where each line comes from:

- liveness: consumer-group membership (planner, sink, directory sink) and the ``/metrics``
  endpoints when configured (every component; the producer and cloud-capture only that way,
  cloud-capture with its feed lag);
- lag: committed vs end offsets per group/topic/partition;
- waiting operations, one number per state with its unit (the planner's gauges when scraped,
  else the journal: parked / held results with no applied, dead-lettered or rejected result
  since): *parked operations* (waiting for facts), *blocked operations* (waiting for their
  application; planner metrics only), *held deletions* (users and companies whose deletion the
  accidental-delete gate holds) and the *held operations* they consist of (deactivations,
  revokes); ``vudsync deletes list`` lists the same deletions (its count is the first
  number). A held operation is not also parked;
- DLQ depths: unhandled dead letters (see :mod:`vudsync.ops.deadletters`);
- circuit: the sinks' ``vudsync_cloud_circuit_open`` (unknown without their endpoints);
- staging: the planners' ``vudsync_planner_staging`` (unknown without their endpoints) and the
  records staged and not yet promoted or discarded (:mod:`vudsync.ops.staging`);
- ad-hoc snapshots: requests in the store's signal table not finished (``vudsync snapshot``);
- last applied change, its age and the throughput of the last minute: the journal
  (``vud.cloud.results``);
- what the planner has been told (``vud.planner.facts``, :mod:`vudsync.ops.planner_facts`):
  whether ``vudsync connect`` has succeeded (before, the planner sends nothing), the companies
  waiting for review, each application whose instance differs from the cloud's registration;
- open matching conflicts: the journal, settled by :func:`vudsync.ops.conflicts.open_conflicts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vudsync.ops.groups import GroupMember
from vudsync.ops.journal_index import JournalStats
from vudsync.ops.metrics_scrape import Scrape
from vudsync.ops.timespec import format_age

if TYPE_CHECKING:
    from vudsync.ops.planner_facts import PlannerFactsNow

STALL_AFTER = 300.0  # seconds without an applied change while operations wait: "stalled?"
FEED_STALL_AFTER = 300.0  # seconds cloud-capture made no progress (VudsyncWritebackFeedStalled)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: str  # up | down | unknown
    detail: str


@dataclass(frozen=True)
class LagRow:
    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


@dataclass(frozen=True)
class StatusReport:
    components: tuple[ComponentStatus, ...]
    lag: tuple[LagRow, ...]
    parked: int | None
    parked_source: str
    held: int  # deletions (users, companies)
    held_operations: int | None  # the operations of those deletions (None: not known)
    blocked: int | None  # operations waiting for their application (None: not known)
    dlq: Mapping[str, int]  # topic -> unhandled
    circuit: str  # open | closed | unknown
    last_applied: Mapping[str, Any] | None
    last_minute: Mapping[str, int]
    problems: tuple[str, ...] = field(default_factory=tuple)
    connected: bool | None = None  # `vudsync connect` succeeded (None: not known)
    reviews: int | None = None  # companies waiting for review
    blocked_applications: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # app -> fields
    conflicts: int | None = None  # open matching conflicts
    staging: str = "unknown"  # on | off | unknown (the planners' vudsync_planner_staging)
    staged: int | None = None  # staged, not yet promoted or discarded (None: no staged topic)
    snapshots: tuple[Mapping[str, Any], ...] = ()  # ad-hoc snapshot requests not finished

    def lag_by_group(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.lag:
            out[row.group] = out.get(row.group, 0) + row.lag
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "problems": list(self.problems),
            "components": [c.__dict__ for c in self.components],
            "lag": {"by_group": self.lag_by_group(), "partitions": [r.__dict__ for r in self.lag]},
            "parked_operations": self.parked,
            "parked_source": self.parked_source,
            "blocked_operations": self.blocked,
            "held_deletions": self.held,
            "held_operations": self.held_operations,
            "dlq": dict(self.dlq),
            "circuit": self.circuit,
            "staging": {"mode": self.staging, "staged_operations": self.staged},
            "last_applied": dict(self.last_applied) if self.last_applied else None,
            "snapshots": [dict(s) for s in self.snapshots],
            "last_minute": {
                "by_outcome": dict(self.last_minute),
                "applied_per_second": round(self.last_minute.get("applied", 0) / 60, 2),
            },
            "connected": self.connected,
            "companies_waiting_for_review": self.reviews,
            "blocked_applications": {app: list(f) for app, f in self.blocked_applications.items()},
            "open_conflicts": self.conflicts,
        }


def _group_component(
    role: str, group: str, members: Sequence[GroupMember], scrapes: Sequence[Scrape]
) -> ComponentStatus:
    mine = [s for s in scrapes if s.endpoint.component == role]
    bad = [s for s in mine if s.error]
    parts = [
        f"group {group}: {len(members)} member(s)"
        + (f" ({', '.join(m.describe() for m in members)})" if members else "")
    ]
    parts += [f"{s.endpoint.name} metrics: {s.error or 'ok'}" for s in mine]
    state = "up" if members and not bad else "down"
    return ComponentStatus(role, state, "; ".join(parts))


def _cloud_capture(scrapes: Sequence[Scrape]) -> ComponentStatus:
    """Cloud-capture has no consumer group: its metrics say whether it runs and how far the
    cloud's change feed is ahead of it (``vudsync_writeback_feed_lag_seconds``)."""
    if not scrapes:
        return ComponentStatus(
            "cloud-capture", "unknown", "no metrics endpoint configured (VUDSYNC_STATUS_METRICS)"
        )
    parts = []
    for s in scrapes:
        lag = None if s.error else s.total("vudsync_writeback_feed_lag_seconds")
        feed = "" if lag is None else f", feed lag {lag:.1f}s"
        parts.append(f"{s.endpoint.name} metrics: {s.error or 'ok'}{feed}")
    return ComponentStatus(
        "cloud-capture", "down" if any(s.error for s in scrapes) else "up", "; ".join(parts)
    )


def assemble(
    *,
    now: float,
    members: Mapping[str, tuple[str, Sequence[GroupMember]]],  # role -> (group, members)
    lag: Sequence[LagRow],
    scrapes: Sequence[Scrape],
    dlq: Mapping[str, int],
    journal: JournalStats,
    told: PlannerFactsNow | None = None,
    conflicts: int | None = None,
    staged: int | None = None,
    snapshots: Sequence[Mapping[str, Any]] = (),
) -> StatusReport:
    """The report and its problems (each one makes ``vudsync status`` exit 1). ``told``: what
    the planner's facts topic says (None: not read); ``conflicts``: open matching conflicts."""
    components: list[ComponentStatus] = []
    producer = [s for s in scrapes if s.endpoint.component == "producer"]
    if producer:
        bad = [s for s in producer if s.error]
        components.append(
            ComponentStatus(
                "producer",
                "down" if bad else "up",
                "; ".join(f"{s.endpoint.name} metrics: {s.error or 'ok'}" for s in producer),
            )
        )
    else:
        components.append(
            ComponentStatus("producer", "unknown", "no metrics endpoint configured (VUDSYNC_STATUS_METRICS)")
        )
    for role, (group, ms) in members.items():
        components.append(_group_component(role, group, ms, scrapes))
    writeback = [s for s in scrapes if s.endpoint.component == "cloud-capture"]
    components.append(_cloud_capture(writeback))

    planner = [s for s in scrapes if s.endpoint.component == "planner" and not s.error]

    def planner_total(name: str) -> int | None:
        """The sum over planner workers; None unless every worker answered with it."""
        values = [s.total(name) for s in planner]
        if not values or any(v is None for v in values):
            return None
        return int(sum(v for v in values if v is not None))

    held_deletions, held_operations = (
        planner_total("vudsync_held_deletions"),
        planner_total("vudsync_held_operations"),
    )
    parked = planner_total("vudsync_parked_operations")
    blocked = planner_total("vudsync_blocked_operations")
    if parked is not None:
        parked_source = "planner metrics"
    else:
        parked, parked_source = journal.parked_open, "journal"
    if held_deletions is None or held_operations is None:
        held_deletions, held_operations = journal.held_deletions_open, journal.held_open
    held = held_deletions

    circuits = [
        s.total("vudsync_cloud_circuit_open")
        for s in scrapes
        if s.endpoint.component == "sink" and not s.error
    ]
    known = [c for c in circuits if c is not None]
    circuit = ("open" if any(c >= 1 for c in known) else "closed") if known else "unknown"

    last = None
    if journal.last_applied is not None:
        e = journal.last_applied
        last = {
            "time": e.as_dict()["recorded_at"],
            "age_seconds": round(max(now - e.time, 0), 1),
            "age": format_age(now - e.time),
            "entity": f"{e.entity}:{e.entity_id}",
            "kind": e.kind,
            "operation_id": e.operation_id,
            "effect": e.effect,
        }

    staging_on = planner_total("vudsync_planner_staging")
    staging = "unknown" if staging_on is None else ("on" if staging_on else "off")

    problems: list[str] = []
    for c in components:
        if c.state == "down":
            problems.append(f"{c.name} is down: {c.detail}")
    for topic, n in dlq.items():
        if n:
            problems.append(f"{n} unhandled dead letter(s) in {topic}: `vudsync dlq list`")
    if circuit == "open":
        problems.append("the circuit to the cloud is open: the cloud fails or refuses our credentials")
    if held:
        problems.append(
            f"{held} deletion(s) held by the accidental-delete protection ({held_operations} "
            "operation(s): deactivations, revokes): an operator decides — `vudsync deletes list`"
        )
    for s in writeback:
        advanced = s.total("vudsync_writeback_feed_last_advance_timestamp_seconds")
        if not s.error and advanced is not None and now - advanced > FEED_STALL_AFTER:
            problems.append(
                f"cloud-capture: the cloud's change feed has not advanced for {format_age(now - advanced)}: "
                "administrators' changes do not reach the directory (its /readyz says why)"
            )
    if told is not None and told.disconnected:
        problems.append(
            "disconnected (`vudsync disconnect`): the planner sends nothing to the cloud, changes wait "
            "in it — re-connect with `vudsync connect`"
        )
    elif told is not None and not told.connected:
        problems.append(
            "`vudsync connect` has not succeeded for this installation: the planner sends nothing to "
            "the cloud before — run `vudsync connect` with a Customer administrator's credentials"
        )
    for app, differing in (told.mismatched if told is not None else {}).items():
        problems.append(
            f"application {app} is blocked: its instance differs from the cloud's registration in "
            f"{', '.join(differing)}; its assignments are held — after a license change on premise, "
            f"`vudsync instances register {app}` (docs/operations.md, license change)"
        )
    if told is not None and told.reviews:
        n = len(told.reviews)
        problems.append(
            f"{n} compan{'y' if n == 1 else 'ies'} linked to existing cloud companies wait for review "
            "(their assignments of access wait): `vudsync review list`"
        )
    if conflicts:
        problems.append(
            f"{conflicts} open matching conflict(s): a cloud user or company linked to someone else "
            "(its assignments wait) — `vudsync conflicts list`"
        )
    if staged:
        problems.append(
            f"{staged} staged record(s) not applied (planner staging mode: {staging}): "
            "`vudsync staging diff`, then promote or discard"
        )
    waiting = sum(r.lag for r in lag)
    if waiting and last is not None and float(last["age_seconds"]) > STALL_AFTER:
        problems.append(
            f"{waiting} message(s) wait while nothing was applied for {last['age']}: sync stalled?"
        )
    return StatusReport(
        tuple(components),
        tuple(lag),
        parked,
        parked_source,
        held,
        held_operations,
        blocked,
        dict(dlq),
        circuit,
        last,
        dict(journal.last_minute),
        tuple(problems),
        connected=told.connected if told is not None else None,
        reviews=len(told.reviews) if told is not None else None,
        blocked_applications=dict(told.mismatched) if told is not None else {},
        conflicts=conflicts,
        staging=staging,
        staged=staged,
        snapshots=tuple(snapshots),
    )


def render(report: StatusReport) -> list[str]:
    """The one screen, as lines of text."""
    lines = ["vudsync status: " + ("OK" if not report.problems else f"{len(report.problems)} problem(s)")]
    for p in report.problems:
        lines.append(f"  ! {p}")
    lines.append("")
    lines.append("components")
    for c in report.components:
        lines.append(f"  {c.name:<15} {c.state:<8} {c.detail}")
    lines.append("")
    lines.append("consumer lag")
    by_group = report.lag_by_group()
    for group in sorted(by_group):
        lines.append(f"  {group}: {by_group[group]} message(s)")
        for r in (r for r in report.lag if r.group == group and r.lag):
            committed = r.committed if r.committed is not None else "-"
            lines.append(f"    {r.topic}[{r.partition}] committed {committed} end {r.end} lag {r.lag}")
    lines.append("")
    parked = report.parked if report.parked is not None else "?"
    lines.append(f"parked operations   {parked} (from {report.parked_source})")
    if report.blocked is not None:
        lines.append(f"blocked operations  {report.blocked} (waiting for their application)")
    held_ops = "?" if report.held_operations is None else report.held_operations
    lines.append(f"held deletions      {report.held} ({held_ops} operation(s): deactivations, revokes)")
    for app, differing in report.blocked_applications.items():
        lines.append(f"blocked application {app} (its instance differs in: {', '.join(differing)})")
    if report.reviews is not None:
        lines.append(f"waiting for review  {report.reviews} compan{'y' if report.reviews == 1 else 'ies'}")
    if report.conflicts is not None:
        lines.append(f"open conflicts      {report.conflicts}")
    for topic, n in report.dlq.items():
        lines.append(f"dead letters        {n} unhandled in {topic}")
    lines.append(f"circuit to cloud    {report.circuit}")
    if report.connected is not None:
        lines.append(f"connected           {'yes' if report.connected else 'no: run `vudsync connect`'}")
    staged = "no staged topic" if report.staged is None else f"{report.staged} staged record(s)"
    lines.append(f"staging mode        {report.staging} ({staged})")
    for s in report.snapshots:
        total = "?" if s.get("total") is None else s["total"]
        lines.append(
            f"ad-hoc snapshot     #{s['id']} {s['status']}: {', '.join(s['entities'])}"
            + (f" where {s['where']}" if s.get("where") else "")
            + f", {s['emitted']} of {total} entities"
        )
    if report.last_applied:
        la = report.last_applied
        lines.append(f"last applied        {la['time']} ({la['age']} ago) {la['kind']} {la['entity']}")
    else:
        lines.append("last applied        never (no applied result in the journal)")
    minute = report.last_minute
    lines.append(
        "last minute         "
        + (", ".join(f"{k} {v}" for k, v in sorted(minute.items())) or "no results")
        + f"  ({minute.get('applied', 0) / 60:.2f} applied/s)"
    )
    return lines
