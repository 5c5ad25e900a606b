"""`vudsync status` after `vudsync disconnect`, and with an ad-hoc snapshot in progress. Pure."""

from __future__ import annotations

from datetime import timedelta

from schemas.results import FactKind, PlannerFact
from tests.factories import T0
from tests.unit.test_held_counts import MEMBERS, NOW
from vudsync.ops.journal_index import JournalStats
from vudsync.ops.planner_facts import fold
from vudsync.ops.status import assemble, render

JOURNAL = JournalStats(entries=0, last_applied=None, last_minute={}, parked_open=0, held_open=0)
RUNNING = {
    "id": 7,
    "status": "running",
    "entities": ["users"],
    "where": "company=c1",
    "emitted": 40,
    "total": 120,
}


def _connect(present: bool, seconds: int) -> PlannerFact:
    at = T0 + timedelta(seconds=seconds)
    source = "connect" if present else "operator"
    return PlannerFact(
        kind=FactKind.CONNECT, subject="installation", present=present, observed_at=at, source=source
    )


def test_disconnected_is_a_problem_of_its_own_that_says_how_to_reconnect() -> None:
    told = fold([(0, _connect(True, 1)), (1, _connect(False, 2))])
    assert told.disconnected and not told.connected
    report = assemble(now=NOW, members=MEMBERS, lag=[], scrapes=[], dlq={}, journal=JOURNAL, told=told)
    (problem,) = [p for p in report.problems if "connect" in p]
    assert "disconnected (`vudsync disconnect`)" in problem and "re-connect with `vudsync connect`" in problem
    again = fold([(0, _connect(True, 1)), (1, _connect(False, 2)), (2, _connect(True, 3))])
    assert again.connected and not again.disconnected
    never = fold([])
    assert not never.connected and not never.disconnected, "never connected is not 'disconnected'"


def test_a_running_snapshot_is_shown_and_no_problem() -> None:
    told = fold([(0, _connect(True, 1))])
    report = assemble(
        now=NOW, members=MEMBERS, lag=[], scrapes=[], dlq={}, journal=JOURNAL, told=told, snapshots=[RUNNING]
    )
    assert not report.problems
    assert "ad-hoc snapshot     #7 running: users where company=c1, 40 of 120 entities" in render(report)
    assert report.as_dict()["snapshots"] == [RUNNING]
