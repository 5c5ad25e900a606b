"""Pure logic of the operations tools: time arguments, groups, replay targets and summary,
dead-letter marks and retry targets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from kernel.errors import ConfigurationError, PermanentError
from kernel.settings import Settings
from schemas.deadletter import error_headers
from schemas.results import OperationResult, ResultOutcome
from tests.factories import op_result
from vudsync.ops.deadletters import (
    DeadLetter,
    DeadLetterRef,
    HandledMarks,
    dead_letter_from_record,
    retry_target,
)
from vudsync.ops.groups import (
    GroupHasLiveMembers,
    Role,
    members_from_description,
    resolve_topics,
    roles_for,
    topic_aliases,
    topics_for_role,
)
from vudsync.ops.replay import parse_offsets, plan_partitions, progress, summarize
from vudsync.ops.timespec import format_age, parse_duration, parse_since

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def settings() -> Settings:
    return Settings(home="/tmp/vudsync-unit", topic_prefix="p-")


# -- time -----------------------------------------------------------------------------------


def test_durations_and_points_in_time() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2") == timedelta(seconds=2)
    assert parse_since("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_since("2026-11-27T10:00:00Z", NOW) == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert parse_since("2026-11-27T11:00+01:00", NOW) == datetime(2026, 11, 27, 10, tzinfo=UTC)
    with pytest.raises(ConfigurationError):
        parse_since("yesterday-ish", NOW)
    with pytest.raises(ConfigurationError, match="future"):
        parse_since("2027-01-01T00:00Z", NOW)
    assert format_age(42) == "42s" and format_age(185) == "3m 05s" and format_age(7800) == "2h 10m"


# -- groups ---------------------------------------------------------------------------------


def test_topics_by_short_catalogue_or_full_name() -> None:
    s = settings()
    assert resolve_topics(["users", "vud.cloud.operations", "p-vud.directory.companies", "users"], s) == [
        "p-vud.directory.users",
        "p-vud.cloud.operations",
        "p-vud.directory.companies",
    ]
    with pytest.raises(ConfigurationError, match="unknown topic"):
        resolve_topics(["nope"], s)
    # a role rewinds only the chosen topics it reads
    chosen = resolve_topics(["users", "operations"], s)
    assert topics_for_role(Role.PLANNER, chosen, s) == ["p-vud.directory.users"]
    assert topics_for_role(Role.SINK, chosen, s) == ["p-vud.cloud.operations"]
    assert len(topics_for_role(Role.PLANNER, [], s)) == 6


def test_the_directory_sink_group_is_offered_with_its_topic_under_a_name_of_its_own() -> None:
    s = settings()
    assert roles_for("directory-sink") == (Role.DIRECTORY_SINK,)
    assert roles_for("both") == (Role.PLANNER, Role.SINK)  # the cloud-bound path, as before
    # "operations" stays the cloud's; the writeback's topic is "directory-operations"
    assert resolve_topics(["operations", "directory-operations"], s) == [
        "p-vud.cloud.operations",
        "p-vud.directory.operations",
    ]
    assert topics_for_role(Role.DIRECTORY_SINK, [], s) == ["p-vud.directory.operations"]
    chosen = resolve_topics(["users", "vud.directory.operations"], s)
    assert topics_for_role(Role.DIRECTORY_SINK, chosen, s) == ["p-vud.directory.operations"]
    # the planner writes that topic and does not read it: rewinding the planner leaves it alone
    assert topics_for_role(Role.PLANNER, chosen, s) == ["p-vud.directory.users"]
    assert parse_offsets("directory-operations:1=4", topic_aliases(s)) == {
        ("p-vud.directory.operations", 1): 4
    }


def test_refusal_names_every_live_member() -> None:
    members = members_from_description(
        {"members": [{"client_id": "vudsync-sink-worker-1", "client_host": "/10.0.0.7", "member_id": "m1"}]}
    )
    err = GroupHasLiveMembers(Role.SINK, "vudsync-sink", members)
    assert "vudsync-sink-worker-1 on 10.0.0.7" in str(err)
    assert err.hint and "stop every sink worker" in err.hint


# -- replay ---------------------------------------------------------------------------------


def test_replay_never_moves_a_group_forward() -> None:
    tp0, tp1, tp2 = ("ops", 0), ("ops", 1), ("ops", 2)
    parts = plan_partitions(
        Role.SINK,
        "g",
        committed={tp0: 100, tp1: 10},  # tp2 never committed
        wanted={tp0: 60, tp1: 50, tp2: None},
        start={tp0: 0, tp1: 0, tp2: 5},
        end={tp0: 100, tp1: 80, tp2: 30},
    )
    by = {(p.topic, p.partition): p for p in parts}
    assert by[tp0].target == 60 and by[tp0].messages == 40  # rewound
    assert by[tp1].target == 10 and not by[tp1].moves  # behind the point in time: stays
    assert by[tp2].target == 5  # nothing since the time, never committed: from the log start
    done, total = progress(parts, {tp0: 80, tp1: 10, tp2: 5})
    assert (done, total) == (20, 40 + 70 + 25)


def test_from_offsets_spec() -> None:
    aliases = {"operations": "p-vud.cloud.operations", "users": "p-vud.directory.users"}
    assert parse_offsets("operations:0=12, users:2=7", aliases) == {
        ("p-vud.cloud.operations", 0): 12,
        ("p-vud.directory.users", 2): 7,
    }
    for bad in ("operations=1", "nope:0=1", "operations:x=1", ""):
        with pytest.raises(ConfigurationError):
            parse_offsets(bad, aliases)


def _result(op: str, outcome: ResultOutcome) -> OperationResult:
    return op_result(outcome, operation_id=op)


def test_summary_counts_each_replayed_operation_once_by_its_best_outcome() -> None:
    results = [
        _result("a", ResultOutcome.ALREADY_APPLIED),
        _result("b", ResultOutcome.APPLIED),
        _result("b", ResultOutcome.ALREADY_APPLIED),  # its re-driven copy
        _result("c", ResultOutcome.DEAD_LETTERED),
        _result("d", ResultOutcome.PARKED),
        _result("live", ResultOutcome.APPLIED),  # live traffic: not the replay's
    ]
    s = summarize(results, reread=9, operation_ids={"a", "b", "c"}, replanned_ids={"d"})
    assert (s.reread, s.replanned, s.operations) == (9, 1, 4)
    assert (s.already_applied, s.newly_applied, s.dead_lettered, s.waiting) == (1, 1, 1, 1)


# -- dead letters ---------------------------------------------------------------------------


def test_handled_marks_keep_a_prefix_and_sparse_offsets() -> None:
    marks = HandledMarks().mark([3, 4, 7])
    assert marks.offset == 0 and marks.metadata() == "3-4,7"
    assert marks.unhandled(0, 10) == 7
    marks = marks.mark([0, 1, 2])
    assert marks.offset == 5 and marks.metadata() == "7"
    assert marks.is_handled(4) and marks.is_handled(7) and not marks.is_handled(5)
    restored = HandledMarks.from_commit(marks.offset, marks.metadata())
    assert restored == marks
    assert HandledMarks.from_commit(3, "garbage").offset == 3
    assert marks.mark_below(8) == HandledMarks(8, frozenset())
    with pytest.raises(PermanentError, match="out of order"):
        HandledMarks().mark(range(1, 100_000, 2)).metadata()


def test_refs() -> None:
    assert DeadLetterRef.parse("ops:1:22") == DeadLetterRef("operations", 1, 22)
    assert str(DeadLetterRef("directory", 0, 5)) == "directory:0:5"
    with pytest.raises(ConfigurationError):
        DeadLetterRef.parse("operations:1")


def _dead_letter(queue: str, value: bytes = b"{}", **headers: Any) -> DeadLetter:
    """A record of ``queue``'s dead-letter topic (prefix ``p-``) at offset 4 of partition 0,
    with the error headers ``headers``, as ``dlq`` reads it (not handled)."""
    dlq = {"operations": "p-vud.cloud.operations.dlq", "directory": "p-vud.directory.dlq"}[queue]
    record = SimpleNamespace(
        topic=dlq,
        partition=0,
        offset=4,
        key=b"u1",
        value=value,
        headers=error_headers(**headers),
        timestamp=1_700_000_000_000,
    )
    return dead_letter_from_record(queue, record, handled=False)


def test_retry_goes_back_through_the_normal_path() -> None:
    s = settings()
    allowed = ["p-vud.directory.users", "p-vud.cloud.operations"]
    op = _dead_letter("operations", reason="boom", stage="apply", topic="x", partition=0, offset=1)
    assert retry_target(op, s, allowed).topic == "p-vud.cloud.operations"
    planner = _dead_letter(
        "directory", reason="bug", stage="plan", topic="p-vud.directory.users", partition=2, offset=9
    )
    assert planner.original == ("p-vud.directory.users", 2, 9)
    assert retry_target(planner, s, allowed).topic == "p-vud.directory.users"
    foreign = _dead_letter("directory", reason="bug", stage="plan", topic="other", partition=0, offset=1)
    assert retry_target(foreign, s, allowed).topic is None
    capture = _dead_letter(
        "directory",
        b'{"entity": "user", "entity_id": "u9", "version": 12}',
        reason="malformed e-mail",
        stage="capture",
    )
    target = retry_target(capture, s, allowed)
    assert target.topic is None and "fix the row" in (target.why_not or "")
    assert capture.subject() == "user:u9 v12"
