"""Dead letters as an operator sees them, and what "handled" means for them. Pure.

Kafka cannot delete one record from the middle of a partition, so "handled" is kept beside
the dead-letter topics, in the committed offsets of a consumer group of their own
(``<prefix>vudsync-dlq-handled``) that no consumer ever joins:

- the committed **offset** of a partition: every dead letter below it is handled;
- its commit **metadata**: the handled offsets above it (retried or purged one by one), as
  compact ranges ``"12-15,20"``.

:class:`HandledMarks` keeps that pair normalised (a handled run at the front moves the
offset). ``dlq list`` shows only unhandled dead letters; ``dlq purge`` marks them handled
and then deletes the records below the offset from the topic for good
(``DeleteRecords``), since only a prefix of a partition can be deleted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kernel.errors import ConfigurationError, PermanentError
from kernel.settings import Settings
from schemas.deadletter import (
    HEADER_ATTEMPTS,
    HEADER_EXCEPTION,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_STAGE,
    HEADER_TOPIC,
)
from schemas.topics import DIRECTORY_DLQ, OPERATIONS, OPERATIONS_DLQ

HEADER_RETRY_OF = "vudsync.retry.of"
# a broker keeps at most offset.metadata.max.bytes (default 4096) of commit metadata
MAX_METADATA = 4000

QUEUES = {"directory": DIRECTORY_DLQ, "operations": OPERATIONS_DLQ}


def handled_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}vudsync-dlq-handled"


def queue_topic(queue: str, settings: Settings) -> str:
    return settings.topic(QUEUES[queue].name)


def queues_for(choice: str) -> tuple[str, ...]:
    """``directory`` | ``operations`` | ``both``."""
    return tuple(QUEUES) if choice == "both" else (choice,)


@dataclass(frozen=True, order=True)
class DeadLetterRef:
    """``operations:0:12`` — queue, partition, offset."""

    queue: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.queue}:{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> DeadLetterRef:
        parts = text.strip().split(":")
        aliases = {
            "dir": "directory",
            "directory": "directory",
            "ops": "operations",
            "operations": "operations",
        }
        if len(parts) != 3 or parts[0] not in aliases or not parts[1].isdigit() or not parts[2].isdigit():
            raise ConfigurationError(
                f"not a dead-letter reference: {text!r}",
                hint="use <queue>:<partition>:<offset> as `vudsync dlq list` prints it, e.g. operations:0:12",
            )
        return cls(aliases[parts[0]], int(parts[1]), int(parts[2]))


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic with its error context."""

    ref: DeadLetterRef
    topic: str
    key: str | None
    value: bytes | None
    headers: Mapping[str, str]
    timestamp: datetime
    handled: bool = False

    @property
    def reason(self) -> str:
        return self.headers.get(HEADER_REASON, "(no reason header)")

    @property
    def stage(self) -> str:
        return self.headers.get(HEADER_STAGE, "")

    @property
    def original(self) -> tuple[str, int, int] | None:
        """Where the record was read from when it failed (None for capture rejections)."""
        topic = self.headers.get(HEADER_TOPIC)
        partition, offset = self.headers.get(HEADER_PARTITION, ""), self.headers.get(HEADER_OFFSET, "")
        if not topic or not partition.lstrip("-").isdigit() or not offset.isdigit():
            return None
        return topic, int(partition), int(offset)

    def body(self) -> dict[str, Any]:
        try:
            parsed = json.loads(self.value or b"")
        except (ValueError, UnicodeDecodeError):
            return {}
        return parsed if isinstance(parsed, dict) else {}

    def subject(self) -> str:
        """What failed, in a few words: ``user.upsert user:u1 v12`` or ``user:u7 v40``."""
        body = self.body()
        entity, entity_id = body.get("entity"), body.get("entity_id") or self.key
        what = f"{entity}:{entity_id}" if entity else str(entity_id or "?")
        kind = body.get("kind")
        version = body.get("source_version", body.get("version"))
        return " ".join(str(p) for p in (kind, what, f"v{version}" if version is not None else None) if p)

    def as_dict(self, *, with_value: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ref": str(self.ref),
            "topic": self.topic,
            "partition": self.ref.partition,
            "offset": self.ref.offset,
            "time": self.timestamp.isoformat(timespec="seconds"),
            "key": self.key,
            "subject": self.subject(),
            "stage": self.stage,
            "reason": self.reason,
            "exception": self.headers.get(HEADER_EXCEPTION),
            "attempts": self.headers.get(HEADER_ATTEMPTS),
            "original": "{}[{}]@{}".format(*self.original) if self.original else None,
            "handled": self.handled,
        }
        if with_value:
            out["headers"] = dict(self.headers)
            body = self.body()
            out["value"] = body if body else (self.value or b"").decode(errors="replace")
        return out


