"""The event journal: one entry per fact about an operation or a dead letter. Pure.

Sources (``vud.cloud.results`` and both dead-letter topics) map to :class:`JournalEntry`:

- every result: applied, already applied, failed, dead-lettered (published by the sink), parked,
  held, blocked, review (published by the planner), cloud-capture's full reads
  (``journal.writeback_full_read``);
- every record of ``vud.directory.dlq`` (the planner and capture publish no result for those);
- records of ``vud.cloud.operations.dlq`` only when they do not decode as an operation: for the
  others the sink published a ``dead_lettered`` result already, and one fact is one entry.

A record that cannot be read becomes an entry with outcome ``unreadable`` — nothing is left
out silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from schemas.codec import DecodeError, decode_model, decode_operation
from schemas.deadletter import (
    HEADER_ATTEMPTS,
    HEADER_EXCEPTION,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_SOURCE_ROW,
    HEADER_STAGE,
    HEADER_TOPIC,
    headers_dict,
)
from schemas.results import OperationResult
from vudsync.ops.timespec import format_age

SOURCE_RESULTS = "results"
SOURCE_DIRECTORY_DLQ = "directory.dlq"
SOURCE_OPERATIONS_DLQ = "operations.dlq"

OUTCOME_UNREADABLE = "unreadable"
OUTCOMES = (
    "applied",
    "already_applied",
    "failed",
    "dead_lettered",
    "conflict",
    "unresolved",
    "parked",
    "held",
    "blocked",
    "review",
    "rejected",
    "superseded",
    OUTCOME_UNREADABLE,
)


@dataclass(frozen=True)
class JournalEntry:
    """One journal line. ``time`` is Unix seconds (when the outcome was recorded)."""

    topic: str
    partition: int
    offset: int
    time: float
    source: str
    outcome: str
    entity: str | None = None
    entity_id: str | None = None
    operation_id: str | None = None
    kind: str | None = None
    source_version: int | None = None
    reason: str | None = None
    cloud_id: str | None = None
    effect: str | None = None
    attempts: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["details"] = dict(self.details)
        out["recorded_at"] = datetime.fromtimestamp(self.time).astimezone().isoformat(timespec="seconds")
        return out


@dataclass(frozen=True)
class WaitingOperation:
    """An operation that waits (parked or held, nothing settled it since): its newest waiting
    entry and ``since``, the time of its first one (Unix seconds)."""

    since: float
    entry: JournalEntry

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """The needs it waits for (``company:c1`` …), as the planner last reported them."""
        needs = self.entry.details.get("waiting_for")
        if isinstance(needs, list) and needs:
            return tuple(str(n) for n in needs)
        if self.entry.outcome == "held":
            return ("an operator's decision (accidental-delete protection)",)
        return (self.entry.reason,) if self.entry.reason else ()

    def age(self, now: float) -> float:
        return max(now - self.since, 0.0)

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "operation_id": self.entry.operation_id,
            "outcome": self.entry.outcome,
            "kind": self.entry.kind,
            "entity": self.entry.entity,
            "entity_id": self.entry.entity_id,
            "source_version": self.entry.source_version,
            "waiting_for": list(self.waiting_for),
            "since": datetime.fromtimestamp(self.since).astimezone().isoformat(timespec="seconds"),
            "age_seconds": round(self.age(now), 1),
        }


def waiting_lines(waiting: Sequence[WaitingOperation], total: int, now: float) -> list[str]:
    """``vudsync parked list`` as lines: oldest first, with age and what each waits for."""
    lines = [f"{'age':>8}  {'outcome':<7} {'kind':<16} {'entity':<30} waits for"]
    for w in waiting:
        e = w.entry
        subject = f"{e.entity}:{e.entity_id}" + (
            f" v{e.source_version}" if e.source_version is not None else ""
        )
        needs = ", ".join(w.waiting_for)
        lines.append(f"{format_age(w.age(now)):>8}  {e.outcome:<7} {e.kind or '':<16} {subject:<30} {needs}")
    more = f" (the oldest {len(waiting)} shown)" if total > len(waiting) else ""
    lines.append(f"{total} operation(s) waiting{more}")
    return lines


def entry_from_result(
    topic: str, partition: int, offset: int, value: bytes | None, timestamp_ms: int
) -> JournalEntry:
    """A ``vud.cloud.results`` record → its entry (``unreadable`` if it does not decode)."""
    try:
        result = decode_model(OperationResult, value)
    except DecodeError as exc:
        return JournalEntry(
            topic,
            partition,
            offset,
            timestamp_ms / 1000,
            SOURCE_RESULTS,
            OUTCOME_UNREADABLE,
            reason=exc.reason,
        )
    reason = result.error
    if reason is None and result.details.get("message"):
        reason = str(result.details["message"])
    return JournalEntry(
        topic=topic,
        partition=partition,
        offset=offset,
        time=result.recorded_at.timestamp(),
        source=SOURCE_RESULTS,
        outcome=result.outcome.value,
        entity=result.entity.value,
        entity_id=result.entity_id,
        operation_id=result.operation_id,
        kind=result.kind,
        source_version=result.source_version,
        reason=reason,
        cloud_id=result.cloud_id,
        effect=result.effect,
        attempts=result.attempts,
        details=result.details,
    )


def _dead_letter_details(headers: Mapping[str, str]) -> dict[str, Any]:
    details: dict[str, Any] = {"stage": headers.get(HEADER_STAGE, "")}
    if headers.get(HEADER_TOPIC):
        details["original"] = (
            f"{headers[HEADER_TOPIC]}[{headers.get(HEADER_PARTITION, '?')}]@{headers.get(HEADER_OFFSET, '?')}"
        )
    if headers.get(HEADER_EXCEPTION):
        details["exception"] = headers[HEADER_EXCEPTION]
    if headers.get(HEADER_SOURCE_ROW):
        details["source_row"] = headers[HEADER_SOURCE_ROW]
    return details


def _json(value: bytes | None) -> Mapping[str, Any]:
    try:
        parsed = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def entry_from_dead_letter(
    source: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    timestamp_ms: int,
) -> JournalEntry | None:
    """A dead-letter record → its entry; None for an operation the sink reported as a result."""
    h = headers_dict(headers)
    if source == SOURCE_OPERATIONS_DLQ:
        try:
            decode_operation(value)
            return None  # the sink published a dead_lettered result for it
        except (DecodeError, ValidationError):
            pass
    body = _json(value)
    entity = body.get("entity")
    entity_id = body.get("entity_id") or (key.decode(errors="replace") if key else None)
    version = body.get("version")
    details = _dead_letter_details(h)
    attempts = h.get(HEADER_ATTEMPTS)
    return JournalEntry(
        topic=topic,
        partition=partition,
        offset=offset,
        time=timestamp_ms / 1000,
        source=source,
        outcome="dead_lettered",
        entity=str(entity) if entity else None,
        entity_id=str(entity_id) if entity_id else None,
        operation_id=body.get("operation_id") if isinstance(body.get("operation_id"), str) else None,
        kind=f"dlq.{details['stage'] or 'unknown'}",
        source_version=version if isinstance(version, int) else None,
        reason=h.get(HEADER_REASON) or "(no reason header)",
        attempts=int(attempts) if attempts and attempts.isdigit() else None,
        details=details,
    )


@dataclass(frozen=True)
class JournalFilter:
    """What ``vudsync journal`` asks for. Empty fields do not filter."""

    entity_id: str | None = None
    outcomes: tuple[str, ...] = ()
    since: float | None = None  # Unix seconds, inclusive
    until: float | None = None  # Unix seconds, exclusive
    operation_id: str | None = None
    kind: str | None = None
    after_id: int | None = None  # for --follow: only entries indexed after this row
    limit: int = 50
    newest_first: bool = True

    def where(self) -> tuple[str, list[Any]]:
        """SQL ``WHERE`` clause and its parameters (columns of the journal index)."""
        clauses: list[str] = []
        params: list[Any] = []
        # With an entity or an operation, its index is by far the most selective: the unary
        # ``+`` keeps SQLite from walking the outcome or time index instead.
        narrow = "+" if (self.entity_id or self.operation_id) else ""
        if self.entity_id:
            clauses.append("entity_id = ?")
            params.append(self.entity_id)
        if self.outcomes:
            clauses.append(f"{narrow}outcome IN ({', '.join('?' * len(self.outcomes))})")
            params.extend(self.outcomes)
        if self.since is not None:
            clauses.append(f"{narrow}time >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append(f"{narrow}time < ?")
            params.append(self.until)
        if self.operation_id:
            clauses.append("operation_id = ?")
            params.append(self.operation_id)
        if self.kind:
            clauses.append("kind = ?")
            params.append(self.kind)
        if self.after_id is not None:
            clauses.append("id > ?")
            params.append(self.after_id)
        return (" AND ".join(clauses) or "1 = 1"), params
