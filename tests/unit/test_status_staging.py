"""`vudsync status` says whether the planners stage, and how much waits staged."""

from __future__ import annotations

from tests.unit.test_held_counts import MEMBERS, NOW, _planner
from vudsync.ops.journal_index import JournalStats
from vudsync.ops.status import assemble, render

JOURNAL = JournalStats(entries=0, last_applied=None, last_minute={}, parked_open=0, held_open=0)


def test_staging_mode_and_the_staged_count_are_shown_and_staged_work_is_a_problem() -> None:
    scrapes = [_planner("planner-1", planner_staging=1, parked_operations=0)]
    report = assemble(now=NOW, members=MEMBERS, lag=[], scrapes=scrapes, dlq={}, journal=JOURNAL, staged=2003)
    assert report.as_dict()["staging"] == {"mode": "on", "staged_operations": 2003}
    assert any(
        "2003 staged record(s) not applied" in p and "vudsync staging diff" in p for p in report.problems
    )
    assert "staging mode        on (2003 staged record(s))" in "\n".join(render(report))


def test_without_planner_metrics_the_mode_is_unknown_and_nothing_staged_is_no_problem() -> None:
    report = assemble(now=NOW, members=MEMBERS, lag=[], scrapes=[], dlq={}, journal=JOURNAL, staged=0)
    assert report.as_dict()["staging"] == {"mode": "unknown", "staged_operations": 0}
    assert not any("staged" in p for p in report.problems)
    off = [_planner("planner-1", planner_staging=0)]
    assert assemble(now=NOW, members=MEMBERS, lag=[], scrapes=off, dlq={}, journal=JOURNAL).staging == "off"