def dead_letter_from_record(queue: str, record: Any, handled: bool) -> DeadLetter:
    headers = {k: (v or b"").decode(errors="replace") for k, v in record.headers or ()}
    return DeadLetter(
        ref=DeadLetterRef(queue, record.partition, record.offset),
        topic=record.topic,
        key=record.key.decode(errors="replace") if record.key else None,
        value=record.value,
        headers=headers,
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        handled=handled,
    )


# -- handled marks --------------------------------------------------------------------------


def _encode_ranges(offsets: Iterable[int]) -> str:
    runs: list[list[int]] = []
    for o in sorted(set(offsets)):
        if runs and o == runs[-1][1] + 1:
            runs[-1][1] = o
        else:
            runs.append([o, o])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def _decode_ranges(text: str) -> set[int]:
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


@dataclass(frozen=True)
class HandledMarks:
    """Handled dead letters of one partition: all below ``offset``, plus ``extra`` above it."""

    offset: int = 0
    extra: frozenset[int] = field(default_factory=frozenset)

    def is_handled(self, offset: int) -> bool:
        return offset < self.offset or offset in self.extra

    def normalised(self) -> HandledMarks:
        offset, extra = self.offset, {o for o in self.extra if o >= self.offset}
        while offset in extra:
            extra.discard(offset)
            offset += 1
        return HandledMarks(offset, frozenset(extra))

    def mark(self, offsets: Iterable[int]) -> HandledMarks:
        return HandledMarks(self.offset, self.extra | frozenset(offsets)).normalised()

    def mark_below(self, offset: int) -> HandledMarks:
        """Everything below ``offset`` handled (purge all, or the log start moved past it)."""
        return HandledMarks(max(self.offset, offset), self.extra).normalised()

    def unhandled(self, start: int, end: int) -> int:
        """How many offsets in ``[start, end)`` are not handled (gaps count as records)."""
        first = max(start, self.offset)
        return max(end - first, 0) - sum(1 for o in self.extra if first <= o < end)

    def metadata(self) -> str:
        text = _encode_ranges(self.extra)
        if len(text) > MAX_METADATA:
            raise PermanentError(
                "too many dead letters handled out of order to record them",
                hint="retry or purge the oldest dead letters first (or all: --all), so the handled "
                "ones form a run from the start of the partition",
            )
        return text

    @classmethod
    def from_commit(cls, offset: int | None, metadata: str | None) -> HandledMarks:
        try:
            extra = _decode_ranges(metadata or "")
        except ValueError:
            extra = set()  # written by someone else: the offset alone still holds
        return cls(max(offset or 0, 0), frozenset(extra)).normalised()


# -- retry ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryTarget:
    """Where a dead letter goes back to, or why it cannot go back."""

    topic: str | None
    why_not: str | None = None


def retry_target(
    dead_letter: DeadLetter, settings: Settings, allowed: Callable[[str], bool] | Iterable[str]
) -> RetryTarget:
    """The normal path a dead letter re-enters (pure; ``allowed``: this installation's topics).

    - operations (sink): back onto ``vud.cloud.operations`` — the sink applies it with its
      ledger and the cloud's idempotency key (an operation that meanwhile got applied is
      "already applied", never applied twice);
    - directory (planner): the original record back onto its original topic, from the
      headers — the planner plans it like a redelivery;
    - capture rejections have no record to re-drive: the row itself is wrong. Fixing the row
      in the directory store is a change the producer captures by itself.
    """
    if dead_letter.stage == "capture":
        return RetryTarget(
            None,
            "a capture rejection: fix the row in the directory store (the fix is captured by itself), "
            "then purge this dead letter",
        )
    if dead_letter.stage == "decode":
        return RetryTarget(
            None, "the record does not decode: re-sending it would fail the same way; purge it"
        )
    if dead_letter.ref.queue == "operations":
        return RetryTarget(settings.topic(OPERATIONS.name))
    original = dead_letter.original
    if original is None:
        return RetryTarget(None, "no original topic in its headers")
    permitted = allowed(original[0]) if callable(allowed) else original[0] in set(allowed)
    if not permitted:
        return RetryTarget(None, f"its original topic {original[0]!r} is not one of this installation's")
    return RetryTarget(original[0])


def retry_headers(dead_letter: DeadLetter) -> list[tuple[str, bytes]]:
    """Headers of a re-driven record: where it came from (no error headers: it is a fresh try)."""
    return [
        (
            HEADER_RETRY_OF,
            f"{dead_letter.topic}:{dead_letter.ref.partition}:{dead_letter.ref.offset}".encode(),
        )
    ]
