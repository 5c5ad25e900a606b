"""Held deletions: one number per thing, with its unit, the same in `status`, `deletes list` and
the planner's gauges. A drill saw three numbers for one state: status "1023 operation(s) held"
(the gate's count of *deletions*, called operations), `deletes list` 3,201 (the deactivations
and revokes those deletions consist of) and the parked gauge 3,201 again (held counted as
parked)."""

from __future__ import annotations

from datetime import UTC, datetime

from vudsync.ops.groups import GroupMember
from vudsync.ops.journal_index import JournalStats
from vudsync.ops.metrics_scrape import Endpoint, Scrape
from vudsync.ops.status import assemble, render

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC).timestamp()
MEMBERS = {"planner": ("g-planner", [GroupMember("vudsync-planner-worker-1", "/10.0.0.1", "m")])}


def _planner(name: str, **gauges: float) -> Scrape:
    return Scrape(Endpoint(name, "http://h/metrics"), {f"vudsync_{k}": [({}, v)] for k, v in gauges.items()})


def test_status_names_deletions_and_their_operations_apart_and_parked_without_them() -> None:
    # two workers: the gate (partition 0) is on worker 1; held operations on both
    scrapes = [
        _planner("planner-1", held_deletions=2, held_operations=3, parked_operations=1, blocked_operations=0),
        _planner("planner-2", held_deletions=0, held_operations=2, parked_operations=0, blocked_operations=4),
    ]
    journal = JournalStats(entries=0, last_applied=None, last_minute={}, parked_open=9, held_open=9)
    report = assemble(now=NOW, members=MEMBERS, lag=[], scrapes=scrapes, dlq={}, journal=journal)
    data = report.as_dict()
    assert (data["held_deletions"], data["held_operations"]) == (2, 5)
    assert (data["parked_operations"], data["blocked_operations"]) == (1, 4)
    assert (
        "2 deletion(s) held by the accidental-delete protection (5 operation(s): deactivations, revokes): "
        "an operator decides — `vudsync deletes list`"
    ) in data["problems"]
    screen = "\n".join(render(report))
    assert "held deletions      2 (5 operation(s): deactivations, revokes)" in screen
    assert "parked operations   1 (from planner metrics)" in screen
    assert "blocked operations  4" in screen


def test_without_planner_metrics_status_counts_both_from_the_journal() -> None:
    journal = JournalStats(
        entries=10, last_applied=None, last_minute={}, parked_open=1, held_open=7, held_deletions_open=3
    )
    data = assemble(now=NOW, members=MEMBERS, lag=[], scrapes=[], dlq={}, journal=journal).as_dict()
    assert (data["held_deletions"], data["held_operations"], data["parked_source"]) == (3, 7, "journal")
    assert data["blocked_operations"] is None  # only the planner knows
    assert any(p.startswith("3 deletion(s) held") for p in data["problems"])


def test_no_held_deletion_is_no_problem() -> None:
    scrapes = [
        _planner("planner-1", held_deletions=0, held_operations=0, parked_operations=5, blocked_operations=0)
    ]
    journal = JournalStats(entries=0, last_applied=None, last_minute={}, parked_open=0, held_open=0)
    data = assemble(now=NOW, members=MEMBERS, lag=[], scrapes=scrapes, dlq={}, journal=journal).as_dict()
    assert not any("held" in p for p in data["problems"]) and data["parked_operations"] == 5
